"""Uploads kept for review (nobody could be matched to them, or they were rejected), until the sweep
closes them: deleted from VOD, or found owned."""

from __future__ import annotations

import logging
from typing import Any, Literal

from chalicelib.domain_events import DomainEvent, upload_kept_for_review, upload_rejected
from chalicelib.events import UploadedFile
from chalicelib.items import (
    REVIEW_DELETED_PARTITION,
    REVIEW_OWNED_PARTITION,
    REVIEW_PARTITION,
    as_n,
    as_s,
    item_to_review,
    review_item,
    review_key,
)
from chalicelib.storage.outbox import outbox_put
from chalicelib.storage.table import AlreadyPublished, Reasons, Table, failed
from chalicelib.uploads import UploadIntent

logger = logging.getLogger("vodupload")

ReviewKind = Literal["orphan", "rejected"]


class ReviewStorage:
    def __init__(self, table: Table) -> None:
        self._table = table

    def record_for_review(
        self, kind: ReviewKind, uploaded: UploadedFile, reason: str, now: int, intent: UploadIntent | None = None
    ) -> None:
        """Keep an unattributed upload for review or deletion, and publish `upload.kept_for_review`; the first
        record of a FileId wins, and a later one writes nothing."""
        event = upload_kept_for_review(kind, uploaded, reason, now, intent)
        items = {
            "review": {
                "Put": {
                    "TableName": self._table.name,
                    "Item": review_item(kind, uploaded, reason, now, intent),
                    "ConditionExpression": "attribute_not_exists(pk)",
                }
            },
            "event": outbox_put(self._table, event),
        }

        def settle(reasons: Reasons) -> bool:
            if failed(reasons["review"]) or failed(reasons["event"]):
                raise AlreadyPublished(event.event_id)  # the FileId's first record, and its event, stand
            return False

        try:
            self._table.commit(items, settle)
        except AlreadyPublished:
            pass

    def pending(self, limit: int = 100) -> list[dict[str, Any]]:
        """The uploads kept for review that the sweep has not closed yet, newest first."""
        return [
            item_to_review(item) for item in self._table.index_partition(REVIEW_PARTITION, limit, newest_first=True)
        ]

    def reviews_received_before(self, moment: int, limit: int) -> list[dict[str, Any]]:
        """The oldest uploads kept for review that arrived before `moment`, oldest first."""
        return [item_to_review(item) for item in self._table.index_partition(REVIEW_PARTITION, limit, before=moment)]

    def mark_review_deleted(self, review: dict[str, Any], now: int) -> None:
        """The upload under `review` (as `pending` lists it) was deleted from VOD: it leaves the review list,
        its record stays as the trace, and `upload.rejected` is published."""
        assignments = "deletedFromVodAt = if_not_exists(deletedFromVodAt, :now)"
        event = upload_rejected(review, now)
        try:
            self._close_review(str(review["fileId"]), REVIEW_DELETED_PARTITION, assignments, {":now": as_n(now)}, event)
        except AlreadyPublished:
            pass  # closed so before (an earlier attempt whose answer was lost)

    def mark_review_owned(self, file_id: str, owner: str, now: int) -> None:
        """The reviewed upload's FileId is attributed to `owner`, so its file stays in VOD: the item leaves the
        review list, and its record stays with who owns the file."""
        assignments = "keptOwnedAt = if_not_exists(keptOwnedAt, :now), ownedBy = :owner"
        self._close_review(file_id, REVIEW_OWNED_PARTITION, assignments, {":now": as_n(now), ":owner": as_s(owner)})

    def _close_review(
        self, file_id: str, partition: str, assignments: str, values: dict[str, Any], event: DomainEvent | None = None
    ) -> None:
        missing = self._table.conditional_update(
            event,
            Key=review_key(file_id),
            UpdateExpression=f"SET {assignments}, gsi1pk = :closed",
            ConditionExpression="attribute_exists(pk)",
            ExpressionAttributeValues={**values, ":closed": as_s(partition)},
        )
        if missing is not None:
            logger.warning("no review record to close", extra={"fileId": file_id})
