"""Videos: the record of an attributed upload, and the owner-only read service."""

from __future__ import annotations

import base64
import binascii
import json
import re
from typing import Any, Protocol

from msgspec import Struct, field

from chalicelib.errors import InvalidRequest, NotFound
from chalicelib.events import UploadedFile
from chalicelib.media import MediaFacts
from chalicelib.policy import OverQuotaRule
from chalicelib.strict_json import load_json
from chalicelib.uploads import UploadIntent

MAX_PAGE_SIZE = 100


class Video(Struct, frozen=True):
    file_id: str
    owner: str
    upload_id: str
    received_at: int
    title: str | None = None
    file_name: str | None = None
    procedure: str | None = None
    procedure_task_id: str | None = None
    metadata: dict[str, Any] | None = None
    media: MediaFacts = field(default_factory=MediaFacts)
    # Written by ProcedureStateChanged / FileDeleted, possibly before the upload event.
    processing_tasks: dict[str, dict[str, Any]] = field(default_factory=dict)  # TaskId -> latest snapshot
    deletion_requested_at: int | None = None  # its owner asked to delete it (chalicelib/deletion.py)
    deleted_at: int | None = None
    quota_exceeded: tuple[str, ...] = ()  # the quotas it broke (chalicelib/quotas.py): marked, and its tier's rule
    over_quota: OverQuotaRule | None = None  # that rule, once it broke one
    counted_bytes: int = 0  # what its attribution counted against its owner's bytes quota: its deletion gives it back

    @property
    def condemned(self) -> bool:
        """It broke a quota of a tier whose rule is `delete`: the sweep deletes it."""
        return self.over_quota == "delete" and bool(self.quota_exceeded)

    @property
    def processing(self) -> dict[str, Any] | None:
        """The upload's own task flow (its ProcedureTaskId) if reported, else the most advanced one."""
        if self.procedure_task_id in self.processing_tasks:
            return self.processing_tasks[self.procedure_task_id]
        ranked = sorted(self.processing_tasks.values(), key=lambda s: (s.get("status") == "FINISH", s["taskId"]))
        return ranked[-1] if ranked else None

    @classmethod
    def attribute(cls, intent: UploadIntent, uploaded: UploadedFile, now: int) -> Video:
        return cls(
            file_id=uploaded.file_id,
            owner=intent.owner,
            upload_id=intent.upload_id,
            received_at=now,
            title=intent.client.title,
            file_name=intent.client.file_name,
            procedure=intent.terms.procedure,
            procedure_task_id=uploaded.procedure_task_id,
            metadata=intent.client.metadata,
            media=uploaded.media,
        )


class VideoPage(Struct, frozen=True):
    videos: list[Video]
    next_cursor: str | None


class PageKey(Struct, frozen=True):
    """Where a listing stopped: the sort key and file id of the last video returned."""

    sort_key: str
    file_id: str

    def encode(self) -> str:
        raw = json.dumps([self.sort_key, self.file_id], separators=(",", ":")).encode()
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")

    @classmethod
    def decode(cls, cursor: str) -> PageKey:
        try:
            raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
            sort_key, file_id = load_json(raw, "cursor")
        except (binascii.Error, ValueError, TypeError):
            raise InvalidRequest("cursor", "is not a cursor returned by this API") from None
        if not (isinstance(sort_key, str) and isinstance(file_id, str) and is_file_id(file_id)):
            raise InvalidRequest("cursor", "is not a cursor returned by this API")
        if not re.fullmatch(r"[0-9]{10}#", sort_key.removesuffix(file_id)):
            raise InvalidRequest("cursor", "is not a cursor returned by this API")
        return cls(sort_key, file_id)


class VideoStore(Protocol):
    def get_video(self, file_id: str) -> Video | None: ...

    def list_videos(self, owner: str, limit: int, after: PageKey | None) -> tuple[list[Video], PageKey | None]: ...


class VideoService:
    def __init__(self, store: VideoStore) -> None:
        self._store = store

    def get(self, owner: str, file_id: str) -> Video:
        video = self._store.get_video(file_id) if is_file_id(file_id) else None
        if video is None or video.owner != owner or video.deleted_at is not None:
            raise NotFound("no such video")
        return video

    def list(self, owner: str, limit: int, cursor: str | None) -> VideoPage:
        if not 1 <= limit <= MAX_PAGE_SIZE:
            raise InvalidRequest("limit", f"must be between 1 and {MAX_PAGE_SIZE}")
        after = PageKey.decode(cursor) if cursor else None
        videos, last = self._store.list_videos(owner, limit, after)
        return VideoPage(videos, last.encode() if last else None)

    def video_of(self, intent: UploadIntent) -> Video | None:
        if intent.file_id is None:
            return None
        video = self._store.get_video(intent.file_id)
        if video is None or video.owner != intent.owner or video.deleted_at is not None:
            return None
        return video


def is_file_id(value: str) -> bool:
    return 0 < len(value) <= 64 and value.isascii() and value.isprintable()
