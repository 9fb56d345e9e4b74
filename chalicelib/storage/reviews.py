"""Uploads kept for review (nobody could be matched to them, or they were rejected), until the sweep
closes them: deleted from VOD, or found owned."""

from __future__ import annotations

from typing import Any, Literal

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
from chalicelib.storage.table import Table
from chalicelib.uploads import UploadIntent

ReviewKind = Literal["orphan", "rejected"]


class ReviewStorage:
    def __init__(self, table: Table) -> None:
        self._table = table

    def record_for_review(
        self, kind: ReviewKind, uploaded: UploadedFile, reason: str, now: int, intent: UploadIntent | None = None
    ) -> None:
        """Keep an unattributed upload for review or deletion; the first record of a FileId wins."""
        from botocore.exceptions import ClientError

        item = review_item(kind, uploaded, reason, now, intent)
        try:
            self._table.call(
                "put_item", TableName=self._table.name, Item=item, ConditionExpression="attribute_not_exists(pk)"
            )
        except ClientError as exc:
            if exc.response["Error"]["Code"] != "ConditionalCheckFailedException":
                raise

    def pending(self, limit: int = 100) -> list[dict[str, Any]]:
        """The uploads kept for review that the sweep has not closed yet, newest first."""
        return [
            item_to_review(item) for item in self._table.index_partition(REVIEW_PARTITION, limit, newest_first=True)
        ]

    def reviews_received_before(self, moment: int, limit: int) -> list[dict[str, Any]]:
        """The oldest uploads kept for review that arrived before `moment`, oldest first."""
        return [item_to_review(item) for item in self._table.index_partition(REVIEW_PARTITION, limit, before=moment)]

    def mark_review_deleted(self, file_id: str, now: int) -> None:
        """The upload was deleted from VOD: it leaves the review list, and its record stays as the trace."""
        assignments = "deletedFromVodAt = if_not_exists(deletedFromVodAt, :now)"
        self._close_review(file_id, REVIEW_DELETED_PARTITION, assignments, {":now": as_n(now)})

    def mark_review_owned(self, file_id: str, owner: str, now: int) -> None:
        """The reviewed upload's FileId is attributed to `owner`, so its file stays in VOD: the item leaves the
        review list, and its record stays with who owns the file."""
        assignments = "keptOwnedAt = if_not_exists(keptOwnedAt, :now), ownedBy = :owner"
        self._close_review(file_id, REVIEW_OWNED_PARTITION, assignments, {":now": as_n(now), ":owner": as_s(owner)})

    def _close_review(self, file_id: str, partition: str, assignments: str, values: dict[str, Any]) -> None:
        self._table.call(
            "update_item",
            TableName=self._table.name,
            Key=review_key(file_id),
            UpdateExpression=f"SET {assignments}, gsi1pk = :closed",
            ConditionExpression="attribute_exists(pk)",
            ExpressionAttributeValues={**values, ":closed": as_s(partition)},
        )
