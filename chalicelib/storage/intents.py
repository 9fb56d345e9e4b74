"""Upload intents: their create (with the owner's open-slot and hourly limits), signatures, and their end
by abandon, expiry or cancel. Their completion is the video's attribution (chalicelib/storage/videos.py)."""

from __future__ import annotations

from chalicelib.domain_events import DomainEvent, upload_expired
from chalicelib.errors import CompletionLost, IdCollision, LimitReached, ServiceUnavailable, SignatureRefused
from chalicelib.items import (
    ABANDONED,
    CANCELLED,
    EXPIRED,
    Item,
    as_n,
    as_s,
    get_s,
    intent_to_item,
    item_to_intent,
    limits_key,
    rate_key,
    slot_ends,
    string_set,
    upload_key,
)
from chalicelib.storage.outbox import outbox_put
from chalicelib.storage.table import Reasons, Table, failed, new_token
from chalicelib.uploads import IntentLimits, UploadIntent


def release_slot_item(table: Table, intent: UploadIntent) -> Item:
    """The transaction item that frees the open slot `intent` holds in its owner's limits."""
    return {
        "Update": {
            "TableName": table.name,
            "Key": limits_key(intent.owner),
            "UpdateExpression": "DELETE openSlots :slot",
            "ExpressionAttributeValues": {":slot": {"SS": [intent.open_slot]}},
        }
    }


class IntentStorage:
    def __init__(self, table: Table) -> None:
        self._table = table

    def create_intent(self, intent: UploadIntent, limits: IntentLimits, now: int) -> None:
        """Intent put + open-intent set + hourly counter, in one transaction (one round trip). Raises
        LimitReached for a full limit, IdCollision if the id exists."""
        hour = now // 3600
        items: dict[str, Item] = {
            "intent": {
                "Put": {
                    "TableName": self._table.name,
                    "Item": intent_to_item(intent, new_token()),
                    "ConditionExpression": "attribute_not_exists(pk)",
                }
            },
            "open slots": {
                "Update": {
                    "TableName": self._table.name,
                    "Key": limits_key(intent.owner),
                    "UpdateExpression": "ADD openSlots :slot",
                    "ConditionExpression": "attribute_not_exists(openSlots) OR size(openSlots) < :max",
                    "ExpressionAttributeValues": {
                        ":slot": {"SS": [intent.open_slot]},
                        ":max": as_n(limits.max_open_intents),
                    },
                    "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
                }
            },
            "hourly count": {
                "Update": {
                    "TableName": self._table.name,
                    "Key": rate_key(intent.owner, hour),
                    "UpdateExpression": "ADD intents :one SET #ttl = :ttl",
                    "ConditionExpression": "attribute_not_exists(intents) OR intents < :max",
                    "ExpressionAttributeNames": {"#ttl": "ttl"},
                    "ExpressionAttributeValues": {
                        ":one": as_n(1),
                        ":ttl": as_n((hour + 2) * 3600),
                        ":max": as_n(limits.max_intents_per_hour),
                    },
                }
            },
        }
        pruned = False

        def settle(reasons: Reasons) -> bool:
            nonlocal pruned
            if failed(reasons["hourly count"]):
                raise LimitReached("intents_per_hour", (hour + 1) * 3600)
            if failed(reasons["open slots"]):
                slots = string_set(reasons["open slots"].get("Item", {}), "openSlots")
                expired = [slot for slot, ends in zip(slots, slot_ends(slots), strict=True) if ends <= now]
                if expired and not pruned:
                    self._release_slots(intent.owner, expired)
                    pruned = True
                    return True
                raise LimitReached("open_intents", min(slot_ends(slots), default=now + 60))
            if failed(reasons["intent"]):
                raise IdCollision(intent.upload_id)
            return False

        self._table.commit(items, settle, unanswered=lambda: self._abandon(intent))

    def renew_signature(self, upload_id: str, owner: str, now: int) -> UploadIntent:
        """Count one more signature for an open intent of `owner`; returns the updated intent, or raises
        SignatureRefused with the intent as stored.

        Signatures are counted as a set of tokens, one per request. A retry of an update that applied but
        whose answer was lost finds its token already there instead of counting a second signature; and a
        request that gives up voids its token, so that its update, if it lands later, cannot count a
        signature nobody received (the void also removes the token if the update landed first)."""
        from botocore.exceptions import ClientError

        token = new_token()
        try:
            response = self._table.call(
                "update_item",
                TableName=self._table.name,
                Key=upload_key(upload_id),
                UpdateExpression="ADD signatureTokens :token",
                ConditionExpression=(
                    "#owner = :owner AND #status = :open AND size(signatureTokens) < maxSignatures"
                    " AND windowEndsAt > :now AND NOT contains(signatureTokens, :id)"
                    " AND NOT contains(voidedTokens, :id)"
                ),
                ExpressionAttributeNames={"#owner": "owner", "#status": "status"},
                ExpressionAttributeValues={
                    ":token": {"SS": [token]}, ":id": as_s(token), ":owner": as_s(owner), ":open": as_s("open"),
                    ":now": as_n(now),
                },
                ReturnValues="ALL_NEW",
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )  # fmt: skip
        except ClientError as exc:
            if exc.response["Error"]["Code"] != "ConditionalCheckFailedException":
                raise
            old = exc.response.get("Item")
            if old and token in string_set(old, "signatureTokens"):
                return item_to_intent(old)  # our own earlier attempt applied
            if not old or get_s(old, "owner") != owner:
                raise SignatureRefused(None) from None  # none of this owner's (an abandoned one has no owner)
            raise SignatureRefused(item_to_intent(old)) from None
        except ServiceUnavailable:
            self._table.send_unawaited(
                "void a signature that was not delivered",
                lambda: self._table.client.update_item(
                    TableName=self._table.name,
                    Key=upload_key(upload_id),
                    UpdateExpression="DELETE signatureTokens :token ADD voidedTokens :token",
                    ConditionExpression="attribute_exists(pk)",
                    ExpressionAttributeValues={":token": {"SS": [token]}},
                ),
                uploadId=upload_id,
            )
            raise
        return item_to_intent(response["Attributes"])

    def get_intent(self, upload_id: str) -> UploadIntent | None:
        response = self._table.call(
            "get_item", TableName=self._table.name, Key=upload_key(upload_id), ConsistentRead=True
        )
        item = response.get("Item")
        if item is None or get_s(item, "status") == ABANDONED:
            return None
        return item_to_intent(item)

    def _abandon(self, intent: UploadIntent) -> None:
        """A create gave up while storage stalled, so its transaction may still commit later, holding one
        of the user's open slots for an intent whose signature nobody received. One transaction settles
        both orders: if the intent is not there yet, a tombstone makes its create fail when it lands; if it
        is, it is marked abandoned and its slot released."""
        items = [
            {
                "Update": {
                    "TableName": self._table.name,
                    "Key": upload_key(intent.upload_id),
                    "UpdateExpression": (
                        "SET #status = :abandoned, #ttl = if_not_exists(#ttl, :ttl) REMOVE gsi1pk, gsi1sk"
                    ),
                    "ConditionExpression": (
                        "attribute_not_exists(pk) OR (#status = :open AND size(signatureTokens) = :one"
                        " AND createdAt = :created)"
                    ),
                    "ExpressionAttributeNames": {"#status": "status", "#ttl": "ttl"},
                    "ExpressionAttributeValues": {
                        ":abandoned": as_s(ABANDONED),
                        ":open": as_s("open"),
                        ":one": as_n(1),
                        ":created": as_n(intent.created_at),
                        ":ttl": as_n(intent.expires_at),
                    },
                }
            },
            release_slot_item(self._table, intent),
        ]

        self._table.send_unawaited(
            "abandon an unanswered upload intent",
            lambda: self._table.client.transact_write_items(TransactItems=items, ClientRequestToken=new_token()),
            uploadId=intent.upload_id,
        )

    def expire_closed_intents(self, partition: str, now: int, limit: int) -> tuple[int, list[str]]:
        """Close as expired up to `limit` intents of one open-intent partition whose last signature expired
        before `now`, releasing their open slots and publishing `upload.expired`: returns how many were
        looked at, and the ids expired. Each one leaves the partition, expired or not (an intent completed
        meanwhile already had)."""
        items = self._table.index_partition(partition, limit, before=now)
        return len(items), [intent.upload_id for intent in map(item_to_intent, items) if self._expire(intent, now)]

    def _expire(self, intent: UploadIntent, now: int) -> bool:
        items: dict[str, Item] = {
            "intent": {
                "Update": {
                    "TableName": self._table.name,
                    "Key": upload_key(intent.upload_id),
                    "UpdateExpression": "SET #status = :expired, expiredAt = :now REMOVE gsi1pk, gsi1sk",
                    "ConditionExpression": "#status = :open",
                    "ExpressionAttributeNames": {"#status": "status"},
                    "ExpressionAttributeValues": {
                        ":expired": as_s(EXPIRED), ":open": as_s("open"), ":now": as_n(now),
                    },
                }
            },
            "open slot": release_slot_item(self._table, intent),
            "event": outbox_put(self._table, upload_expired(intent, now)),
        }  # fmt: skip

        def settle(reasons: Reasons) -> bool:
            if failed(reasons["intent"]) or failed(reasons["event"]):
                raise CompletionLost(intent.upload_id)  # completed, abandoned or expired since the index was read
            return False

        try:
            self._table.commit(items, settle)
        except CompletionLost:
            return False
        return True

    def cancel_intent(self, intent: UploadIntent, event: DomainEvent) -> None:
        """The intent, still as read (open or expired), becomes cancelled at the event's time: it leaves the
        sweep's work list, its open slot is released and `event` (its `upload.cancelled`) is put in the outbox,
        in one transaction. Raises CompletionLost if the intent changed since it was read (attributed, cancelled
        or expired meanwhile)."""
        items: dict[str, Item] = {
            "intent": {
                "Update": {
                    "TableName": self._table.name,
                    "Key": upload_key(intent.upload_id),
                    "UpdateExpression": "SET #status = :cancelled, cancelledAt = :now REMOVE gsi1pk, gsi1sk",
                    "ConditionExpression": "#owner = :owner AND #status = :was",
                    "ExpressionAttributeNames": {"#status": "status", "#owner": "owner"},
                    "ExpressionAttributeValues": {
                        ":cancelled": as_s(CANCELLED), ":now": as_n(event.occurred_at), ":owner": as_s(intent.owner),
                        ":was": as_s(intent.status),
                    },
                }
            },
            "open slot": release_slot_item(self._table, intent),
            "event": outbox_put(self._table, event),
        }  # fmt: skip

        def settle(reasons: Reasons) -> bool:
            # The event's id is the intent's own: its row exists only if the intent was cancelled already.
            if failed(reasons["intent"]) or failed(reasons["event"]):
                raise CompletionLost(intent.upload_id)
            return False

        self._table.commit(items, settle)

    def open_slots(self, owner: str) -> list[str]:
        response = self._table.call("get_item", TableName=self._table.name, Key=limits_key(owner), ConsistentRead=True)
        return string_set(response.get("Item", {}), "openSlots")

    def _release_slots(self, owner: str, slots: list[str]) -> None:
        self._table.call(
            "update_item",
            TableName=self._table.name,
            Key=limits_key(owner),
            UpdateExpression="DELETE openSlots :slots",
            ExpressionAttributeValues={":slots": {"SS": slots}},
        )
