"""Deleting a video: its owner asks (`DELETE /videos/{fileId}`), VOD deletes the file (DeleteMedia), and the
record says so, once.

The states of a video's deletion (attributes of its VIDEO item, chalicelib/items.py):

    attributed --DELETE by its owner--> deleting --DeleteMedia done, or VOD has no such file--> deleted
                                           |
                                           | VOD failing or slow: 503 + Retry-After, the video stays `deleting`;
                                           | a retried DELETE, the hourly sweep (once PENDING_SECONDS old) or
                                           '-- VOD's FileDeleted takes it on to `deleted`
    attributed --a quota broken under its tier's `overQuota: delete` (in the attribution's transaction, or a
                 later duration's)--> deleting: the sweep takes it on to `deleted`, reason `over_quota`
    attributed --FileDeleted (the file was deleted in VOD by other means)--> deleted
    deleted    --DELETE, FileDeleted--> deleted: nothing is written, DELETE answers as the first time

- `deleting` (`deletionRequestedAt`, and a DELETION item in gsi1 under DELETING, the sweep's work list) is
  written before VOD is called, so that whatever fails afterwards, the deletion is on record and whoever
  comes next finishes it. The video is still listed meanwhile (its file is still in VOD), with its
  `deletionRequestedAt`.
- `deleted` (`deletedAt`; the video leaves its owner's listing and the DELETION item leaves DELETING) is
  written in one transaction with the `video.deleted` outbox row and its owner's usage given back
  (chalicelib/storage/usage.py), on the condition that the video is not deleted yet: one event and one
  give-back per video, whoever finishes it (the request, the sweep or FileDeleted).
- Every step is idempotent: DeleteMedia of a file VOD no longer has counts as deleted, and the transaction
  of a video already deleted writes nothing. A request and the sweep may therefore race harmlessly.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Literal, Protocol

from chalicelib import deadline
from chalicelib.errors import NotFound, ServiceUnavailable, VodUnavailable
from chalicelib.videos import Video, is_file_id

logger = logging.getLogger("vodupload")

# One DeleteMedia attempt within a request (the VOD client's timeout). An attempt is made only while it, plus
# the deletion's own storage write (one transaction), fits the request's deadline (3.5 s by default): two
# attempts when VOD is slow, more quickly failing ones would not help.
DELETE_MEDIA_REQUEST_SECONDS = 1.2
STORAGE_RESERVE_SECONDS = 0.5
_DELETE_ATTEMPTS = 2
RETRY_AFTER_SECONDS = 5
# How long a deletion is left `deleting` before the sweep finishes it: far past the deadline of the request
# that asked for it, so that the sweep does not call VOD while that request still does.
PENDING_SECONDS = 60

Reason = Literal["owner_request", "deleted_in_vod", "over_quota"]


class MediaLibrary(Protocol):
    def delete(self, file_id: str) -> bool:
        """DeleteMedia: True if VOD deleted the file now, False if it had no such file (deleted already).
        Raises VodUnavailable."""
        ...


class DeletionStore(Protocol):
    def get_video(self, file_id: str, consistent: bool = False) -> Video | None: ...

    def request_deletion(self, video: Video, now: int) -> bool: ...

    def complete_deletion(self, video: Video, reason: Reason, now: int) -> bool: ...


def reason_for(video: Video) -> Reason:
    """Why a video is deleted, when its owner's request is not what completes it: its tier's `delete` rule
    condemned it (its deletion was requested with the quota break), its owner asked, or someone deleted it in
    VOD directly."""
    if video.condemned:
        return "over_quota"
    return "owner_request" if video.deletion_requested_at is not None else "deleted_in_vod"


class VideoDeletion:
    def __init__(
        self, store: DeletionStore, media: Callable[[], MediaLibrary], clock: Callable[[], float] = time.time
    ) -> None:
        """`media` is called once a deletion reaches VOD (it builds the VOD client)."""
        self._store = store
        self._media = media
        self._clock = clock

    def delete(self, owner: str, file_id: str) -> None:
        """Delete the owner's video: done when this returns, also when it was done before. NotFound for a
        video that is not the owner's; ServiceUnavailable (503) when VOD did not delete the file in time,
        the video then being `deleting` for a retry or the sweep to finish."""
        video = self._store.get_video(file_id, consistent=True) if is_file_id(file_id) else None
        if video is None or video.owner != owner:
            raise NotFound("no such video")
        if video.deleted_at is not None:
            return
        now = int(self._clock())
        if video.deletion_requested_at is None and not self._store.request_deletion(video, now):
            return  # deleted in the meantime (VOD's FileDeleted)
        self._delete_in_vod(video)
        if self._store.complete_deletion(video, "owner_request", now):
            logger.info("video deleted", extra={"fileId": file_id, "owner": owner, "uploadId": video.upload_id})

    def _delete_in_vod(self, video: Video) -> None:
        media = self._media()
        for attempt in range(1, _DELETE_ATTEMPTS + 1):
            if deadline.remaining() < DELETE_MEDIA_REQUEST_SECONDS + STORAGE_RESERVE_SECONDS:
                break
            try:
                media.delete(video.file_id)
            except VodUnavailable as error:
                logger.warning(
                    "VOD did not delete a video's file",
                    extra={"fileId": video.file_id, "attempt": attempt, "reason": str(error)},
                )
                continue
            return
        logger.warning("video deletion left pending", extra={"fileId": video.file_id, "owner": video.owner})
        raise ServiceUnavailable(
            "VOD did not delete the file in time; the deletion is pending: retry, or it completes within the hour",
            retry_after_seconds=RETRY_AFTER_SECONDS,
        )
