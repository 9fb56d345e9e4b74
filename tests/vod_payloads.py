"""VOD event bodies built with the official `tencentcloud-sdk-python-vod` models (v3), plus legacy v2
bodies with the field names of Tencent's legacy callback documentation."""

from __future__ import annotations

import json
import time
from typing import Any

from tencentcloud.vod.v20180717 import models

from chalicelib import callback_auth


def _event(event_type: str, **payload: Any) -> dict[str, Any]:
    event = models.EventContent()
    event.EventType = event_type
    for key, value in payload.items():
        setattr(event, key, value)
    result: dict[str, Any] = json.loads(event.to_json_string())
    return result


def new_file_upload(
    file_id: str,
    source_context: str | None,
    *,
    name: str = "clip",
    size: int = 7_700_180,
    md5: str = "d41d8cd98f00b204e9800998ecf8427e",
    procedure_task_id: str = "",
    media_url: str | None = None,
    duration: float = 60.5,
) -> dict[str, Any]:
    source = models.MediaSourceData()
    source.SourceType = "Upload"
    source.SourceContext = source_context
    info = models.MediaBasicInfo()
    info.Name = name
    info.Description = ""
    info.CreateTime = "2026-11-24T10:00:00Z"
    info.UpdateTime = "2026-11-24T10:00:01Z"
    info.ExpireTime = "9999-12-31T23:59:59Z"
    info.ClassId = 0
    info.ClassName = "Other"
    info.CoverUrl = f"http://1500000001.vod2.myqcloud.com/abcd/{file_id}/cover.jpg"
    info.Type = "mp4"
    info.MediaUrl = media_url or f"http://1500000001.vod2.myqcloud.com/abcd/{file_id}/f0.mp4"
    info.StorageRegion = "ap-guangzhou"
    info.SourceInfo = source
    info.TagSet = []
    meta = models.MediaMetaData()
    meta.Size = size
    meta.Container = "mov,mp4,m4a,3gp,3g2,mj2"
    meta.Bitrate = 1_000_000
    meta.Height = 480
    meta.Width = 640
    meta.Duration = duration
    meta.Md5 = md5
    task = models.FileUploadTask()
    task.FileId = file_id
    task.MediaBasicInfo = info
    task.ProcedureTaskId = procedure_task_id
    task.ReviewAudioVideoTaskId = ""
    task.MetaData = meta
    return _event("NewFileUpload", FileUploadEvent=task)


def procedure_state_changed(
    file_id: str,
    task_id: str,
    status: str,
    transcodes: list[tuple[int, str]],
    session_context: str = "",
    review_suggestion: str | None = None,
    duration: float | None = None,
) -> dict[str, Any]:
    """`transcodes`: (definition, sub-task status) pairs; SUCCESS ones carry an output URL. `duration`: the
    source's, in the task's MetaData."""
    results = []
    for definition, sub_status in transcodes:
        item = models.MediaTranscodeItem()
        item.Definition = definition
        if sub_status == "SUCCESS":
            item.Url = f"http://1500000001.vod2.myqcloud.com/abcd/{file_id}/v.f{definition}.mp4"
            item.Size = 123_456
        transcode = models.MediaProcessTaskTranscodeResult()
        transcode.Status = sub_status
        transcode.ErrCode = 0
        transcode.Message = "SUCCESS" if sub_status == "SUCCESS" else ""
        transcode.Output = item
        result = models.MediaProcessTaskResult()
        result.Type = "Transcode"
        result.TranscodeTask = transcode
        results.append(result)
    task = models.ProcedureTask()
    task.TaskId = task_id
    task.Status = status
    task.FileId = file_id
    task.FileName = "clip"
    task.MediaProcessResultSet = results
    task.TasksPriority = 0
    task.TasksNotifyMode = "Change"
    task.SessionContext = session_context
    if duration is not None:
        meta = models.MediaMetaData()
        meta.Duration = duration
        task.MetaData = meta
    if review_suggestion is not None:
        output = models.AiReviewPornTaskOutput()
        output.Suggestion = review_suggestion
        output.Confidence = 10.0
        porn = models.AiReviewTaskPornResult()
        porn.Status = "SUCCESS"
        porn.Output = output
        review = models.AiContentReviewResult()
        review.Type = "Porn"
        review.PornTask = porn
        task.AiContentReviewResultSet = [review]
    return _event("ProcedureStateChanged", ProcedureStateChangeEvent=task)


def file_deleted(*file_ids: str) -> dict[str, Any]:
    task = models.FileDeleteTask()
    task.FileIdSet = list(file_ids)
    return _event("FileDeleted", FileDeleteEvent=task)


def other_event(event_type: str = "PersistenceComplete") -> dict[str, Any]:
    return _event(event_type)


def legacy_new_file_upload(file_id: str, source_context: str) -> dict[str, Any]:
    return {
        "version": "4.0",
        "eventType": "NewFileUpload",
        "data": {
            "status": 0,
            "message": "",
            "vodTaskId": "",
            "fileId": file_id,
            "fileName": "legacy clip",
            "fileUrl": f"http://1500000001.vod2.myqcloud.com/abcd/{file_id}/f0.mp4",
            "coverUrl": "",
            "author": "",
            "sourceType": "ClientUpload",
            "sourceContext": source_context,
            "streamId": "",
            "procedureTaskId": "",
            "transcodeTaskId": "",
        },
    }


def legacy_procedure_state_changed(file_id: str, task_id: str, status: str) -> dict[str, Any]:
    return {
        "version": "4.0",
        "eventType": "ProcedureStateChanged",
        "data": {
            "vodTaskId": task_id,
            "status": status,
            "message": "",
            "errCode": 0,
            "fileId": file_id,
            "fileName": "legacy clip",
            "metaData": {"size": 100, "duration": 3},
            "processTaskList": [
                {
                    "taskType": "Transcode",
                    "status": "SUCCESS",
                    "errCode": 0,
                    "message": "",
                    "output": {"url": f"http://example.invalid/{file_id}/v.f20.mp4", "definition": 20},
                }
            ],
        },
    }


def signed(body: dict[str, Any], sign_key: str, expires_at: int | None = None) -> dict[str, Any]:
    t = int(time.time()) + 600 if expires_at is None else expires_at
    return {**body, "T": t, "Sign": callback_auth.sign(sign_key, t)}
