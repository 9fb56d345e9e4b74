"""Domain events: the facts this service publishes to the app's other services (docs/events.md).

Each event leaves through an outbox row written in the same DynamoDB transaction as the fact it reports
(chalicelib/storage/outbox.py), so there is no fact without its event and no event without its fact. Its
id is derived from the fact (its type and the fact's natural key), so a retried write or a duplicate
delivery carries the same id: consumers deduplicate on it.

Pure: no I/O.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final

from msgspec import Struct, field

if TYPE_CHECKING:
    from chalicelib.events import ProcessingUpdate, UploadedFile
    from chalicelib.uploads import UploadIntent
    from chalicelib.videos import Video

SCHEMA_VERSION: Final = "1"

UPLOAD_ATTRIBUTED: Final = "upload.attributed"
VIDEO_PROCESSED: Final = "video.processed"
VIDEO_PROCESSING_FAILED: Final = "video.processing_failed"
VIDEO_DELETED: Final = "video.deleted"
UPLOAD_KEPT_FOR_REVIEW: Final = "upload.kept_for_review"
UPLOAD_REJECTED: Final = "upload.rejected"
UPLOAD_EXPIRED: Final = "upload.expired"
UPLOAD_CANCELLED: Final = "upload.cancelled"
QUOTA_EXCEEDED: Final = "quota.exceeded"
EVENT_TYPES: Final = frozenset(
    {
        UPLOAD_ATTRIBUTED,
        VIDEO_PROCESSED,
        VIDEO_PROCESSING_FAILED,
        VIDEO_DELETED,
        UPLOAD_KEPT_FOR_REVIEW,
        UPLOAD_REJECTED,
        UPLOAD_EXPIRED,
        UPLOAD_CANCELLED,
        QUOTA_EXCEEDED,
    }
)

# An event's own fields, as canonical JSON: far below EventBridge's 256 KB entry and DynamoDB's 400 KB item,
# with room for the envelope whatever the other attributes hold.
MAX_DATA_BYTES: Final = 16 * 1024
# How long an outbox row stays in the table after the fact: the stream delivers it within seconds, and
# this leaves days to trace an event back to its row.
OUTBOX_RETENTION_SECONDS: Final = 7 * 24 * 3600
# The namespace of event ids (uuid5 of the type and the fact's natural key): fixed forever, or ids change.
_EVENT_ID_NAMESPACE: Final = uuid.UUID("6f1c2a4e-5b0d-4c1e-9a57-3d2b8e7f4c61")


class EventTooLarge(ValueError):
    """An event's data would exceed MAX_DATA_BYTES: the caller must bound what it puts in."""


class DomainEvent(Struct, frozen=True):
    """One fact as published. `key` is the fact's natural key within its type (a FileId, an upload id,
    a FileId and TaskId, ...): the same fact always has the same key, two facts never do."""

    type: str
    key: str
    occurred_at: int  # epoch seconds
    owner: str = ""
    upload_id: str = ""
    file_id: str = ""
    data: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.type not in EVENT_TYPES:
            raise ValueError(f"unknown event type {self.type!r}")
        if not self.key:
            raise ValueError(f"{self.type}: an event needs its fact's natural key")
        size = len(self.data_json)  # ASCII: its length is its size in bytes
        if size > MAX_DATA_BYTES:
            raise EventTooLarge(f"{self.type} {self.key}: data is {size} bytes, at most {MAX_DATA_BYTES}")

    @property
    def event_id(self) -> str:
        return str(uuid.uuid5(_EVENT_ID_NAMESPACE, f"{self.type}\n{self.key}"))

    @property
    def data_json(self) -> str:
        """The data as canonical JSON (sorted keys, compact, ASCII): the same data is always the same text,
        and any string (even a lone surrogate from a parsed `\\ud800`) can be stored."""
        return json.dumps(self.data, sort_keys=True, separators=(",", ":"), allow_nan=False)

    @property
    def occurred_at_text(self) -> str:
        return rfc3339(self.occurred_at)

    def envelope(self) -> dict[str, Any]:
        """The event as delivered (EventBridge `detail`, the local sink's listing)."""
        return envelope(
            self.event_id, self.type, self.occurred_at_text, self.owner, self.upload_id, self.file_id, self.data
        )


def envelope(
    event_id: str, event_type: str, occurred_at: str, owner: str, upload_id: str, file_id: str, data: Any
) -> dict[str, Any]:
    return {
        "id": event_id,
        "type": event_type,
        "schemaVersion": SCHEMA_VERSION,
        "occurredAt": occurred_at,
        "owner": owner,
        "uploadId": upload_id,
        "fileId": file_id,
        "data": data,
    }


def rfc3339(moment: int) -> str:
    """`2026-12-02T06:30:00Z`: UTC, whole seconds."""
    return datetime.fromtimestamp(moment, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# -- the events of the facts this service records (docs/events.md "Catalogue") --------------------------


def upload_attributed(video: Video) -> DomainEvent:
    """An upload was attributed to its intent's owner (once, by NewFileUpload or by the uploader's report)."""
    from chalicelib.media import api_fields  # the intents' events, on the signing route, need no media facts

    data = {
        "title": video.title,
        "fileName": video.file_name,
        "procedure": video.procedure,
        "procedureTaskId": video.procedure_task_id,
        **api_fields(video.media),
        "metadata": video.metadata,
    }
    return DomainEvent(
        UPLOAD_ATTRIBUTED,
        video.upload_id,
        video.received_at,
        video.owner,
        video.upload_id,
        video.file_id,
        within_bound(data, ("metadata", "coverUrl", "mediaUrl", "title", "fileName", "name")),
    )


def video_processing_finished(
    update: ProcessingUpdate, snapshot: dict[str, Any], owner: str, upload_id: str, now: int
) -> DomainEvent:
    """A task flow of the video finished: `video.processing_failed` if it or one of its tasks failed.
    `snapshot` is the flow's snapshot bounded by the caller (see items.stored_snapshot); `owner` and
    `upload_id` are empty when the file is not attributed (yet)."""
    failed = bool(update.err_code) or any(output.status == "FAIL" for output in update.outputs)
    kind = VIDEO_PROCESSING_FAILED if failed else VIDEO_PROCESSED
    return DomainEvent(kind, f"{update.file_id}/{update.task_id}", now, owner, upload_id, update.file_id, snapshot)


def upload_kept_for_review(
    kind: str, uploaded: UploadedFile, reason: str, now: int, intent: UploadIntent | None
) -> DomainEvent:
    """An upload could not be attributed (`orphan`: to no intent; `rejected`: not to the intent it names)."""
    data = {"kind": kind, "reason": reason, "name": uploaded.media.name, "size": uploaded.media.size}
    return DomainEvent(
        UPLOAD_KEPT_FOR_REVIEW,
        uploaded.file_id,
        now,
        intent.owner if intent else "",
        intent.upload_id if intent else "",
        uploaded.file_id,
        within_bound(data, ("name", "reason")),
    )


def upload_rejected(review: Mapping[str, Any], now: int) -> DomainEvent:
    """The sweep deleted from VOD an upload kept for review that nobody owns (`review`: items.item_to_review)."""
    data = {"kind": review.get("kind"), "reason": review.get("reason"), "keptSince": review.get("receivedAt")}
    return DomainEvent(
        UPLOAD_REJECTED,
        str(review["fileId"]),
        now,
        review.get("intentOwner") or "",
        review.get("uploadId") or "",
        str(review["fileId"]),
        within_bound(data, ("reason",)),
    )


def upload_expired(intent: UploadIntent, now: int) -> DomainEvent:
    """An intent's window and last signature ended with no upload attributed to it."""
    data = {
        "title": intent.client.title,
        "fileName": intent.client.file_name,
        "signaturesIssued": intent.signatures_minted,
        "windowEndedAt": rfc3339(intent.window_ends_at),
    }
    return DomainEvent(UPLOAD_EXPIRED, intent.upload_id, now, intent.owner, intent.upload_id, "", data)


def upload_cancelled(intent: UploadIntent, now: int) -> DomainEvent:
    """An intent cancelled by its owner (`DELETE /uploads/{uploadId}`), with what it was."""
    data = {"previousStatus": intent.status, "signaturesMinted": intent.signatures_minted}
    return DomainEvent(UPLOAD_CANCELLED, intent.upload_id, now, intent.owner, intent.upload_id, "", data)


def video_deleted(file_id: str, owner: str, upload_id: str, reason: str, now: int) -> DomainEvent:
    """An attributed video was deleted, once per FileId (chalicelib/deletion.py): `reason` is `owner_request`
    (its owner asked), `over_quota` (its tier's `delete` rule condemned it) or `deleted_in_vod` (VOD's FileDeleted
    for a file deleted there by other means)."""
    return DomainEvent(VIDEO_DELETED, file_id, now, owner, upload_id, file_id, {"reason": reason})


def within_bound(data: dict[str, Any], droppable: Sequence[str]) -> dict[str, Any]:
    """`data`, with fields set to null until its JSON fits MAX_DATA_BYTES: the `droppable` ones in that
    order, then (a value nobody bounded, from a hostile or broken sender) the others largest first. Each
    field is bounded where it came in, but not all of them together, and a fact is never refused for the
    size of its event."""
    fitted = dict(data)
    others = sorted((name for name in data if name not in droppable), key=lambda name: -len(json.dumps(data[name])))
    for name in [*droppable, *others]:
        if len(json.dumps(fitted, separators=(",", ":"))) <= MAX_DATA_BYTES:
            break
        fitted[name] = None
    return fitted
