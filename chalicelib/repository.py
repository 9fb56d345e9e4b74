"""All DynamoDB access. One table, keys `pk`/`sk`, TTL attribute `ttl` (see infra/stage.json).

Items:
  UPLOAD#<id>    / UPLOAD       upload intent and one-time signature ledger
  USER#<sub>     / LIMITS       `openSlots`: string set of "<windowEnd>#<uploadId>" for open intents
  USER#<sub>     / RATE#<hour>  intents created in that hour (expires after two hours)
  VIDEO#<fileId> / VIDEO        the video; in index gsi1 under OWNER#<sub> once attributed
  REVIEW#<fileId>/ REVIEW       an upload that was not attributed (orphan or rejected); gsi1 under REVIEW
  STATS#events   / <EventType>  count of ignored event types
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from chalicelib import deadline
from chalicelib.callbacks import CompletionLost, FileOwnedElsewhere
from chalicelib.errors import Conflict, LimitExceeded, NotFound, ServiceUnavailable
from chalicelib.strict_json import dump_json, load_stored_json
from chalicelib.uploads import ClientFields, IntentLimits, SignatureTerms, UploadIntent
from chalicelib.videos import PageKey, Video
from chalicelib.vod_events import ProcessingUpdate, UploadedFile

Item = dict[str, Any]

# Attempts of one logical write against TransactionConflict, and of one call against timeouts and
# throttling; both also stop at the request's deadline.
_TRANSACTION_ATTEMPTS = 4
_CALL_ATTEMPTS = 4
_BACKOFF_SECONDS = 0.05
_ABANDONED = "abandoned"
_COMPENSATION_WAIT_SECONDS = 0.2
_RETRYABLE_ERRORS = frozenset(
    {
        "ProvisionedThroughputExceededException",
        "ThrottlingException",
        "RequestLimitExceeded",
        "InternalServerError",
        "ServiceUnavailable",
        "TransactionInProgressException",  # a retry of a transaction still being applied: ask again
    }
)
# Everything stored as JSON was bounded at the door (request bodies, VOD payloads) far below this.
_STORED_JSON_DEPTH = 32

logger = logging.getLogger("vodupload")


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


def _opt_f(value: float | None) -> dict[str, Any]:
    return {"NULL": True} if value is None else {"N": repr(float(value))}


def _get_f(item: Mapping[str, Any], name: str) -> float | None:
    value = item.get(name)
    return float(value["N"]) if value and "N" in value else None


def _opt_json(value: Any) -> dict[str, Any]:
    return {"NULL": True} if value is None else _s(dump_json(value))


def _get_json(item: Mapping[str, Any], name: str) -> Any:
    text = _get_s(item, name)
    if text is None:
        return None
    value = load_stored_json(text, _STORED_JSON_DEPTH)
    if value is None and text != "null":
        logger.warning("stored JSON is unreadable and reads as null", extra={"fields": {"attribute": name}})
    return value


def video_key(file_id: str) -> dict[str, Any]:
    return {"pk": _s(f"VIDEO#{file_id}"), "sk": _s("VIDEO")}


def _video_sort_key(video: Video) -> str:
    return f"{video.received_at:010d}#{video.file_id}"


# Attributes a NewFileUpload owns on the video item; processing and deletion attributes are
# written by other events and are never touched here, so the events commute.
_VIDEO_UPLOAD_FIELDS: dict[str, Callable[[Video], dict[str, Any]]] = {
    "owner": lambda v: _s(v.owner),
    "uploadId": lambda v: _s(v.upload_id),
    "receivedAt": lambda v: _n(v.received_at),
    "name": lambda v: _opt_s(v.name),
    "title": lambda v: _opt_s(v.title),
    "fileName": lambda v: _opt_s(v.file_name),
    "mediaUrl": lambda v: _opt_s(v.media_url),
    "coverUrl": lambda v: _opt_s(v.cover_url),
    "mediaType": lambda v: _opt_s(v.media_type),
    "size": lambda v: _opt_n(v.size),
    "duration": lambda v: _opt_f(v.duration),
    "width": lambda v: _opt_n(v.width),
    "height": lambda v: _opt_n(v.height),
    "md5": lambda v: _opt_s(v.md5),
    "storageRegion": lambda v: _opt_s(v.storage_region),
    "classId": lambda v: _opt_n(v.class_id),
    "procedure": lambda v: _opt_s(v.procedure),
    "procedureTaskId": lambda v: _opt_s(v.procedure_task_id),
    "vodCreateTime": lambda v: _opt_s(v.vod_create_time),
    "metadata": lambda v: _opt_json(v.metadata),
    "gsi1pk": lambda v: _s(f"OWNER#{v.owner}"),
    "gsi1sk": lambda v: _s(_video_sort_key(v)),
}


def item_to_video(item: Mapping[str, Any]) -> Video | None:
    owner = _get_s(item, "owner")
    if owner is None:
        return None  # only processing/deletion state so far: not attributed to anyone
    return Video(
        file_id=_req_s(item, "pk").removeprefix("VIDEO#"),
        owner=owner,
        upload_id=_req_s(item, "uploadId"),
        received_at=_req_n(item, "receivedAt"),
        name=_get_s(item, "name"),
        title=_get_s(item, "title"),
        file_name=_get_s(item, "fileName"),
        media_url=_get_s(item, "mediaUrl"),
        cover_url=_get_s(item, "coverUrl"),
        media_type=_get_s(item, "mediaType"),
        size=_get_n(item, "size"),
        duration=_get_f(item, "duration"),
        width=_get_n(item, "width"),
        height=_get_n(item, "height"),
        md5=_get_s(item, "md5"),
        storage_region=_get_s(item, "storageRegion"),
        class_id=_get_n(item, "classId"),
        procedure=_get_s(item, "procedure"),
        procedure_task_id=_get_s(item, "procedureTaskId"),
        vod_create_time=_get_s(item, "vodCreateTime"),
        metadata=_get_json(item, "metadata"),
        processing_tasks={
            task_id: load_stored_json(entry["M"]["snapshot"]["S"], _STORED_JSON_DEPTH) or {"taskId": task_id}
            for task_id, entry in item.get("processing", {}).get("M", {}).items()
        },
        deleted_at=_get_n(item, "deletedAt"),
    )


def upload_key(upload_id: str) -> dict[str, Any]:
    return {"pk": _s(f"UPLOAD#{upload_id}"), "sk": _s("UPLOAD")}


def limits_key(owner: str) -> dict[str, Any]:
    return {"pk": _s(f"USER#{owner}"), "sk": _s("LIMITS")}


def intent_to_item(intent: UploadIntent, signature_token: str) -> Item:
    """The intent as first stored: `signature_token` stands for its first signature (see `record_signature`)."""
    assert intent.signatures_minted == 1, "an intent is stored with its first signature"
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
        "signatureTokens": {"SS": [signature_token]},
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
        "metadata": _opt_json(client.metadata),
        "fileId": _opt_s(intent.file_id),
        "completedAt": _opt_n(intent.completed_at),
    }


def item_to_intent(item: Mapping[str, Any]) -> UploadIntent:
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
            metadata=_get_json(item, "metadata"),
        ),
        signatures_minted=len(item.get("signatureTokens", {}).get("SS", [])),
        max_signatures=_req_n(item, "maxSignatures"),
        file_id=_get_s(item, "fileId"),
        completed_at=_get_n(item, "completedAt"),
    )


class Repository:
    def __init__(
        self,
        client: Any,
        table_name: str,
        sleep: Callable[[float], None] = time.sleep,
        attempt_seconds: float = 2.0,
    ) -> None:
        """`attempt_seconds` is the longest one call can take (the client's connect plus read timeout):
        a retry is made only if that much is left before the request's deadline."""
        self._db = client
        self._table = table_name
        self._sleep = sleep
        self._attempt_seconds = attempt_seconds

    # -- upload intents -------------------------------------------------------------------------

    def create_intent(self, intent: UploadIntent, limits: IntentLimits, now: int) -> None:
        """Intent put + open-intent set + hourly counter, in one transaction (one round trip)."""
        hour = now // 3600
        items = [
            {
                "Put": {
                    "TableName": self._table,
                    "Item": intent_to_item(intent, self._new_token()),
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
        for attempt in range(1, _TRANSACTION_ATTEMPTS + 1):
            try:
                reasons = self._transact(items)
            except ServiceUnavailable:
                self._abandon(intent)
                raise
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
            self._pause_before_retry(attempt, "TransactWriteItems", "TransactionConflict")
        raise AssertionError("unreachable: the last attempt raises")

    def record_signature(self, upload_id: str, owner: str, now: int) -> UploadIntent:
        """Count one more signature for an open intent of `owner`; returns the updated intent.

        Signatures are counted as a set of tokens, one per request. A retry of an update that applied but
        whose answer was lost finds its token already there instead of counting a second signature; and a
        request that gives up voids its token, so that its update, if it lands later, cannot count a
        signature nobody received (the void also removes the token if the update landed first)."""
        from botocore.exceptions import ClientError

        token = self._new_token()
        try:
            response = self._call(
                "update_item",
                TableName=self._table,
                Key=upload_key(upload_id),
                UpdateExpression="ADD signatureTokens :token",
                ConditionExpression=(
                    "#owner = :owner AND #status = :open AND size(signatureTokens) < maxSignatures"
                    " AND windowEndsAt > :now AND NOT contains(signatureTokens, :id)"
                    " AND NOT contains(voidedTokens, :id)"
                ),
                ExpressionAttributeNames={"#owner": "owner", "#status": "status"},
                ExpressionAttributeValues={
                    ":token": {"SS": [token]}, ":id": _s(token), ":owner": _s(owner), ":open": _s("open"),
                    ":now": _n(now),
                },
                ReturnValues="ALL_NEW",
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )  # fmt: skip
        except ClientError as exc:
            if exc.response["Error"]["Code"] != "ConditionalCheckFailedException":
                raise
            old = exc.response.get("Item")
            if old and token in old.get("signatureTokens", {}).get("SS", []):
                return item_to_intent(old)  # our own earlier attempt applied
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
        except ServiceUnavailable:
            self._send_unawaited(
                "void a signature that was not delivered",
                lambda: self._db.update_item(
                    TableName=self._table,
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
        response = self._call("get_item", TableName=self._table, Key=upload_key(upload_id), ConsistentRead=True)
        item = response.get("Item")
        if item is None or _get_s(item, "status") == _ABANDONED:
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
                    "TableName": self._table,
                    "Key": upload_key(intent.upload_id),
                    "UpdateExpression": "SET #status = :abandoned, #ttl = if_not_exists(#ttl, :ttl)",
                    "ConditionExpression": (
                        "attribute_not_exists(pk) OR (#status = :open AND size(signatureTokens) = :one"
                        " AND createdAt = :created)"
                    ),
                    "ExpressionAttributeNames": {"#status": "status", "#ttl": "ttl"},
                    "ExpressionAttributeValues": {
                        ":abandoned": _s(_ABANDONED),
                        ":open": _s("open"),
                        ":one": _n(1),
                        ":created": _n(intent.created_at),
                        ":ttl": _n(intent.expires_at),
                    },
                }
            },
            {
                "Update": {
                    "TableName": self._table,
                    "Key": limits_key(intent.owner),
                    "UpdateExpression": "DELETE openSlots :slot",
                    "ExpressionAttributeValues": {":slot": {"SS": [intent.open_slot]}},
                }
            },
        ]

        self._send_unawaited(
            "abandon an unanswered upload intent",
            lambda: self._db.transact_write_items(TransactItems=items, ClientRequestToken=self._new_token()),
            uploadId=intent.upload_id,
        )

    @staticmethod
    def _send_unawaited(what: str, write: Callable[[], Any], **fields: str) -> None:
        """A compensating write after a give-up: storage is stalled and the caller's answer is due, so the
        write is sent and waited for only a moment. The request is on the wire; the stalled endpoint
        applies it in turn. Its result is only logged."""

        def send() -> None:
            try:
                write()
            except Exception as exc:  # logged: nothing else can be done from here
                logger.warning(f"{what}: failed", extra={"fields": {**fields, "failure": type(exc).__name__}})
            else:
                logger.info(f"{what}: done", extra={"fields": fields})

        sender = threading.Thread(target=send, name="compensating-write", daemon=True)
        sender.start()
        sender.join(_COMPENSATION_WAIT_SECONDS)

    def open_slots(self, owner: str) -> list[str]:
        response = self._call("get_item", TableName=self._table, Key=limits_key(owner), ConsistentRead=True)
        return list(response.get("Item", {}).get("openSlots", {}).get("SS", []))

    # -- events and videos ----------------------------------------------------------------------

    def complete_upload(self, intent: UploadIntent, video: Video, now: int) -> None:
        """Intent open -> completed with this FileId, the video record, and the open slot released:
        one transaction, so an upload is attributed exactly once or not at all."""
        names = {f"#a{i}": name for i, name in enumerate(_VIDEO_UPLOAD_FIELDS)}
        values = {f":a{i}": encode(video) for i, encode in enumerate(_VIDEO_UPLOAD_FIELDS.values())}
        items = [
            {
                "Update": {
                    "TableName": self._table,
                    "Key": upload_key(intent.upload_id),
                    "UpdateExpression": "SET #status = :completed, fileId = :file, completedAt = :now",
                    # Only an open intent completes: a concurrent copy of the same event finds it completed
                    # and reports a duplicate, writing nothing.
                    "ConditionExpression": "#owner = :owner AND #status = :open",
                    "ExpressionAttributeNames": {"#status": "status", "#owner": "owner"},
                    "ExpressionAttributeValues": {
                        ":completed": _s("completed"),
                        ":open": _s("open"),
                        ":file": _s(video.file_id),
                        ":owner": _s(intent.owner),
                        ":now": _n(now),
                    },
                }
            },
            {
                "Update": {
                    "TableName": self._table,
                    "Key": video_key(video.file_id),
                    "UpdateExpression": "SET " + ", ".join(f"#a{i} = :a{i}" for i in range(len(names))),
                    "ConditionExpression": "attribute_not_exists(#a0) OR #a0 = :a0",
                    "ExpressionAttributeNames": names,
                    "ExpressionAttributeValues": values,
                }
            },
            {
                "Update": {
                    "TableName": self._table,
                    "Key": limits_key(intent.owner),
                    "UpdateExpression": "DELETE openSlots :slot",
                    "ExpressionAttributeValues": {":slot": {"SS": [intent.open_slot]}},
                }
            },
        ]
        for attempt in range(1, _TRANSACTION_ATTEMPTS + 1):
            reasons = self._transact(items)
            if reasons is None:
                return
            if reasons[0].get("Code") == "ConditionalCheckFailed":
                raise CompletionLost(intent.upload_id)
            if reasons[1].get("Code") == "ConditionalCheckFailed":
                raise FileOwnedElsewhere(video.file_id)
            self._pause_before_retry(attempt, "TransactWriteItems", "TransactionConflict")

    def record_for_review(
        self, kind: str, uploaded: UploadedFile, reason: str, now: int, intent: UploadIntent | None = None
    ) -> None:
        """Keep an unattributed upload for review or deletion; the first record of a FileId wins."""
        from botocore.exceptions import ClientError

        item = {
            "pk": _s(f"REVIEW#{uploaded.file_id}"),
            "sk": _s("REVIEW"),
            "kind": _s(kind),
            "reason": _s(reason),
            "receivedAt": _n(now),
            "sourceContext": _opt_s((uploaded.source_context or "")[:250] or None),
            "uploadId": _opt_s(intent.upload_id if intent else None),
            "intentOwner": _opt_s(intent.owner if intent else None),
            "name": _opt_s(uploaded.name),
            "mediaUrl": _opt_s(uploaded.media_url),
            "size": _opt_n(uploaded.size),
            "gsi1pk": _s("REVIEW"),
            "gsi1sk": _s(f"{now:010d}#{uploaded.file_id}"),
        }
        try:
            self._call("put_item", TableName=self._table, Item=item, ConditionExpression="attribute_not_exists(pk)")
        except ClientError as exc:
            if exc.response["Error"]["Code"] != "ConditionalCheckFailedException":
                raise

    def reviews(self, limit: int = 100) -> list[dict[str, Any]]:
        response = self._call(
            "query",
            TableName=self._table,
            IndexName="gsi1",
            KeyConditionExpression="gsi1pk = :review",
            ExpressionAttributeValues={":review": _s("REVIEW")},
            ScanIndexForward=False,
            Limit=limit,
        )
        return [
            {
                "fileId": _req_s(item, "pk").removeprefix("REVIEW#"),
                **{name: _get_s(item, name) for name in ("kind", "reason", "uploadId", "intentOwner")},
            }
            for item in response.get("Items", [])
        ]

    def apply_processing(self, update: ProcessingUpdate, now: int) -> bool:
        """Store a task-flow snapshot under its TaskId in the video's `processing` map, unless a later
        snapshot of the same task is already there. Each task flow is ordered on its own, so the final
        record does not depend on the order in which snapshots of several flows arrive."""
        snapshot = {
            "taskId": update.task_id,
            "status": update.status,
            "errCode": update.err_code,
            "message": update.message,
            "tasks": [
                {"type": o.kind, "status": o.status, "errCode": o.err_code, "url": o.url, "definition": o.definition,
                 **({"detail": o.detail} if o.detail else {})}
                for o in update.outputs
            ],
            "review": list(update.review),
        }  # fmt: skip
        entry = {"M": {"rank": _n(update.rank), "snapshot": _opt_json(snapshot), "updatedAt": _n(now)}}
        for attempt in range(1, _TRANSACTION_ATTEMPTS + 1):
            old = self._conditional_update(
                Key=video_key(update.file_id),
                UpdateExpression="SET processing.#task = :entry",
                ConditionExpression=(
                    "attribute_exists(processing) AND "
                    "(attribute_not_exists(processing.#task) OR processing.#task.#rank <= :rank)"
                ),
                ExpressionAttributeNames={"#task": update.task_id, "#rank": "rank"},
                ExpressionAttributeValues={":entry": entry, ":rank": _n(update.rank)},
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )
            if old is None:
                return True
            if "processing" in old:
                return False  # a later snapshot of this task is already stored
            created = self._conditional_update(  # first snapshot for this file: create the map
                Key=video_key(update.file_id),
                UpdateExpression="SET processing = :tasks",
                ConditionExpression="attribute_not_exists(processing)",
                ExpressionAttributeValues={":tasks": {"M": {update.task_id: entry}}},
            )
            if created is None:
                return True
            self._pause_before_retry(attempt, "UpdateItem", "processing map created concurrently")
        raise AssertionError("unreachable: the last attempt raises")

    def mark_deleted(self, file_id: str, now: int) -> None:
        self._call(
            "update_item",
            TableName=self._table,
            Key=video_key(file_id),
            UpdateExpression="SET deletedAt = if_not_exists(deletedAt, :now)",
            ExpressionAttributeValues={":now": _n(now)},
        )

    def count_event(self, event_type: str) -> None:
        self._call(
            "update_item",
            TableName=self._table,
            Key={"pk": _s("STATS#events"), "sk": _s(event_type)},
            UpdateExpression="ADD #count :one",
            ExpressionAttributeNames={"#count": "count"},
            ExpressionAttributeValues={":one": _n(1)},
        )

    def get_video(self, file_id: str) -> Video | None:
        response = self._call("get_item", TableName=self._table, Key=video_key(file_id))
        item = response.get("Item")
        return None if item is None else item_to_video(item)

    def list_videos(self, owner: str, limit: int, after: PageKey | None) -> tuple[list[Video], PageKey | None]:
        """Newest first. Deleted videos are filtered out, so a page may hold fewer than `limit`."""
        request: dict[str, Any] = {
            "TableName": self._table,
            "IndexName": "gsi1",
            "KeyConditionExpression": "gsi1pk = :owner",
            "FilterExpression": "attribute_not_exists(deletedAt)",
            "ExpressionAttributeValues": {":owner": _s(f"OWNER#{owner}")},
            "ScanIndexForward": False,
            "Limit": limit,
        }
        if after is not None:
            request["ExclusiveStartKey"] = {
                "gsi1pk": _s(f"OWNER#{owner}"),
                "gsi1sk": _s(after.sort_key),
                **video_key(after.file_id),
            }
        response = self._call("query", **request)
        videos = [video for video in map(item_to_video, response.get("Items", [])) if video is not None]
        last = response.get("LastEvaluatedKey")
        next_key = None
        if last:
            next_key = PageKey(_req_s(last, "gsi1sk"), _req_s(last, "pk").removeprefix("VIDEO#"))
        return videos, next_key

    # -- helpers --------------------------------------------------------------------------------

    def _call(self, operation: str, **request: Any) -> Any:
        """One DynamoDB call within the retry budget. A timeout or a dropped connection leaves it unknown
        whether a write applied, so every write retried here is idempotent: transactions carry a
        ClientRequestToken, signature counts their own token, and the other writes converge."""
        from botocore.exceptions import ClientError, ConnectionError, HTTPClientError

        call = getattr(self._db, operation)
        for attempt in range(1, _CALL_ATTEMPTS + 1):
            try:
                return call(**request)
            except (HTTPClientError, ConnectionError) as exc:  # timeouts and resets: botocore retries none
                failure = type(exc).__name__
            except ClientError as exc:
                failure = exc.response["Error"]["Code"]
                if failure not in _RETRYABLE_ERRORS:
                    raise
            self._pause_before_retry(attempt, operation, failure)
        raise AssertionError("unreachable: the last attempt raises")

    def _pause_before_retry(self, attempt: int, operation: str, failure: str) -> None:
        """Sleep before attempt `attempt + 1`, or answer 503 when it could not finish before the deadline."""
        pause = _BACKOFF_SECONDS * attempt
        if attempt >= _CALL_ATTEMPTS or deadline.remaining() < pause + self._attempt_seconds:
            logger.warning(
                "storage gave up",
                extra={"fields": {"operation": operation, "failure": failure, "attempts": attempt}},
            )
            raise ServiceUnavailable("storage is busy or slow to answer, retry", retry_after_seconds=2)
        self._sleep(pause)

    @staticmethod
    def _new_token() -> str:
        return secrets.token_hex(16)  # 32 characters: DynamoDB takes client tokens of up to 36

    def _conditional_update(self, **request: Any) -> dict[str, Any] | None:
        """UpdateItem; None when it applied, else the old item (empty if none) whose condition failed."""
        from botocore.exceptions import ClientError

        try:
            self._call("update_item", TableName=self._table, **request)
        except ClientError as exc:
            if exc.response["Error"]["Code"] != "ConditionalCheckFailedException":
                raise
            return dict(exc.response.get("Item") or {})
        return None

    def _release_slots(self, owner: str, slots: list[str]) -> None:
        self._call(
            "update_item",
            TableName=self._table,
            Key=limits_key(owner),
            UpdateExpression="DELETE openSlots :slots",
            ExpressionAttributeValues={":slots": {"SS": slots}},
        )

    def _transact(self, items: list[dict[str, Any]]) -> list[dict[str, Any]] | None:
        """Run a transaction; None on success, else the per-item cancellation reasons."""
        try:
            self._call("transact_write_items", TransactItems=items, ClientRequestToken=self._new_token())
        except self._db.exceptions.TransactionCanceledException as exc:
            reasons: list[dict[str, Any]] = exc.response.get("CancellationReasons") or []
            return reasons + [{}] * (len(items) - len(reasons))
        return None
