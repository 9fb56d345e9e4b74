"""Media records (what CommitUploadUGC creates) and their official SDK model views."""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, fields
from typing import Any

from tencentcloud.vod.v20180717 import models

from vodlocal.store import Store

NEVER = "9999-12-31T23:59:59Z"


def iso_now(ts: float | None = None) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() if ts is None else ts))


@dataclass
class Media:
    file_id: str
    name: str
    type: str
    size: int
    md5: str
    bucket: str
    video_key: str
    media_url: str
    storage_region: str
    create_time: str
    class_id: int = 0
    cover_key: str | None = None
    cover_url: str = ""
    source_context: str = ""
    session_context: str = ""
    procedure: str | None = None
    task_priority: int = 0
    task_notify_mode: str = "Finish"
    procedure_task_id: str = ""
    expire_time: str = NEVER
    update_time: str = ""
    # The (sub-)application the file was uploaded to; None in records written before it was kept: the primary one.
    application: int | None = None

    def basic_info(self) -> models.MediaBasicInfo:
        info = models.MediaBasicInfo()
        info.Name = self.name
        info.Description = ""
        info.CreateTime = self.create_time
        info.UpdateTime = self.update_time or self.create_time
        info.ExpireTime = self.expire_time
        info.ClassId = self.class_id
        info.ClassName = "其他" if self.class_id == 0 else f"class-{self.class_id}"
        info.ClassPath = info.ClassName
        info.CoverUrl = self.cover_url
        info.Type = self.type
        info.MediaUrl = self.media_url
        source = models.MediaSourceData()
        source.SourceType = "Upload"
        source.SourceContext = self.source_context
        info.SourceInfo = source
        info.StorageRegion = self.storage_region
        info.StoragePath = "/" + self.video_key
        info.TagSet = []
        info.Vid = ""
        info.Category = category_of(self.type)
        info.Status = "Normal"
        info.StorageClass = "STANDARD"
        return info

    def meta_data(self) -> models.MediaMetaData:
        meta = models.MediaMetaData()
        meta.Size = self.size
        meta.Container = self.type
        meta.Bitrate = 0
        meta.Height = 0
        meta.Width = 0
        meta.Duration = 0.0
        meta.Rotate = 0
        meta.VideoStreamSet = []
        meta.AudioStreamSet = []
        meta.VideoDuration = 0.0
        meta.AudioDuration = 0.0
        meta.Md5 = self.md5
        return meta


def category_of(media_type: str) -> str:
    if media_type in {"mp3", "m4a", "aac", "wav", "flac", "ogg", "wma", "amr"}:
        return "Audio"
    if media_type in {"jpg", "jpeg", "png", "gif", "bmp", "webp", "heic"}:
        return "Image"
    return "Video"


class MediaRepository:
    def __init__(self, store: Store) -> None:
        self.store = store

    def save(self, media: Media) -> None:
        self.store.execute("INSERT OR REPLACE INTO media VALUES (?, ?)", (media.file_id, json.dumps(asdict(media))))

    def get(self, file_id: str) -> Media | None:
        row = self.store.one("SELECT data FROM media WHERE file_id = ?", (file_id,))
        if row is None:
            return None
        data: dict[str, Any] = json.loads(row["data"])
        known = {f.name for f in fields(Media)}
        return Media(**{k: v for k, v in data.items() if k in known})

    def delete(self, file_id: str) -> bool:
        return self.store.execute("DELETE FROM media WHERE file_id = ?", (file_id,)) > 0
