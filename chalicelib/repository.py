"""All DynamoDB access. One table, keys `pk`/`sk`, TTL attribute `ttl` (see infra/table.json).

Items:
  UPLOAD#<id>  / UPLOAD       upload intent and one-time signature ledger
  USER#<sub>   / LIMITS       `openSlots`: string set of "<windowEnd>#<uploadId>" for open intents
  USER#<sub>   / RATE#<hour>  intents created in that hour (expires after two hours)
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from typing import Any

from chalicelib.errors import Conflict, LimitExceeded, NotFound, ServiceUnavailable
from chalicelib.uploads import ClientFields, IntentLimits, SignatureTerms, UploadIntent

Item = dict[str, Any]

_TRANSACTION_ATTEMPTS = 4


def _s(value: str) -> dict[str, str]:
    return {"S": value}


def _n(value: int) -> dict[str, str]:
    return {"N": str(value)}


def _opt_s(value: str | None) -> dict[str, Any]:
    return {"NULL": True} if value is None else _s(value)


def _opt_n(value: int | None) -> dict[str, Any]:
    return {"NULL": True} if value is None else _n(value)


def _get_s(item: Mapping[str, Any], name: str) -> str | None:
    value = item.get(name)
    return value["S"] if value and "S" in value else None


def _get_n(item: Mapping[str, Any], name: str) -> int | None:
    value = item.get(name)
    return int(value["N"]) if value and "N" in value else None


def _req_s(item: Mapping[str, Any], name: str) -> str:
    value = _get_s(item, name)
    if value is None:
        raise ValueError(f"item lacks {name}")
    return value


def _req_n(item: Mapping[str, Any], name: str) -> int:
    value = _get_n(item, name)
    if value is None:
        raise ValueError(f"item lacks {name}")
    return value


def upload_key(upload_id: str) -> dict[str, Any]:
    return {"pk": _s(f"UPLOAD#{upload_id}"), "sk": _s("UPLOAD")}


def limits_key(owner: str) -> dict[str, Any]:
    return {"pk": _s(f"USER#{owner}"), "sk": _s("LIMITS")}


def intent_to_item(intent: UploadIntent) -> Item:
    terms, client = intent.terms, intent.client
    return {
        **upload_key(intent.upload_id),
        "type": _s("upload"),
        "owner": _s(intent.owner),
        "tier": _s(intent.tier),
        "status": _s(intent.status),
        "createdAt": _n(intent.created_at),
        "windowEndsAt": _n(intent.window_ends_at),
        "ttl": _n(intent.expires_at),
        "openSlot": _s(intent.open_slot),
        "signaturesMinted": _n(intent.signatures_minted),
        "maxSignatures": _n(intent.max_signatures),
        "procedure": _opt_s(terms.procedure),
        "classId": _n(terms.class_id),
        "storageRegion": _opt_s(terms.storage_region),
        "vodSubAppId": _opt_n(terms.vod_sub_app_id),
        "oneTimeValid": {"BOOL": terms.one_time},
        "taskPriority": _n(terms.task_priority),
        "taskNotifyMode": _s(terms.task_notify_mode),
        "signatureTtl": _n(terms.ttl_seconds),
        "title": _opt_s(client.title),
        "fileName": _opt_s(client.file_name),
        "fileSize": _opt_n(client.file_size),
        "contentType": _opt_s(client.content_type),
        "withCover": {"BOOL": client.with_cover},
        "metadata": _opt_s(None if client.metadata is None else json.dumps(client.metadata, separators=(",", ":"))),
        "fileId": _opt_s(intent.file_id),
        "completedAt": _opt_n(intent.completed_at),
    }


def item_to_intent(item: Mapping[str, Any]) -> UploadIntent:
    metadata = _get_s(item, "metadata")
    status = _req_s(item, "status")
    return UploadIntent(
        upload_id=_req_s(item, "pk").removeprefix("UPLOAD#"),
        owner=_req_s(item, "owner"),
        tier=_req_s(item, "tier"),
        status="completed" if status == "completed" else "open",
        created_at=_req_n(item, "createdAt"),
        window_ends_at=_req_n(item, "windowEndsAt"),
        expires_at=_req_n(item, "ttl"),
        terms=SignatureTerms(
            procedure=_get_s(item, "procedure"),
            class_id=_req_n(item, "classId"),
            storage_region=_get_s(item, "storageRegion"),
            vod_sub_app_id=_get_n(item, "vodSubAppId"),
            one_time=bool(item.get("oneTimeValid", {}).get("BOOL")),
            task_priority=_req_n(item, "taskPriority"),
            task_notify_mode=_req_s(item, "taskNotifyMode"),
            ttl_seconds=_req_n(item, "signatureTtl"),
        ),
        client=ClientFields(
            title=_get_s(item, "title"),
            file_name=_get_s(item, "fileName"),
            file_size=_get_n(item, "fileSize"),
            content_type=_get_s(item, "contentType"),
            with_cover=bool(item.get("withCover", {}).get("BOOL")),
            metadata=None if metadata is None else json.loads(metadata),
        ),
        signatures_minted=_req_n(item, "signaturesMinted"),
        max_signatures=_req_n(item, "maxSignatures"),
        file_id=_get_s(item, "fileId"),
        completed_at=_get_n(item, "completedAt"),
    )


class Repository:
    def __init__(self, client: Any, table_name: str, sleep: Callable[[float], None] = time.sleep) -> None:
        self._db = client
        self._table = table_name
        self._sleep = sleep

    # -- upload intents -------------------------------------------------------------------------

    def create_intent(self, intent: UploadIntent, limits: IntentLimits, now: int) -> None:
        """Intent put + open-intent set + hourly counter, in one transaction (one round trip)."""
        hour = now // 3600
        items = [
            {
                "Put": {
                    "TableName": self._table,
                    "Item": intent_to_item(intent),
                    "ConditionExpression": "attribute_not_exists(pk)",
                }
            },
            {
                "Update": {
                    "TableName": self._table,
                    "Key": limits_key(intent.owner),
                    "UpdateExpression": "ADD openSlots :slot",
                    "ConditionExpression": "attribute_not_exists(openSlots) OR size(openSlots) < :max",
                    "ExpressionAttributeValues": {
                        ":slot": {"SS": [intent.open_slot]},
                        ":max": _n(limits.max_open_intents),
                    },
                    "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
                }
            },
            {
                "Update": {
                    "TableName": self._table,
                    "Key": {"pk": _s(f"USER#{intent.owner}"), "sk": _s(f"RATE#{hour}")},
                    "UpdateExpression": "ADD intents :one SET #ttl = :ttl",
                    "ConditionExpression": "attribute_not_exists(intents) OR intents < :max",
                    "ExpressionAttributeNames": {"#ttl": "ttl"},
                    "ExpressionAttributeValues": {
                        ":one": _n(1),
                        ":ttl": _n((hour + 2) * 3600),
                        ":max": _n(limits.max_intents_per_hour),
                    },
                }
            },
        ]
        pruned = False
        for attempt in range(_TRANSACTION_ATTEMPTS):
            reasons = self._transact(items)
            if reasons is None:
                return
            if reasons[2].get("Code") == "ConditionalCheckFailed":
                raise LimitExceeded(
                    f"at most {limits.max_intents_per_hour} uploads per hour",
                    "intents_per_hour",
                    (hour + 1) * 3600 - now,
                )
            if reasons[1].get("Code") == "ConditionalCheckFailed":
                slots = reasons[1].get("Item", {}).get("openSlots", {}).get("SS", [])
                expired = [slot for slot in slots if int(slot.split("#", 1)[0]) <= now]
                if expired and not pruned:
                    self._release_slots(intent.owner, expired)
                    pruned = True
                    continue
                earliest = min((int(slot.split("#", 1)[0]) for slot in slots), default=now + 60)
                raise LimitExceeded(f"at most {limits.max_open_intents} open uploads", "open_intents", earliest - now)
            if reasons[0].get("Code") == "ConditionalCheckFailed":
                raise Conflict("upload id collision, retry")
            self._sleep(0.05 * (attempt + 1))  # TransactionConflict: another request holds an item
        raise ServiceUnavailable("the table is busy, retry")

    def record_signature(self, upload_id: str, owner: str, now: int) -> UploadIntent:
        """Count one more signature for an open intent of `owner`; returns the updated intent."""
        from botocore.exceptions import ClientError

        try:
            response = self._db.update_item(
                TableName=self._table,
                Key=upload_key(upload_id),
                UpdateExpression="ADD signaturesMinted :one",
                ConditionExpression=(
                    "#owner = :owner AND #status = :open AND signaturesMinted < maxSignatures AND windowEndsAt > :now"
                ),
                ExpressionAttributeNames={"#owner": "owner", "#status": "status"},
                ExpressionAttributeValues={":one": _n(1), ":owner": _s(owner), ":open": _s("open"), ":now": _n(now)},
                ReturnValues="ALL_NEW",
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )
        except ClientError as exc:
            if exc.response["Error"]["Code"] != "ConditionalCheckFailedException":
                raise
            old = exc.response.get("Item")
            if not old or _get_s(old, "owner") != owner:
                raise NotFound("no such upload") from None
            intent = item_to_intent(old)
            if intent.status != "open":
                raise Conflict("upload already completed") from None
            if intent.signatures_minted >= intent.max_signatures:
                raise LimitExceeded(
                    f"at most {intent.max_signatures} signatures per upload",
                    "signatures_per_intent",
                    intent.window_ends_at - now,
                ) from None
            raise Conflict("upload window has closed; start a new upload") from None
        return item_to_intent(response["Attributes"])

    def get_intent(self, upload_id: str) -> UploadIntent | None:
        response = self._db.get_item(TableName=self._table, Key=upload_key(upload_id), ConsistentRead=True)
        item = response.get("Item")
        return None if item is None else item_to_intent(item)

    def open_slots(self, owner: str) -> list[str]:
        response = self._db.get_item(TableName=self._table, Key=limits_key(owner), ConsistentRead=True)
        return list(response.get("Item", {}).get("openSlots", {}).get("SS", []))

    # -- helpers --------------------------------------------------------------------------------

    def _release_slots(self, owner: str, slots: list[str]) -> None:
        self._db.update_item(
            TableName=self._table,
            Key=limits_key(owner),
            UpdateExpression="DELETE openSlots :slots",
            ExpressionAttributeValues={":slots": {"SS": slots}},
        )

    def _transact(self, items: list[dict[str, Any]]) -> list[dict[str, Any]] | None:
        """Run a transaction; None on success, else the per-item cancellation reasons."""
        try:
            self._db.transact_write_items(TransactItems=items)
        except self._db.exceptions.TransactionCanceledException as exc:
            reasons: list[dict[str, Any]] = exc.response.get("CancellationReasons") or []
            return reasons + [{}] * (len(items) - len(reasons))
        return None
