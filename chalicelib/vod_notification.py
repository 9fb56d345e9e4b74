"""VOD's event notifications on the wire (vod-protocol.md §2): the JSON models, and the v3 and legacy v2
parsers that turn a body into a domain event (chalicelib/events.py).

Payload models ignore unknown keys on purpose: VOD adds fields and sends dozens of `…Event: null`
keys, and a receiver that rejected them would lose events. Everything we *use* is typed and checked.
Pure: no I/O.
"""

from __future__ import annotations

import math
import re
from typing import Any, Literal

from msgspec import Struct
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from chalicelib.errors import InvalidRequest, invalid_request_from
from chalicelib.events import Event, FilesDeleted, OtherEvent, ProcessingUpdate, TaskOutput, UploadedFile
from chalicelib.media import MediaFacts
from chalicelib.strict_json import is_bounded, load_json

MAX_TASK_OUTPUTS = 50
MAX_FILE_ID_LENGTH = 64
MAX_DELETED_FILE_IDS = 100
# Real values are a few hundred bytes to gigabytes; anything beyond is not a measurement, and DynamoDB
# numbers cannot hold NaN, infinities or more than 38 digits.
_MAX_MEASURE = 1e18
_EVENT_TYPE = re.compile(r"[A-Za-z][A-Za-z0-9]{0,63}\Z")
# VOD's names, URLs and ids are far shorter; a longer one is not VOD's to keep (and a video item must stay
# far below DynamoDB's 400 KB).
MAX_TEXT = 2048
_OUTPUT_DETAILS = ("Size", "Duration", "Width", "Height", "PicInfoSet")
_MAX_DETAIL_DEPTH = 4


class _Vod(BaseModel):
    # Built when an event first needs it, not at import: a NewFileUpload never builds the task-flow models.
    model_config = ConfigDict(extra="ignore", populate_by_name=True, coerce_numbers_to_str=False, defer_build=True)


class MetaData(_Vod):
    size: int | None = Field(default=None, alias="Size")
    duration: float | None = Field(default=None, alias="Duration")
    width: int | None = Field(default=None, alias="Width")
    height: int | None = Field(default=None, alias="Height")
    bitrate: int | None = Field(default=None, alias="Bitrate")
    container: str | None = Field(default=None, alias="Container")
    md5: str | None = Field(default=None, alias="Md5", max_length=64)

    @field_validator("size", "duration", "width", "height", "bitrate", mode="before")
    @classmethod
    def _measurement(cls, value: Any) -> Any:
        """An implausible measurement is dropped, not fatal: the upload must still be attributed."""
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if not math.isfinite(value) or abs(value) > _MAX_MEASURE:
                return None
        return value


class SourceInfo(_Vod):
    source_type: str | None = Field(default=None, alias="SourceType")
    source_context: str | None = Field(default=None, alias="SourceContext")


def _bounded_text(value: Any) -> Any:
    """A text longer than MAX_TEXT is dropped, not fatal: the upload must still be attributed."""
    return None if isinstance(value, str) and len(value) > MAX_TEXT else value


class MediaBasicInfo(_Vod):
    name: str | None = Field(default=None, alias="Name")
    create_time: str | None = Field(default=None, alias="CreateTime")
    class_id: int | None = Field(default=None, alias="ClassId")
    cover_url: str | None = Field(default=None, alias="CoverUrl")
    media_type: str | None = Field(default=None, alias="Type")
    media_url: str | None = Field(default=None, alias="MediaUrl")
    storage_region: str | None = Field(default=None, alias="StorageRegion")
    source_info: SourceInfo | None = Field(default=None, alias="SourceInfo")

    _texts = field_validator(
        "name", "create_time", "cover_url", "media_type", "media_url", "storage_region", mode="before"
    )(_bounded_text)


class FileUploadTask(_Vod):
    file_id: str = Field(alias="FileId", min_length=1, max_length=64)
    media_basic_info: MediaBasicInfo | None = Field(default=None, alias="MediaBasicInfo")
    procedure_task_id: str | None = Field(default=None, alias="ProcedureTaskId")
    review_task_id: str | None = Field(default=None, alias="ReviewAudioVideoTaskId")
    meta_data: MetaData | None = Field(default=None, alias="MetaData")

    _texts = field_validator("procedure_task_id", mode="before")(_bounded_text)


class MediaInfo(_Vod):
    """One file of DescribeMediaInfos' `MediaInfoSet`: what a NewFileUpload reports, under other names."""

    file_id: str = Field(alias="FileId", min_length=1, max_length=64)
    basic_info: MediaBasicInfo | None = Field(default=None, alias="BasicInfo")
    meta_data: MetaData | None = Field(default=None, alias="MetaData")


class SubTask(_Vod):
    status: str | None = Field(default=None, alias="Status")
    err_code: int | None = Field(default=None, alias="ErrCode")
    message: str | None = Field(default=None, alias="Message")
    output: dict[str, Any] | None = Field(default=None, alias="Output")


class MediaProcessResult(_Vod):
    type: str = Field(alias="Type")
    transcode: SubTask | None = Field(default=None, alias="TranscodeTask")
    animated_graphic: SubTask | None = Field(default=None, alias="AnimatedGraphicTask")
    snapshot_by_time_offset: SubTask | None = Field(default=None, alias="SnapshotByTimeOffsetTask")
    sample_snapshot: SubTask | None = Field(default=None, alias="SampleSnapshotTask")
    image_sprite: SubTask | None = Field(default=None, alias="ImageSpriteTask")
    cover_by_snapshot: SubTask | None = Field(default=None, alias="CoverBySnapshotTask")
    adaptive_dynamic_streaming: SubTask | None = Field(default=None, alias="AdaptiveDynamicStreamingTask")

    def task(self) -> SubTask | None:
        for name in type(self).model_fields:
            value = getattr(self, name)
            if isinstance(value, SubTask):
                return value
        return None


class ProcedureTask(_Vod):
    task_id: str = Field(alias="TaskId", min_length=1, max_length=128)
    status: str = Field(alias="Status", max_length=32)
    file_id: str | None = Field(default=None, alias="FileId", max_length=64)
    session_context: str | None = Field(default=None, alias="SessionContext")
    err_code: int | None = Field(default=None, alias="ErrCode")
    message: str | None = Field(default=None, alias="Message")
    media_process_results: list[MediaProcessResult] | None = Field(default=None, alias="MediaProcessResultSet")
    review_results: list[dict[str, Any]] | None = Field(default=None, alias="AiContentReviewResultSet")
    meta_data: MetaData | None = Field(default=None, alias="MetaData")


class Notification(Struct, frozen=True):
    """One notification: its event, and what its authenticity is checked with."""

    event: Event
    event_type: str
    format: Literal["v3", "v2"]
    sign: str | None
    expires_at: int | None  # `T`


# -- parsing -----------------------------------------------------------------------------------


def parse(body: bytes) -> Notification:
    data = load_json(body, "body")
    if not isinstance(data, dict):
        raise InvalidRequest("body", "must be a JSON object")
    sign, expires_at = _sign_fields(data)
    try:
        if "EventType" in data:
            event_type = _event_type(data["EventType"], "EventType")
            return Notification(_parse_v3(event_type, data), event_type, "v3", sign, expires_at)
        if "eventType" in data and isinstance(data.get("data"), dict):
            event_type = _event_type(data["eventType"], "eventType")
            return Notification(_parse_v2(event_type, data["data"]), event_type, "v2", sign, expires_at)
    except ValidationError as exc:
        raise invalid_request_from(exc) from None
    raise InvalidRequest("EventType", "is missing: not a VOD event notification")


def _event_type(value: object, field: str) -> str:
    if not isinstance(value, str) or not _EVENT_TYPE.match(value):
        raise InvalidRequest(field, "must be an event type name (letters and digits, at most 64)")
    return value


def _sign_fields(data: dict[str, Any]) -> tuple[str | None, int | None]:
    sign, t = data.get("Sign"), data.get("T")
    if t is not None and not isinstance(t, bool):
        try:
            t = int(t)
        except (TypeError, ValueError, OverflowError):
            raise InvalidRequest("T", "must be an integer") from None
    else:
        t = None
    return (sign if isinstance(sign, str) else None), t


def _file_ids(value: object, field: str) -> tuple[str, ...]:
    ids = [value] if isinstance(value, str) else value
    if not isinstance(ids, list) or len(ids) > MAX_DELETED_FILE_IDS:
        raise InvalidRequest(field, f"must be a list of at most {MAX_DELETED_FILE_IDS} file ids")
    if not all(isinstance(file_id, str) and 0 < len(file_id) <= MAX_FILE_ID_LENGTH for file_id in ids):
        raise InvalidRequest(field, f"file ids must be strings of 1..{MAX_FILE_ID_LENGTH} characters")
    return tuple(ids)


def _parse_v3(event_type: str, data: dict[str, Any]) -> Event:
    if event_type == "NewFileUpload":
        task = FileUploadTask.model_validate(data.get("FileUploadEvent") or {})
        return _uploaded_file(task.file_id, task.media_basic_info, task.meta_data, task.procedure_task_id)
    if event_type == "ProcedureStateChanged":
        raw = data.get("ProcedureStateChangeEvent") or {}
        task_model = ProcedureTask.model_validate(raw)
        if not task_model.file_id:
            raise InvalidRequest("ProcedureStateChangeEvent.FileId", "is required")
        outputs = tuple(_output(result) for result in (task_model.media_process_results or [])[:MAX_TASK_OUTPUTS])
        review = tuple(_review(item) for item in (task_model.review_results or [])[:MAX_TASK_OUTPUTS])
        return ProcessingUpdate(
            task_id=task_model.task_id,
            file_id=task_model.file_id,
            status=task_model.status,
            session_context=task_model.session_context or None,
            outputs=outputs,
            review=review,
            err_code=task_model.err_code,
            message=task_model.message,
            duration=task_model.meta_data.duration if task_model.meta_data else None,
        )
    if event_type == "FileDeleted":
        deleted = data.get("FileDeleteEvent") or {}
        if not isinstance(deleted, dict):
            raise InvalidRequest("FileDeleteEvent", "must be an object")
        return FilesDeleted(_file_ids(deleted.get("FileIdSet") or [], "FileDeleteEvent.FileIdSet"))
    return OtherEvent(event_type)


def uploaded_from_media_info(data: dict[str, Any]) -> UploadedFile:
    """The NewFileUpload a file of DescribeMediaInfos stands for (without its ProcedureTaskId, which only the
    event carries)."""
    try:
        info = MediaInfo.model_validate(data)
    except ValidationError as exc:
        raise invalid_request_from(exc) from None
    return _uploaded_file(info.file_id, info.basic_info, info.meta_data, None)


def _uploaded_file(
    file_id: str, basic_info: MediaBasicInfo | None, meta_data: MetaData | None, procedure_task_id: str | None
) -> UploadedFile:
    info = basic_info or MediaBasicInfo()
    meta = meta_data or MetaData()
    return UploadedFile(
        file_id=file_id,
        source_context=(info.source_info.source_context if info.source_info else None) or None,
        procedure_task_id=procedure_task_id or None,
        media=MediaFacts(
            name=info.name,
            media_url=info.media_url or None,
            cover_url=info.cover_url or None,
            media_type=info.media_type,
            size=meta.size,
            duration=meta.duration,
            width=meta.width,
            height=meta.height,
            md5=meta.md5 or None,
            storage_region=info.storage_region,
            class_id=info.class_id,
            vod_create_time=info.create_time,
        ),
    )


def _output(result: MediaProcessResult) -> TaskOutput:
    task = result.task() or SubTask()
    output = task.output or {}
    url = output.get("Url") or output.get("CoverUrl")
    definition = output.get("Definition")
    return TaskOutput(
        kind=result.type,
        status=task.status or "UNKNOWN",
        err_code=task.err_code,
        url=url if isinstance(url, str) else None,
        definition=definition if isinstance(definition, int) and not isinstance(definition, bool) else None,
        # Free-form VOD values are kept only if they can be served back as valid JSON.
        detail={
            k: v
            for k, v in output.items()
            if k in _OUTPUT_DETAILS and v is not None and is_bounded(v, _MAX_DETAIL_DEPTH)
        },
    )


def _review(raw: dict[str, Any]) -> dict[str, Any]:
    def text(value: Any) -> str | None:
        return value[:64] if isinstance(value, str) else None

    summary: dict[str, Any] = {"type": text(raw.get("Type"))}
    for key, task in raw.items():
        if key.endswith("Task") and isinstance(task, dict):
            output = task.get("Output")
            suggestion = output.get("Suggestion") if isinstance(output, dict) else None
            summary.update(status=text(task.get("Status")), suggestion=text(suggestion))
    return summary


def _parse_v2(event_type: str, data: dict[str, Any]) -> Event:
    def text(key: str) -> str | None:
        value = _bounded_text(data.get(key))
        return value if isinstance(value, str) and value else None

    def file_id() -> str | None:
        value = text("fileId")
        if value is not None and len(value) > MAX_FILE_ID_LENGTH:
            raise InvalidRequest("data.fileId", f"must be at most {MAX_FILE_ID_LENGTH} characters")
        return value

    if event_type == "NewFileUpload":
        uploaded_id = file_id()
        if uploaded_id is None:
            raise InvalidRequest("data.fileId", "is required")
        return UploadedFile(
            file_id=uploaded_id,
            source_context=text("sourceContext"),
            procedure_task_id=text("procedureTaskId"),
            media=MediaFacts(name=text("fileName"), media_url=text("fileUrl"), cover_url=text("coverUrl")),
        )
    if event_type == "ProcedureStateChanged":
        processed_id, task_id = file_id(), text("vodTaskId")
        if processed_id is None or task_id is None or len(task_id) > 128:
            raise InvalidRequest("data.vodTaskId", "and data.fileId are required (task id at most 128)")
        task_list = data.get("processTaskList")
        outputs = []
        for item in (task_list if isinstance(task_list, list) else [])[:MAX_TASK_OUTPUTS]:
            if not isinstance(item, dict):
                continue
            raw_output = item.get("output")
            output: dict[str, Any] = raw_output if isinstance(raw_output, dict) else {}
            outputs.append(
                TaskOutput(
                    kind=str(item.get("taskType", "Unknown")),
                    status=str(item.get("status", "UNKNOWN")).upper(),
                    err_code=item.get("errCode") if isinstance(item.get("errCode"), int) else None,
                    url=output.get("url") if isinstance(output.get("url"), str) else None,
                    definition=output.get("definition") if isinstance(output.get("definition"), int) else None,
                )
            )
        return ProcessingUpdate(
            task_id=task_id,
            file_id=processed_id,
            status=str(data.get("status", "PROCESSING")).upper()[:32],
            session_context=text("sessionContext"),
            outputs=tuple(outputs),
            err_code=data.get("errCode") if isinstance(data.get("errCode"), int) else None,
            message=text("message"),
        )
    if event_type == "FileDeleted":
        return FilesDeleted(_file_ids(data.get("fileIdSet") or data.get("fileId") or [], "data.fileIdSet"))
    return OtherEvent(event_type)
