"""The usage aggregate: each user's `USER#<sub>/USAGE` counters, and what a quota break adds to a transaction.

The counters change only inside the transactions that attribute and delete videos (chalicelib/storage/videos.py:
`complete_upload`, `complete_deletion`), from the items built here. Why concurrent uploads cannot take
`bytesStored` past the quota is `Attribution`'s docstring.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from msgspec import Struct

from chalicelib.errors import ServiceUnavailable
from chalicelib.items import (
    Item,
    as_n,
    as_s,
    get_n,
    limits_key,
    slot_ends,
    string_set,
    upload_key,
    usage_key,
)
from chalicelib.quotas import QuotaBreak, QuotaTerms, Usage
from chalicelib.storage.outbox import outbox_put
from chalicelib.storage.table import Table

if TYPE_CHECKING:
    from chalicelib.videos import Video

_BATCH_GET_LIMIT = 100
_BATCH_GET_ATTEMPTS = 3  # BatchGetItem calls for one batch: it leaves keys unread when throttled


class Attribution(Struct):
    """How one attribution counts against its owner's usage, decided with DynamoDB in the same transaction.

    Why `bytesStored` never passes `maxStoredBytes`, however many of a user's uploads are attributed at once:
    it changes only in two kinds of transaction, both on the one item `USER#<sub>/USAGE`.
    - An attribution adds the upload's size only with the condition `bytesStored <= maxStoredBytes - size`
      (DynamoDB conditions do no arithmetic: `QuotaTerms.room_for` is the operand), so each one that adds
      leaves `bytesStored <= maxStoredBytes`. When the condition fails, the transaction is cancelled whole and
      retried as an over-quota attribution: the video is marked and published, and nothing is added (its
      condition, `bytesStored > room`, sends it back to counting if a deletion made room meanwhile).
    - A deletion subtracts what the video's attribution added (its `countedBytes`).
    DynamoDB applies a transaction's condition and update on an item atomically, and transactions on the same
    item are serialisable (a concurrent one is cancelled with TransactionConflict and retried): every
    attribution is checked against the counter as every earlier one left it. So the counter overshoots by
    nothing, better than the one in-flight upload per user that a check at `POST /uploads` alone allows. What
    VOD holds beyond it is exactly the uploads marked `bytes`: with `overQuota: delete` the sweep deletes
    them; with `review` they wait, marked, for someone to look.
    """

    size: int
    terms: QuotaTerms
    fits: bool = True
    deleted: bool = False  # VOD's FileDeleted came first: nothing to count

    @classmethod
    def start(cls, size: int, terms: QuotaTerms) -> Attribution:
        """Counting is tried first unless no usage at all leaves room for `size`."""
        room = terms.room_for(size)
        return cls(size, terms, fits=room is None or room >= 0)

    @property
    def counted(self) -> int:
        return self.size if self.fits and not self.deleted else 0

    def breaks(self, duration: float | None) -> list[QuotaBreak]:
        if self.deleted:
            return []
        found = [] if self.fits else [QuotaBreak("bytes", self.terms.max_stored_bytes or 0, self.size, self.terms.rule)]
        over_time = self.terms.duration_break(duration)
        return found + ([over_time] if over_time else [])


class UsageStorage:
    def __init__(self, table: Table) -> None:
        self._table = table

    def usage(self, owner: str, now: int) -> Usage:
        """The owner's counters, with the open intents (those whose upload window has not ended) and the bytes
        they declared. Reads, not a reservation: see chalicelib/quotas.py."""
        items = {item["sk"]["S"]: item for item in self._batch_get([usage_key(owner), limits_key(owner)])}
        counters, slots = items.get("USAGE", {}), string_set(items.get("LIMITS", {}), "openSlots")
        open_ids = [slot.split("#", 1)[1] for slot, ends in zip(slots, slot_ends(slots), strict=True) if ends > now]
        declared = self._batch_get([upload_key(upload_id) for upload_id in open_ids], "fileSize")
        return Usage(
            bytes_stored=get_n(counters, "bytesStored") or 0,
            videos=get_n(counters, "videos") or 0,
            open_intents=len(open_ids),
            bytes_reserved=sum(get_n(item, "fileSize") or 0 for item in declared),
        )

    def _batch_get(self, keys: list[Item], projection: str | None = None) -> list[Item]:
        """The items of `keys` that exist, read consistently (BatchGetItem: a transaction in flight on one of them
        does not fail the read, as it would TransactGetItems')."""
        found: list[Item] = []
        for start in range(0, len(keys), _BATCH_GET_LIMIT):
            wanted: dict[str, Any] = {"Keys": keys[start : start + _BATCH_GET_LIMIT], "ConsistentRead": True}
            if projection:
                wanted["ProjectionExpression"] = projection
            request: dict[str, Any] = {self._table.name: wanted}
            for _ in range(_BATCH_GET_ATTEMPTS):
                answer = self._table.call("batch_get_item", RequestItems=request)
                found += answer["Responses"].get(self._table.name, [])
                request = answer.get("UnprocessedKeys") or {}
                if not request:
                    break
            else:
                raise ServiceUnavailable("storage is busy, retry")  # throttled: keys left unread
        return found

    # -- what the attribution and deletion transactions carry --------------------------------------------------

    def video_attributes(self, tier: str, attribution: Attribution, breaks: list[QuotaBreak]) -> dict[str, Any]:
        """Set on the video by its attribution: what it counted (a deletion gives it back), its tier (a duration
        reported later is checked against it), and the quotas it broke."""
        attributes: dict[str, Any] = {"countedBytes": as_n(attribution.counted), "tier": as_s(tier)}
        if breaks:
            attributes |= {
                "quotaExceeded": {"SS": sorted({b.quota for b in breaks})},
                "overQuota": as_s(breaks[0].rule),
            }
        return attributes

    def count_item(self, owner: str, attribution: Attribution) -> Item:
        """The counters' update: the size if it fits (conditioned on it), else only the video."""
        room = attribution.terms.room_for(attribution.size)
        update: dict[str, Any] = {
            "TableName": self._table.name,
            "Key": usage_key(owner),
            "UpdateExpression": "ADD bytesStored :size, videos :one",
            "ExpressionAttributeValues": {":size": as_n(attribution.counted), ":one": as_n(1)},
        }
        if room is not None and room >= 0:
            update["ExpressionAttributeValues"][":room"] = as_n(room)
            update["ConditionExpression"] = (
                "attribute_not_exists(bytesStored) OR bytesStored <= :room"
                if attribution.fits
                else "bytesStored > :room"
            )
        return {"Update": update}

    def uncount_item(self, video: Video) -> Item:
        """What a video's deletion gives back: its `countedBytes`, and one video."""
        return {
            "Update": {
                "TableName": self._table.name,
                "Key": usage_key(video.owner),
                "UpdateExpression": "ADD bytesStored :size, videos :one",
                "ExpressionAttributeValues": {":size": as_n(-video.counted_bytes), ":one": as_n(-1)},
            }
        }

    def break_items(
        self, owner: str, upload_id: str, file_id: str, breaks: list[QuotaBreak], now: int
    ) -> dict[str, Item]:
        """A `quota.exceeded` outbox row per quota broken."""
        return {f"event {b.quota}": outbox_put(self._table, b.event(owner, upload_id, file_id, now)) for b in breaks}
