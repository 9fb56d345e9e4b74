"""VOD events as received: counts of the types the app ignores, and the failures of pulled events until
they are parked as dead letters."""

from __future__ import annotations

from typing import Any

from chalicelib.items import (
    DEAD_LETTER_PARTITION,
    FAILED_EVENT_ERROR_CHARS,
    FAILED_EVENT_TYPE_CHARS,
    as_n,
    as_s,
    event_count_key,
    failed_event_body,
    failed_event_key,
    item_to_dead_letter,
    video_sort_key,
)
from chalicelib.storage.table import Table


class VodEventStorage:
    def __init__(self, table: Table) -> None:
        self._table = table

    def count_event(self, event_type: str) -> None:
        self._table.call(
            "update_item",
            TableName=self._table.name,
            Key=event_count_key(event_type),
            UpdateExpression="ADD #count :one",
            ExpressionAttributeNames={"#count": "count"},
            ExpressionAttributeValues={":one": as_n(1)},
        )

    def count_failure(self, digest: str, event_type: str, body: bytes, error: str, now: int) -> int:
        """One more failed attempt to apply a pulled event; returns how many there have been. The body is kept,
        cut to a bounded excerpt (`size` tells whether it was), so that the event can be replayed by hand once
        parked: the record stays within DynamoDB's item limit whatever the event's size."""
        response = self._table.call(
            "update_item",
            TableName=self._table.name,
            Key=failed_event_key(digest),
            UpdateExpression=(
                "ADD failures :one SET eventType = :type, body = :body, #size = :size, lastError = :error, "
                "lastFailedAt = :now"
            ),
            ExpressionAttributeNames={"#size": "size"},  # a reserved word
            ExpressionAttributeValues={
                ":one": as_n(1), ":type": as_s(event_type[:FAILED_EVENT_TYPE_CHARS]),
                ":body": as_s(failed_event_body(body)), ":size": as_n(len(body)),
                ":error": as_s(error[:FAILED_EVENT_ERROR_CHARS]), ":now": as_n(now),
            },
            ReturnValues="UPDATED_NEW",
        )  # fmt: skip
        return int(response["Attributes"]["failures"]["N"])

    def park(self, digest: str, now: int) -> bool:
        """Make a failed event a dead letter, listed like review items; the first parking time stays. True when
        this call parked it, False when it already was (VOD delivered it again: its confirm was lost)."""
        response = self._table.call(
            "update_item",
            TableName=self._table.name,
            Key=failed_event_key(digest),
            UpdateExpression="SET parkedAt = if_not_exists(parkedAt, :now), gsi1pk = :dead, gsi1sk = :sort",
            ExpressionAttributeValues={
                ":now": as_n(now), ":dead": as_s(DEAD_LETTER_PARTITION), ":sort": as_s(video_sort_key(now, digest)),
            },
            ReturnValues="ALL_OLD",  # the record as it was: whether it had been parked
        )  # fmt: skip
        return "parkedAt" not in response.get("Attributes", {})

    def dead_letters(self, limit: int = 100) -> list[dict[str, Any]]:
        parked = self._table.index_partition(DEAD_LETTER_PARTITION, limit, newest_first=True)
        return [item_to_dead_letter(item) for item in parked]
