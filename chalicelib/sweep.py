"""The reconciliation sweep: what no event will ever settle, settled on a schedule.

- An intent whose last signature expired with no upload seen is closed as `expired`, and its open slot is
  released if it is still held. A NewFileUpload that was still on its way (PULL keeps events for days)
  completes it all the same.
- Uploads kept for review (orphans, rejected) longer than the grace period are deleted from VOD with
  DeleteMedia only when the stage enables it (`DELETE_UNATTRIBUTED=delete`); by default the sweep only
  reports what it would delete.
- Only what nobody owns is deleted: a review item is kept for its *event* (a rejected second NewFileUpload
  of a FileId, say), not its file, which may be a user's video. Just before each deletion (and in a dry
  run) the sweep reads whether the FileId is attributed; if it is, the review item is closed as `owned`
  (in either mode: that deletes nothing) and the file is left alone. An attribution landing between that
  read and DeleteMedia is not excluded; none is expected for a file already weeks under review.
- Video deletions left `deleting` are finished once PENDING_SECONDS old, whatever DELETE_UNATTRIBUTED says:
  their owner asked for them (VOD failed while the request waited, and no retry came), or their tier's
  `delete` rule did when they broke a quota (chalicelib/quotas.py). The states: chalicelib/deletion.py.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal

from msgspec import Struct, field

from chalicelib import deadline
from chalicelib.deletion import PENDING_SECONDS, MediaLibrary, reason_for
from chalicelib.errors import ServiceUnavailable, VodUnavailable
from chalicelib.items import open_intent_partitions

if TYPE_CHECKING:
    from chalicelib.storage import Storage

logger = logging.getLogger("vodupload")

# Intents read per query, and queries per partition in one run: a backlog larger than this is worked off
# over the following runs.
BATCH = 25
MAX_BATCHES_PER_PARTITION = 40
# Uploads checked for deletion in one run; the report names at most this many.
DELETIONS_PER_RUN = 100
# The longest one DeleteMedia call may take (the VOD client's timeout).
DELETE_MEDIA_SECONDS = 5.0

Deletion = Literal["dry-run", "delete"]


class SweepReport(Struct):
    expired: int = 0
    deletion: Deletion = "dry-run"
    # Uploads kept for review past the grace period that nobody owns: deleted from VOD, or (dry run) that
    # would be.
    due_for_deletion: list[str] = field(default_factory=list)
    deleted: int = 0
    kept_owned: list[str] = field(default_factory=list)  # reviewed FileIds found attributed: closed, not deleted
    deletions_finished: int = 0  # videos whose deletion was pending (asked by their owner or tier), deleted now
    failed: int = 0  # storage or VOD calls that failed: their work is left for the next run
    finished: bool = True  # False when the run stopped at its deadline with work left

    def as_fields(self) -> dict[str, object]:
        return {
            "expired": self.expired, "deletion": self.deletion, "dueForDeletion": len(self.due_for_deletion),
            "deleted": self.deleted, "keptOwned": len(self.kept_owned),
            "deletionsFinished": self.deletions_finished, "failed": self.failed, "finished": self.finished,
        }  # fmt: skip


class ReconciliationSweep:
    def __init__(
        self,
        store: Storage,
        media: Callable[[], MediaLibrary],
        deletion: Deletion,
        grace_seconds: int,
        step_seconds: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """`media` is called only when a deletion is due (it builds the VOD client); `step_seconds` bounds
        one storage step and its retries, as a request's deadline does."""
        self._store = store
        self._media = media
        self._deletion = deletion
        self._grace_seconds = grace_seconds
        self._step_seconds = step_seconds
        self._clock = clock

    def run(self, seconds: float) -> SweepReport:
        stop_at = time.monotonic() + seconds
        now = int(self._clock())
        report = SweepReport(deletion=self._deletion)
        for partition in open_intent_partitions():
            report.finished &= self._expire_partition(partition, now, stop_at, report)
        report.finished &= self._finish_deletions(now, stop_at, report)
        report.finished &= self._delete_unattributed(now, stop_at, report)
        return report

    def _expire_partition(self, partition: str, now: int, stop_at: float, report: SweepReport) -> bool:
        """Whether the partition holds no closed intent any more (as far as this run could tell)."""
        for _ in range(MAX_BATCHES_PER_PARTITION):
            if not self._time_for_a_step(stop_at):
                return False
            try:
                with deadline.within(self._step_seconds):
                    seen, expired = self._store.intents.expire_closed_intents(partition, now, BATCH)
            except ServiceUnavailable:
                report.failed += 1
                return False
            report.expired += len(expired)
            for upload_id in expired:
                logger.info("upload intent expired", extra={"uploadId": upload_id})
            # Every intent read leaves the partition, so the next query starts over; stop once nothing is left
            # or nothing moved (the index may lag the table by a moment).
            if seen < BATCH or not expired:
                return True
        return False

    def _delete_unattributed(self, now: int, stop_at: float, report: SweepReport) -> bool:
        try:
            with deadline.within(self._step_seconds):
                due = self._store.reviews.reviews_received_before(now - self._grace_seconds, DELETIONS_PER_RUN)
        except ServiceUnavailable:
            report.failed += 1
            return False
        media: MediaLibrary | None = None
        for review in due:
            if not self._time_for_a_step(stop_at, 0.0 if self._deletion == "dry-run" else DELETE_MEDIA_SECONDS):
                return False
            file_id = str(review["fileId"])
            try:
                with deadline.within(self._step_seconds):
                    owned = self._close_if_owned(file_id, now, review)
            except ServiceUnavailable:
                report.failed += 1
                return False
            if owned:
                report.kept_owned.append(file_id)
                continue
            report.due_for_deletion.append(file_id)
            if self._deletion == "dry-run":
                logger.info("would delete an unattributed upload from VOD (dry run)", extra=review)
                continue
            media = media or self._media()
            if not self._delete(media, review, now, report):
                return False
            logger.info("deleted an unattributed upload from VOD", extra=review)
        return True

    def _close_if_owned(self, file_id: str, now: int, review: dict[str, object]) -> bool:
        """Whether the reviewed FileId is attributed to someone; if so its review item is closed, as `owned`."""
        owner = self._store.videos.file_owner(file_id)
        if owner is None:
            return False
        self._store.reviews.mark_review_owned(file_id, owner, now)
        logger.warning("kept an upload under review: its file is attributed to a user", extra=review)
        return True

    def _delete(self, media: MediaLibrary, review: dict[str, Any], now: int, report: SweepReport) -> bool:
        """DeleteMedia, then the record; False when the run should stop (the rest waits for the next run)."""
        file_id = str(review["fileId"])
        if not self._delete_in_vod(media, file_id, report):
            return False
        try:
            with deadline.within(self._step_seconds):
                self._store.reviews.mark_review_deleted(review, now)
        except ServiceUnavailable:
            report.failed += 1  # deleted from VOD; the next run finds it gone and records it
            return False
        report.deleted += 1
        return True

    def _finish_deletions(self, now: int, stop_at: float, report: SweepReport) -> bool:
        """Finish the video deletions asked for more than PENDING_SECONDS ago (past any request still at work on
        them): DeleteMedia, then the video is deleted through the deletion's one transaction (its event written,
        its usage given back), as the owner's request would have done it."""
        try:
            with deadline.within(self._step_seconds):
                pending = self._store.videos.deletions_requested_before(now - PENDING_SECONDS, DELETIONS_PER_RUN)
        except ServiceUnavailable:
            report.failed += 1
            return False
        media: MediaLibrary | None = None
        for file_id in pending:
            if not self._time_for_a_step(stop_at, DELETE_MEDIA_SECONDS):
                return False
            try:
                with deadline.within(self._step_seconds):
                    video = self._store.videos.get_video(file_id, consistent=True)
            except ServiceUnavailable:
                report.failed += 1
                return False
            if video is None or video.deleted_at is not None:
                # Not expected: the transaction that deletes a video takes it off the list.
                logger.error("a finished deletion is still listed as pending", extra={"fileId": file_id})
                continue
            media = media or self._media()
            if not self._delete_in_vod(media, file_id, report):
                return False
            reason = reason_for(video)
            try:
                with deadline.within(self._step_seconds):
                    self._store.videos.complete_deletion(video, reason, now)
            except ServiceUnavailable:
                report.failed += 1  # the next run finds the file gone from VOD and completes it
                return False
            report.deletions_finished += 1
            logger.info(
                "finished a pending video deletion", extra={"fileId": file_id, "owner": video.owner, "reason": reason}
            )
        return True

    @staticmethod
    def _delete_in_vod(media: MediaLibrary, file_id: str, report: SweepReport) -> bool:
        """DeleteMedia (a file VOD no longer has counts as deleted); False when VOD is failing, which leaves the
        rest of the run's deletions for the next run."""
        try:
            media.delete(file_id)
        except VodUnavailable as error:
            logger.warning("DeleteMedia failed", extra={"fileId": file_id, "failure": str(error)})
            report.failed += 1
            return False
        return True

    def _time_for_a_step(self, stop_at: float, vod_seconds: float = 0.0) -> bool:
        return time.monotonic() + vod_seconds + self._step_seconds < stop_at
