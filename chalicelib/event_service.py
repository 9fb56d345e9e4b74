"""The event service: authenticate, parse, and apply one VOD event notification, idempotently.

Order of checks: path token (constant time, before parsing), JSON, `Sign`/`T`, then the
`sourceContext` tag (before any database read). Nothing is written unless all of them pass.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Literal, assert_never

from msgspec import Struct

from chalicelib import callback_auth, source_context, vod_notification
from chalicelib.credentials import SecretsProvider
from chalicelib.deletion import reason_for
from chalicelib.errors import CompletionLost, FileOwnedElsewhere, PayloadTooLarge, ServiceUnavailable
from chalicelib.events import FilesDeleted, OtherEvent, ProcessingUpdate, UploadedFile
from chalicelib.policy import UploadPolicy
from chalicelib.quotas import QuotaBreak, QuotaTerms, known_duration
from chalicelib.videos import Video

if TYPE_CHECKING:
    from chalicelib.storage import Storage

_COMPLETION_ATTEMPTS = 3
NEW_FILE_UPLOAD = "NewFileUpload"
CANCELLED_REASON = "upload cancelled by its owner"

logger = logging.getLogger("vodupload")

OutcomeKind = Literal["attributed", "duplicate", "rejected", "orphan", "updated", "stale", "deleted", "ignored"]


class Outcome(Struct, frozen=True):
    event_type: str
    outcome: OutcomeKind
    file_id: str | None = None
    upload_id: str | None = None
    reason: str | None = None
    uploaded_at: float | None = None  # attributed: when VOD created the file (its CreateTime), epoch seconds


class EventService:
    def __init__(
        self,
        store: Storage,
        secrets: SecretsProvider,
        policy: UploadPolicy,
        max_body_bytes: int,
        require_sign: bool = True,
        max_sign_lifetime_seconds: int = 3600,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._secrets = secrets
        self._policy = policy
        self._max_body_bytes = max_body_bytes
        self._require_sign = require_sign
        self._max_sign_lifetime = max_sign_lifetime_seconds
        self._clock = clock

    def receive(self, path_token: str, body: bytes) -> Outcome:
        secrets = self._secrets.get()
        callback_auth.check_path_token(path_token, secrets.callback_token)
        notification = self._parse(body)
        now = int(self._clock())
        if secrets.sign_key is not None:
            callback_auth.check_sign(
                notification.sign, notification.expires_at, secrets.sign_key, now, self._max_sign_lifetime
            )
        elif self._require_sign:
            raise ServiceUnavailable("callback signing is required but VOD_SIGN_KEY is not configured")
        return self._apply_logged(notification, secrets.context_tag_key, now)

    def apply_pulled(self, body: bytes) -> Outcome:
        """An event from PullEvents. The API call that fetched it authenticated VOD, so there is no path
        token or Sign to check; everything else is as for a pushed event."""
        notification = self._parse(body)
        return self._apply_logged(notification, self._secrets.get().context_tag_key, int(self._clock()))

    def apply_reported(self, uploaded: UploadedFile) -> Outcome:
        """A NewFileUpload as VOD describes the file (DescribeMediaInfos) when its uploader reports it done:
        that API call authenticated VOD, and the caller has checked the file is the intent's. Applied exactly
        as the event is, so whichever of the two comes second is a duplicate."""
        return self._uploaded(NEW_FILE_UPLOAD, uploaded, self._secrets.get().context_tag_key, int(self._clock()))

    def _parse(self, body: bytes) -> vod_notification.Notification:
        if len(body) > self._max_body_bytes:
            raise PayloadTooLarge(f"notification exceeds {self._max_body_bytes} bytes")
        return vod_notification.parse(body)

    def _apply_logged(self, notification: vod_notification.Notification, tag_key: bytes, now: int) -> Outcome:
        try:
            return self._apply(notification, tag_key, now)
        except ServiceUnavailable:
            # Authentic but not applied: what an operator needs to find it again (DescribeMediaInfos by
            # FileId) or to replay it. The body's Sign is not logged.
            event = notification.event
            logger.error(
                "vod event not applied",
                extra={
                    "eventType": notification.event_type,
                    "fileId": getattr(event, "file_id", None) or ",".join(getattr(event, "file_ids", ())),
                    "sourceContext": getattr(event, "source_context", None),
                },
            )
            raise

    def _apply(self, notification: vod_notification.Notification, tag_key: bytes, now: int) -> Outcome:
        event_type = notification.event_type
        match notification.event:
            case UploadedFile() as uploaded:
                return self._uploaded(event_type, uploaded, tag_key, now)
            case ProcessingUpdate() as update:
                applied = self._store.videos.apply_processing(update, now)
                duration = known_duration(update.duration)
                if duration is not None:
                    broken = self._store.videos.record_duration(update.file_id, duration, self._quota_terms, now)
                    _log_breaks(update.file_id, [broken] if broken else [])
                return Outcome(event_type, "updated" if applied else "stale", update.file_id)
            case FilesDeleted(file_ids=file_ids):
                recorded = [self._file_deleted(file_id, now) for file_id in file_ids]
                outcome: OutcomeKind = "deleted" if any(recorded) or not recorded else "duplicate"
                return Outcome(event_type, outcome, ",".join(file_ids)[:200] or None)
            case OtherEvent(event_type=other):
                self._store.vod_events.count_event(other[:64])
                return Outcome(event_type, "ignored")
            case unreachable:
                assert_never(unreachable)

    def _file_deleted(self, file_id: str, now: int) -> bool:
        """VOD deleted the file: a video is deleted as its owner's request deletes it (chalicelib/deletion.py),
        with its one `video.deleted` event; a file nobody owns is marked deleted. False when the video was
        deleted already (our own DeleteMedia's event comes after the deletion it reports)."""
        videos = self._store.videos
        for _ in range(_COMPLETION_ATTEMPTS):
            video = videos.get_video(file_id, consistent=True)
            if video is None:
                if videos.mark_unattributed_deleted(file_id, now):
                    return True
                continue  # attributed in the meantime: delete it as a video
            if video.deleted_at is not None:
                return False
            return videos.complete_deletion(video, reason_for(video), now)
        raise CompletionLost(f"file {file_id} kept changing under us")

    def _uploaded(self, event_type: str, uploaded: UploadedFile, tag_key: bytes, now: int) -> Outcome:
        try:
            upload_id = source_context.decode(uploaded.source_context or "", tag_key)
        except source_context.InvalidContext as exc:
            self._store.reviews.record_for_review("orphan", uploaded, str(exc), now)
            return Outcome(event_type, "orphan", uploaded.file_id, reason=str(exc))
        for _ in range(_COMPLETION_ATTEMPTS):
            intent = self._store.intents.get_intent(upload_id)
            if intent is None:
                self._store.reviews.record_for_review("orphan", uploaded, "no such upload intent", now)
                return Outcome(event_type, "orphan", uploaded.file_id, upload_id, "no such upload intent")
            if intent.status == "cancelled":  # the cancel came first: it wins (docs/api.md, DELETE /uploads)
                self._store.reviews.record_for_review("rejected", uploaded, CANCELLED_REASON, now, intent)
                return Outcome(event_type, "rejected", uploaded.file_id, upload_id, CANCELLED_REASON)
            if intent.status == "completed":
                if intent.file_id == uploaded.file_id:
                    return Outcome(event_type, "duplicate", uploaded.file_id, upload_id)
                reason = f"intent already completed with another file ({intent.file_id})"
                self._store.reviews.record_for_review("rejected", uploaded, reason, now, intent)
                return Outcome(event_type, "rejected", uploaded.file_id, upload_id, reason)
            try:
                quota = self._quota_terms(intent.tier)
                breaks = self._store.videos.complete_upload(intent, Video.attribute(intent, uploaded, now), now, quota)
            except CompletionLost:
                continue
            except FileOwnedElsewhere:
                reason = "file id already attributed to another user"
                self._store.reviews.record_for_review("rejected", uploaded, reason, now, intent)
                return Outcome(event_type, "rejected", uploaded.file_id, upload_id, reason)
            _log_breaks(uploaded.file_id, breaks)
            created = _epoch(uploaded.media.vod_create_time)
            return Outcome(event_type, "attributed", uploaded.file_id, upload_id, uploaded_at=created)
        raise CompletionLost(f"upload {upload_id} kept changing under us")

    def _quota_terms(self, tier: str) -> QuotaTerms:
        return QuotaTerms.of(self._policy.tier_by_name(tier))


def _log_breaks(file_id: str, breaks: list[QuotaBreak]) -> None:
    for broken in breaks:
        logger.warning("upload broke a quota", extra={"fileId": file_id, **broken.event_data()})


def _epoch(timestamp: str | None) -> float | None:
    """VOD's ISO 8601 times (`2026-11-24T10:00:00Z`), as epoch seconds; None when absent or unreadable."""
    if not timestamp:
        return None
    try:
        moment = datetime.fromisoformat(timestamp)
    except ValueError:
        return None
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()
