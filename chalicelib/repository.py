"""All DynamoDB access, through one class: what each write conditions on, and how it is retried.

Keys and item mapping live in chalicelib/items.py. The repository reports facts (a full limit and when it
frees, an intent that changed, a FileId owned elsewhere) as the exceptions of chalicelib/errors.py's
"storage outcomes"; the services decide what they mean to a user.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from chalicelib import deadline
from chalicelib.errors import (
    CompletionLost,
    FileOwnedElsewhere,
    IdCollision,
    LimitReached,
    ServiceUnavailable,
    SignatureRefused,
)
from chalicelib.events import ProcessingUpdate, UploadedFile
from chalicelib.items import (
    ABANDONED,
    DEAD_LETTER_PARTITION,
    EXPIRED,
    FAILED_EVENT_ERROR_CHARS,
    FAILED_EVENT_TYPE_CHARS,
    MAX_TASK_FLOWS,
    REVIEW_DELETED_PARTITION,
    REVIEW_OWNED_PARTITION,
    REVIEW_PARTITION,
    Item,
    as_n,
    as_s,
    event_count_key,
    failed_event_body,
    failed_event_key,
    get_n,
    get_s,
    intent_to_item,
    item_to_dead_letter,
    item_to_intent,
    item_to_review,
    item_to_video,
    limits_key,
    owner_partition,
    page_key,
    page_start,
    processing_entry,
    rate_key,
    review_item,
    review_key,
    slot_ends,
    sort_key_before,
    string_set,
    upload_key,
    video_key,
    video_sort_key,
    video_upload_attributes,
)
from chalicelib.quotas import UNLIMITED, QuotaBreak, QuotaTerms, Usage, known_duration, stored_size
from chalicelib.uploads import IntentLimits, UploadIntent
from chalicelib.usage_storage import Attribution, UsageStorage
from chalicelib.videos import PageKey, Video

T = TypeVar("T")
# The per-item reasons DynamoDB gives for cancelling a transaction, by the name the caller gave each item.
Reasons = Mapping[str, Mapping[str, Any]]

# Attempts of one logical write against a race (TransactionConflict, a concurrent first write), and of one
# call against timeouts and throttling; both also stop at the request's deadline.
_RACE_ATTEMPTS = 4
_CALL_ATTEMPTS = 4
_BACKOFF_SECONDS = 0.05
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


class _Again:
    """What a write attempt returns when it lost a race and should be tried again after a pause."""


AGAIN = _Again()

logger = logging.getLogger("vodupload")


def failed(reason: Mapping[str, Any]) -> bool:
    """Whether a transaction item's own condition failed (rather than the item being fine or in conflict)."""
    return reason.get("Code") == "ConditionalCheckFailed"


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
        self._usage = UsageStorage(table_name, self._call)

    # -- upload intents -------------------------------------------------------------------------

    def create_intent(self, intent: UploadIntent, limits: IntentLimits, now: int) -> None:
        """Intent put + open-intent set + hourly counter, in one transaction (one round trip). Raises
        LimitReached for a full limit, IdCollision if the id exists."""
        hour = now // 3600
        items: dict[str, Item] = {
            "intent": {
                "Put": {
                    "TableName": self._table,
                    "Item": intent_to_item(intent, self._new_token()),
                    "ConditionExpression": "attribute_not_exists(pk)",
                }
            },
            "open slots": {
                "Update": {
                    "TableName": self._table,
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
                    "TableName": self._table,
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

        self._commit(items, settle, unanswered=lambda: self._abandon(intent))

    def renew_signature(self, upload_id: str, owner: str, now: int) -> UploadIntent:
        """Count one more signature for an open intent of `owner`; returns the updated intent, or raises
        SignatureRefused with the intent as stored.

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
                    "TableName": self._table,
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
            self._release_slot_item(intent),
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
                logger.warning(f"{what}: failed", extra={**fields, "failure": type(exc).__name__})
            else:
                logger.info(f"{what}: done", extra=fields)

        sender = threading.Thread(target=send, name="compensating-write", daemon=True)
        sender.start()
        sender.join(_COMPENSATION_WAIT_SECONDS)

    def expire_closed_intents(self, partition: str, now: int, limit: int) -> tuple[int, list[str]]:
        """Close as expired up to `limit` intents of one open-intent partition whose last signature expired
        before `now`, releasing their open slots: returns how many were looked at, and the ids expired. Each
        one leaves the partition, expired or not (an intent completed meanwhile already had)."""
        items = self._index_partition(partition, limit, before=now)
        return len(items), [intent.upload_id for intent in map(item_to_intent, items) if self._expire(intent, now)]

    def _expire(self, intent: UploadIntent, now: int) -> bool:
        items: dict[str, Item] = {
            "intent": {
                "Update": {
                    "TableName": self._table,
                    "Key": upload_key(intent.upload_id),
                    "UpdateExpression": "SET #status = :expired, expiredAt = :now REMOVE gsi1pk, gsi1sk",
                    "ConditionExpression": "#status = :open",
                    "ExpressionAttributeNames": {"#status": "status"},
                    "ExpressionAttributeValues": {
                        ":expired": as_s(EXPIRED), ":open": as_s("open"), ":now": as_n(now),
                    },
                }
            },
            "open slot": self._release_slot_item(intent),
        }  # fmt: skip

        def settle(reasons: Reasons) -> bool:
            if failed(reasons["intent"]):
                raise CompletionLost(intent.upload_id)  # completed or abandoned since the index was read
            return False

        try:
            self._commit(items, settle)
        except CompletionLost:
            return False
        return True

    def open_slots(self, owner: str) -> list[str]:
        response = self._call("get_item", TableName=self._table, Key=limits_key(owner), ConsistentRead=True)
        return string_set(response.get("Item", {}), "openSlots")

    # -- events and videos ----------------------------------------------------------------------

    def complete_upload(
        self, intent: UploadIntent, video: Video, now: int, quota: QuotaTerms = UNLIMITED
    ) -> list[QuotaBreak]:
        """Intent open -> completed with this FileId, the video record, the open slot released and the owner's
        usage counted: one transaction, so an upload is attributed and counted exactly once or not at all.
        Returns the quotas it broke (the video is marked, and each break published, in the same transaction).
        Raises CompletionLost if the intent is no longer open, FileOwnedElsewhere if another user's video has
        this FileId."""
        attribution = Attribution.start(stored_size(video.media.size, intent.client.file_size), quota)
        breaks: list[QuotaBreak] = []
        items: dict[str, Item] = {}

        def build() -> None:
            breaks[:] = attribution.breaks(known_duration(video.media.duration))
            attributes = video_upload_attributes(video) | self._usage.video_attributes(intent.tier, attribution, breaks)
            names = {f"#a{i}": name for i, name in enumerate(attributes)}
            values = {f":a{i}": value for i, value in enumerate(attributes.values())}
            items.clear()
            items["intent"] = {
                "Update": {
                    "TableName": self._table,
                    "Key": upload_key(intent.upload_id),
                    "UpdateExpression": (
                        "SET #status = :completed, fileId = :file, completedAt = :now REMOVE gsi1pk, gsi1sk"
                    ),
                    # Only an open (or expired: its event came late) intent completes: a concurrent copy of
                    # the same event finds it completed and reports a duplicate, writing nothing.
                    "ConditionExpression": "#owner = :owner AND #status IN (:open, :expired)",
                    "ExpressionAttributeNames": {"#status": "status", "#owner": "owner"},
                    "ExpressionAttributeValues": {
                        ":completed": as_s("completed"),
                        ":open": as_s("open"),
                        ":expired": as_s(EXPIRED),
                        ":file": as_s(video.file_id),
                        ":owner": as_s(intent.owner),
                        ":now": as_n(now),
                    },
                }
            }
            items["video"] = {
                "Update": {
                    "TableName": self._table,
                    "Key": video_key(video.file_id),
                    "UpdateExpression": "SET " + ", ".join(f"#a{i} = :a{i}" for i in range(len(names))),
                    # #a0: the owner. A video VOD already reported deleted is attributed, and counts nothing.
                    "ConditionExpression": "(attribute_not_exists(#a0) OR #a0 = :a0)"
                    + ("" if attribution.deleted else " AND attribute_not_exists(deletedAt)"),
                    "ExpressionAttributeNames": names,
                    "ExpressionAttributeValues": values,
                    "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
                }
            }
            items["open slot"] = self._release_slot_item(intent)
            if not attribution.deleted:
                items["usage"] = self._usage.count_item(intent.owner, attribution)
            items.update(self._usage.break_items(intent.owner, intent.upload_id, video.file_id, breaks, now))

        changes = 0

        def settle(reasons: Reasons) -> bool:
            nonlocal changes
            if failed(reasons["intent"]):
                raise CompletionLost(intent.upload_id)
            if failed(reasons["video"]):
                if "deletedAt" not in reasons["video"].get("Item", {}) or attribution.deleted:
                    raise FileOwnedElsewhere(video.file_id)
                attribution.deleted = True
            elif "usage" in reasons and failed(reasons["usage"]):
                attribution.fits = not attribution.fits  # usage crossed the room for it since the last try
            else:
                return False
            build()
            changes += 1
            return changes <= _RACE_ATTEMPTS  # then after a pause, within the race budget: usage keeps changing

        build()
        self._commit(items, settle)
        return breaks

    def record_for_review(
        self, kind: str, uploaded: UploadedFile, reason: str, now: int, intent: UploadIntent | None = None
    ) -> None:
        """Keep an unattributed upload for review or deletion; the first record of a FileId wins."""
        from botocore.exceptions import ClientError

        item = review_item(kind, uploaded, reason, now, intent)
        try:
            self._call("put_item", TableName=self._table, Item=item, ConditionExpression="attribute_not_exists(pk)")
        except ClientError as exc:
            if exc.response["Error"]["Code"] != "ConditionalCheckFailedException":
                raise

    def reviews(self, limit: int = 100) -> list[dict[str, Any]]:
        return [item_to_review(item) for item in self._index_partition(REVIEW_PARTITION, limit, newest_first=True)]

    def reviews_received_before(self, moment: int, limit: int) -> list[dict[str, Any]]:
        """The oldest uploads kept for review that arrived before `moment`, oldest first."""
        return [item_to_review(item) for item in self._index_partition(REVIEW_PARTITION, limit, before=moment)]

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
        self._call(
            "update_item",
            TableName=self._table,
            Key=review_key(file_id),
            UpdateExpression=f"SET {assignments}, gsi1pk = :closed",
            ConditionExpression="attribute_exists(pk)",
            ExpressionAttributeValues={**values, ":closed": as_s(partition)},
        )

    def file_owner(self, file_id: str) -> str | None:
        """Whom a FileId is attributed to, if anyone (a consistent read: the sweep deletes only what nobody owns)."""
        response = self._call(
            "get_item",
            TableName=self._table,
            Key=video_key(file_id),
            ConsistentRead=True,
            ProjectionExpression="#owner",
            ExpressionAttributeNames={"#owner": "owner"},
        )
        return get_s(response.get("Item", {}), "owner")

    def apply_processing(self, update: ProcessingUpdate, now: int) -> bool:
        """Store a task-flow snapshot under its TaskId in the video's `processing` map, unless a later
        snapshot of the same task is already there. Each task flow is ordered on its own, so the final
        record does not depend on the order in which snapshots of several flows arrive. The map holds at most
        MAX_TASK_FLOWS flows: a new one takes the place of the least recently updated (never of the upload's
        own flow), so that no number of flows takes the item past DynamoDB's size limit."""
        entry = processing_entry(update, now)

        def attempt() -> bool | _Again:
            old = self._conditional_update(
                Key=video_key(update.file_id),
                UpdateExpression="SET processing.#task = :entry",
                ConditionExpression=(
                    "attribute_exists(processing) AND (processing.#task.#rank <= :rank OR "
                    "(attribute_not_exists(processing.#task) AND size(processing) < :flows))"
                ),
                ExpressionAttributeNames={"#task": update.task_id, "#rank": "rank"},
                ExpressionAttributeValues={":entry": entry, ":rank": as_n(update.rank), ":flows": as_n(MAX_TASK_FLOWS)},
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )
            if old is None:
                return True
            if "processing" not in old:
                created = self._conditional_update(  # first snapshot for this file: create the map
                    Key=video_key(update.file_id),
                    UpdateExpression="SET processing = :tasks",
                    ConditionExpression="attribute_not_exists(processing)",
                    ExpressionAttributeValues={":tasks": {"M": {update.task_id: entry}}},
                )
                return True if created is None else AGAIN
            if update.task_id in old["processing"]["M"]:
                return False  # a later snapshot of this task is already stored
            return self._replace_oldest_flows(update, entry, old)

        return self._until_settled("UpdateItem", "processing map changed concurrently", attempt)

    def _replace_oldest_flows(self, update: ProcessingUpdate, entry: dict[str, Any], video: Item) -> bool | _Again:
        """Put a new task flow's entry in a full `processing` map in place of the least recently updated
        flows (AGAIN if the map changed since it was read)."""
        flows = video["processing"]["M"]
        own = get_s(video, "procedureTaskId")
        updated_at = {task: flow["M"]["updatedAt"] for task, flow in flows.items() if task != own}
        oldest = sorted(updated_at, key=lambda task: (int(updated_at[task]["N"]), task))
        removed = oldest[: len(flows) - MAX_TASK_FLOWS + 1]
        paths = [f"processing.#old{i}" for i in range(len(removed))]
        unchanged = " AND ".join(f"{path}.#at = :at{i}" for i, path in enumerate(paths))
        replaced = self._conditional_update(
            Key=video_key(update.file_id),
            UpdateExpression=f"REMOVE {', '.join(paths)} SET processing.#task = :entry",
            ConditionExpression=f"size(processing) = :count AND attribute_not_exists(processing.#task) AND {unchanged}",
            ExpressionAttributeNames={"#task": update.task_id, "#at": "updatedAt"}
            | {f"#old{i}": task for i, task in enumerate(removed)},
            ExpressionAttributeValues={":entry": entry, ":count": as_n(len(flows))}
            | {f":at{i}": updated_at[task] for i, task in enumerate(removed)},
        )
        return True if replaced is None else AGAIN

    def mark_deleted(self, file_id: str, now: int) -> None:
        """The video is deleted from VOD: it leaves its owner's list and gives back what its attribution counted,
        in one transaction, once (a second report of the deletion changes nothing). A FileId attributed to nobody
        yet is only marked: its attribution, if it comes, counts nothing."""

        def attempt() -> _Again | None:
            video = self._call("get_item", TableName=self._table, Key=video_key(file_id), ConsistentRead=True)
            owner = get_s(video.get("Item", {}), "owner")
            if "deletedAt" in video.get("Item", {}):
                return None
            if owner is None:
                marked = self._conditional_update(
                    Key=video_key(file_id),
                    UpdateExpression="SET deletedAt = if_not_exists(deletedAt, :now)",
                    ConditionExpression="attribute_not_exists(#owner)",
                    ExpressionAttributeNames={"#owner": "owner"},
                    ExpressionAttributeValues={":now": as_n(now)},
                )
                return None if marked is None else AGAIN  # attributed meanwhile: count it out
            condemned = get_s(video["Item"], "overQuota") == "delete" and "quotaExceeded" in video["Item"]
            items = [
                {
                    "Update": {
                        "TableName": self._table,
                        "Key": video_key(file_id),
                        "UpdateExpression": "SET deletedAt = :now",
                        "ConditionExpression": "#owner = :owner AND attribute_not_exists(deletedAt)",
                        "ExpressionAttributeNames": {"#owner": "owner"},
                        "ExpressionAttributeValues": {":now": as_n(now), ":owner": as_s(owner)},
                    }
                },
                self._usage.uncount_item(owner, get_n(video["Item"], "countedBytes") or 0),
                *([self._usage.done_item(file_id, now)] if condemned else []),
            ]
            return None if self._transact(items) is None else AGAIN  # deleted or changed meanwhile: read again

        self._until_settled("TransactWriteItems", "video changed during its deletion", attempt)

    def record_duration(
        self, file_id: str, duration: float, terms_for: Callable[[str], QuotaTerms], now: int
    ) -> QuotaBreak | None:
        """A duration VOD reported after the attribution (a task flow's metadata), checked against the quota of
        the tier the video was attributed in: a break marks the video and is published in one transaction, once."""
        read = self._call("get_item", TableName=self._table, Key=video_key(file_id), ConsistentRead=True)
        item = read.get("Item", {})
        owner, tier = get_s(item, "owner"), get_s(item, "tier")
        if owner is None or tier is None or "deletedAt" in item or "duration" in string_set(item, "quotaExceeded"):
            return None  # not attributed yet (its attribution checks VOD's own duration), gone, or marked already
        broken = terms_for(tier).duration_break(duration)
        if broken is None:
            return None
        items: dict[str, Item] = {
            "video": {
                "Update": {
                    "TableName": self._table,
                    "Key": video_key(file_id),
                    "UpdateExpression": "ADD quotaExceeded :duration SET overQuota = if_not_exists(overQuota, :rule)",
                    "ConditionExpression": "#owner = :owner AND attribute_not_exists(deletedAt)"
                    " AND NOT contains(quotaExceeded, :quota)",
                    "ExpressionAttributeNames": {"#owner": "owner"},
                    "ExpressionAttributeValues": {
                        ":duration": {"SS": ["duration"]}, ":quota": as_s("duration"), ":rule": as_s(broken.rule),
                        ":owner": as_s(owner),
                    },
                }
            },
            **self._usage.break_items(owner, get_s(item, "uploadId") or "", file_id, [broken], now),
        }  # fmt: skip

        def settle(reasons: Reasons) -> bool:
            if failed(reasons["video"]):
                raise CompletionLost(file_id)  # deleted or marked since the read
            return False

        try:
            self._commit(items, settle)
        except CompletionLost:
            return None
        return broken

    def usage(self, owner: str, now: int) -> Usage:
        return self._usage.usage(owner, now)

    def quota_deletions(self, limit: int) -> list[str]:
        return self._usage.quota_deletions(limit, self._index_partition)

    def count_event(self, event_type: str) -> None:
        self._call(
            "update_item",
            TableName=self._table,
            Key=event_count_key(event_type),
            UpdateExpression="ADD #count :one",
            ExpressionAttributeNames={"#count": "count"},
            ExpressionAttributeValues={":one": as_n(1)},
        )

    def count_failure(self, digest: str, event_type: str, body: bytes, error: str, now: int) -> int:
        """One more failed attempt to apply a pulled event; returns how many there have been. The body is kept,
        cut to a bounded excerpt (`size` tells whether it was), so that the event can be replayed by hand once
        parked: the record stays within DynamoDB's item limit whatever the event's size."""
        response = self._call(
            "update_item",
            TableName=self._table,
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

    def park(self, digest: str, now: int) -> None:
        """Make a failed event a dead letter, listed like review items; the first parking time stays."""
        self._call(
            "update_item",
            TableName=self._table,
            Key=failed_event_key(digest),
            UpdateExpression="SET parkedAt = if_not_exists(parkedAt, :now), gsi1pk = :dead, gsi1sk = :sort",
            ExpressionAttributeValues={
                ":now": as_n(now), ":dead": as_s(DEAD_LETTER_PARTITION), ":sort": as_s(video_sort_key(now, digest)),
            },
        )  # fmt: skip

    def dead_letters(self, limit: int = 100) -> list[dict[str, Any]]:
        parked = self._index_partition(DEAD_LETTER_PARTITION, limit, newest_first=True)
        return [item_to_dead_letter(item) for item in parked]

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
            "ExpressionAttributeValues": {":owner": owner_partition(owner)},
            "ScanIndexForward": False,
            "Limit": limit,
        }
        if after is not None:
            request["ExclusiveStartKey"] = page_start(owner, after)
        response = self._call("query", **request)
        videos = [video for video in map(item_to_video, response.get("Items", [])) if video is not None]
        last = response.get("LastEvaluatedKey")
        return videos, page_key(last) if last else None

    # -- helpers --------------------------------------------------------------------------------

    def _index_partition(
        self, partition: str, limit: int, before: int | None = None, newest_first: bool = False
    ) -> list[Item]:
        """Up to `limit` items of one gsi1 partition (sorted by `<time>#<id>`), only those of a time before
        `before` when it is given."""
        condition, values = "gsi1pk = :partition", {":partition": as_s(partition)}
        if before is not None:
            condition, values[":before"] = f"{condition} AND gsi1sk < :before", as_s(sort_key_before(before))
        response = self._call(
            "query",
            TableName=self._table,
            IndexName="gsi1",
            KeyConditionExpression=condition,
            ExpressionAttributeValues=values,
            ScanIndexForward=not newest_first,
            Limit=limit,
        )
        items: list[Item] = response.get("Items", [])
        return items

    def _commit(
        self, items: Mapping[str, Item], settle: Callable[[Reasons], bool], unanswered: Callable[[], None] | None = None
    ) -> None:
        """Commit a transaction of named items. When DynamoDB cancels it, `settle` gets the reasons by item
        name: it raises the answer to a failed condition, or returns True to try again at once (it fixed what
        failed); a cancellation that is only a conflict with another transaction is tried again after a
        pause, within the budget. `unanswered` runs if the transaction itself goes unanswered (503)."""

        def attempt() -> _Again | None:
            while True:
                try:
                    reasons = self._transact(list(items.values()))
                except ServiceUnavailable:
                    if unanswered is not None:
                        unanswered()
                    raise
                if reasons is None:
                    return None
                if not settle(dict(zip(items, reasons, strict=True))):
                    return AGAIN

        self._until_settled("TransactWriteItems", "TransactionConflict", attempt)

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
                extra={"operation": operation, "failure": failure, "attempts": attempt},
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

    def _until_settled(self, operation: str, race: str, attempt: Callable[[], T | _Again]) -> T:
        """Run `attempt` until it settles, pausing between tries while it returns AGAIN (it lost a `race`),
        within the attempt budget and the request's deadline."""
        for number in range(1, _RACE_ATTEMPTS + 1):
            result = attempt()
            if not isinstance(result, _Again):
                return result
            self._pause_before_retry(number, operation, race)
        raise AssertionError("unreachable: the last attempt raises")

    def _release_slot_item(self, intent: UploadIntent) -> Item:
        return {
            "Update": {
                "TableName": self._table,
                "Key": limits_key(intent.owner),
                "UpdateExpression": "DELETE openSlots :slot",
                "ExpressionAttributeValues": {":slot": {"SS": [intent.open_slot]}},
            }
        }

    def _transact(self, items: list[Item]) -> list[dict[str, Any]] | None:
        """Run a transaction; None on success, else the per-item cancellation reasons."""
        try:
            self._call("transact_write_items", TransactItems=items, ClientRequestToken=self._new_token())
        except self._db.exceptions.TransactionCanceledException as exc:
            reasons: list[dict[str, Any]] = exc.response.get("CancellationReasons") or []
            return reasons + [{}] * (len(items) - len(reasons))
        return None
