"""The table's keys and items: how each domain object is stored (infra/data.json defines the table).

One table, keys `pk`/`sk`, TTL attribute `ttl`, index `gsi1` (`gsi1pk`/`gsi1sk`). Items:
  UPLOAD#<id>     / UPLOAD       upload intent and one-time signature ledger; while open, in gsi1 under
                                 OPEN#<shard> by the time it closes (the sweep's work list)
  USER#<sub>      / LIMITS       `openSlots`: string set of "<windowEnd>#<uploadId>" for open intents
  USER#<sub>      / RATE#<hour>  intents created in that hour (expires after two hours)
  USER#<sub>      / USAGE        `bytesStored` counted against the bytes quota, `videos` attributed and not
                                 deleted (chalicelib/quotas.py); changed only with an attribution or a deletion
  VIDEO#<fileId>  / VIDEO        the video; in gsi1 under OWNER#<sub> once attributed, until deleted;
                                 `processing`: its task flows' snapshots by TaskId, bounded (see
                                 MAX_TASK_FLOWS); `deletionRequestedAt` once its owner (or its tier's
                                 `delete` rule, when it broke a quota) asked to delete it,
                                 `deletedAt` once deleted (chalicelib/deletion.py has the states);
                                 `countedBytes`, `tier`, `quotaExceeded`, `overQuota` (chalicelib/quotas.py)
  VIDEO#<fileId>  / DELETION     its deletion request: in gsi1 under DELETING (by request time)
                                 until the deletion completes (the sweep's work list), then kept as the trace
  REVIEW#<fileId> / REVIEW       an upload that was not attributed (orphan or rejected); gsi1 under REVIEW
                                 until the sweep closes it (REVIEW#DELETED, or REVIEW#OWNED: its FileId is
                                 a user's video, so the file was kept)
  STATS#events    / <EventType>  count of ignored event types
  EVENT#<digest>  / FAILURES     a pulled event that failed to apply: its failures, its size and body (the
                                 first FAILED_EVENT_BODY_BYTES); once parked (a dead letter), in gsi1 under
                                 DEADLETTER
  OUTBOX#<eventId> / EVENT       a domain event, written in its fact's transaction; the table's stream
                                 delivers it, and it expires after OUTBOX_RETENTION_SECONDS

Pure: values in DynamoDB's attribute-value form, no I/O.
"""

from __future__ import annotations

import logging
import zlib
from collections import Counter
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, cast

from chalicelib.domain_events import OUTBOX_RETENTION_SECONDS, SCHEMA_VERSION, DomainEvent, envelope
from chalicelib.strict_json import dump_json, load_stored_json
from chalicelib.uploads import ClientFields, IntentStatus, SignatureTerms, UploadIntent

# The event, video and media types are imported where a video is read or built: the signing route stores intents
# only, and its cold start need not import those modules (bench/cold_start.py).
if TYPE_CHECKING:
    from chalicelib.events import ProcessingUpdate, TaskOutput, UploadedFile
    from chalicelib.policy import ClientKind, OverQuotaRule
    from chalicelib.videos import PageKey, Video

Item = dict[str, Any]
Key = dict[str, Any]

ABANDONED = "abandoned"  # the status of an intent whose create gave up (see IntentStorage._abandon)
EXPIRED = "expired"
CANCELLED = "cancelled"
# Everything stored as JSON was bounded at the door (request bodies, VOD payloads) far below this.
STORED_JSON_DEPTH = 32
REVIEW_PARTITION = "REVIEW"
DELETING_PARTITION = "DELETING"
DEAD_LETTER_PARTITION = "DEADLETTER"
# Of a failed event's body, what its record keeps: enough to replay any real event by hand, and far below
# DynamoDB's 400 KB item limit whatever the event's size.
FAILED_EVENT_BODY_BYTES = 64 * 1024
# And of its type and last error: the consumer sends them bounded already; the record holds to it whoever calls.
FAILED_EVENT_TYPE_CHARS = 64
FAILED_EVENT_ERROR_CHARS = 500
REVIEW_DELETED_PARTITION = "REVIEW#DELETED"
REVIEW_OWNED_PARTITION = "REVIEW#OWNED"
# Open intents are spread over this many gsi1 partitions, so that no one index partition takes every
# create and completion (DynamoDB's per-partition write limit); the sweep reads them all.
OPEN_INTENT_SHARDS = 8

logger = logging.getLogger("vodupload")

# What a video keeps of VOD's task flows (ProcedureStateChanged), so that however many updates come, its
# item stays far below DynamoDB's 400 KB: the snapshots of at most MAX_TASK_FLOWS flows (the most recently
# updated, and the upload's own), each at most MAX_SNAPSHOT_BYTES of JSON (see `stored_snapshot`).
MAX_TASK_FLOWS = 8
MAX_SNAPSHOT_BYTES = 24 * 1024
MAX_OUTPUTS_PER_KIND = 10
_MAX_MESSAGE = 256
_MAX_LABEL = 64
_MAX_URL = 2048
_MAX_DETAIL_BYTES = 1024

# -- values -------------------------------------------------------------------------------------------


def as_s(value: str) -> dict[str, str]:
    return {"S": value}


def as_n(value: int) -> dict[str, str]:
    return {"N": str(value)}


def as_opt_s(value: str | None) -> dict[str, Any]:
    return {"NULL": True} if value is None else as_s(value)


def as_opt_n(value: int | None) -> dict[str, Any]:
    return {"NULL": True} if value is None else as_n(value)


def as_opt_f(value: float | None) -> dict[str, Any]:
    return {"NULL": True} if value is None else {"N": repr(float(value))}


def as_opt_json(value: Any) -> dict[str, Any]:
    return {"NULL": True} if value is None else as_s(dump_json(value))


def get_s(item: Mapping[str, Any], name: str) -> str | None:
    value = item.get(name)
    return value["S"] if value and "S" in value else None


def get_n(item: Mapping[str, Any], name: str) -> int | None:
    value = item.get(name)
    return int(value["N"]) if value and "N" in value else None


def get_f(item: Mapping[str, Any], name: str) -> float | None:
    value = item.get(name)
    return float(value["N"]) if value and "N" in value else None


def req_s(item: Mapping[str, Any], name: str) -> str:
    value = get_s(item, name)
    if value is None:
        raise ValueError(f"item lacks {name}")
    return value


def req_n(item: Mapping[str, Any], name: str) -> int:
    value = get_n(item, name)
    if value is None:
        raise ValueError(f"item lacks {name}")
    return value


def get_json(item: Mapping[str, Any], name: str) -> Any:
    text = get_s(item, name)
    if text is None:
        return None
    value = load_stored_json(text, STORED_JSON_DEPTH)
    if value is None and text != "null":
        logger.warning("stored JSON is unreadable and reads as null", extra={"attribute": name})
    return value


def string_set(item: Mapping[str, Any], name: str) -> list[str]:
    return list(item.get(name, {}).get("SS", []))


# -- keys ---------------------------------------------------------------------------------------------


def upload_key(upload_id: str) -> Key:
    return {"pk": as_s(f"UPLOAD#{upload_id}"), "sk": as_s("UPLOAD")}


def limits_key(owner: str) -> Key:
    return {"pk": as_s(f"USER#{owner}"), "sk": as_s("LIMITS")}


def rate_key(owner: str, hour: int) -> Key:
    return {"pk": as_s(f"USER#{owner}"), "sk": as_s(f"RATE#{hour}")}


def video_key(file_id: str) -> Key:
    return {"pk": as_s(f"VIDEO#{file_id}"), "sk": as_s("VIDEO")}


def deletion_key(file_id: str) -> Key:
    return {"pk": as_s(f"VIDEO#{file_id}"), "sk": as_s("DELETION")}


def review_key(file_id: str) -> Key:
    return {"pk": as_s(f"REVIEW#{file_id}"), "sk": as_s("REVIEW")}


def event_count_key(event_type: str) -> Key:
    return {"pk": as_s("STATS#events"), "sk": as_s(event_type)}


def usage_key(owner: str) -> Key:
    return {"pk": as_s(f"USER#{owner}"), "sk": as_s("USAGE")}


def failed_event_key(digest: str) -> Key:
    return {"pk": as_s(f"EVENT#{digest}"), "sk": as_s("FAILURES")}


def outbox_key(event_id: str) -> Key:
    return {"pk": as_s(f"OUTBOX#{event_id}"), "sk": as_s("EVENT")}


def owner_partition(owner: str) -> dict[str, str]:
    """The gsi1 partition of an owner's videos."""
    return as_s(f"OWNER#{owner}")


def video_sort_key(received_at: int, file_id: str) -> str:
    return f"{received_at:010d}#{file_id}"


def open_intent_partitions() -> list[str]:
    return [f"OPEN#{shard}" for shard in range(OPEN_INTENT_SHARDS)]


def open_intent_partition(upload_id: str) -> str:
    return f"OPEN#{zlib.crc32(upload_id.encode('ascii')) % OPEN_INTENT_SHARDS}"


def sort_key_before(moment: int) -> str:
    """The lowest gsi1sk of `moment`: every `video_sort_key` of an earlier time sorts below it."""
    return f"{moment:010d}"


def page_start(owner: str, after: PageKey) -> Key:
    """The ExclusiveStartKey of the owner's listing that continues after `after`."""
    return {"gsi1pk": owner_partition(owner), "gsi1sk": as_s(after.sort_key), **video_key(after.file_id)}


def page_key(last_evaluated: Mapping[str, Any]) -> PageKey:
    from chalicelib.videos import PageKey

    return PageKey(req_s(last_evaluated, "gsi1sk"), req_s(last_evaluated, "pk").removeprefix("VIDEO#"))


# -- upload intents -----------------------------------------------------------------------------------


# The stored statuses of a settled intent; any other (open, abandoned) reads as open.
_SETTLED_STATUSES: dict[str, IntentStatus] = {"completed": "completed", EXPIRED: "expired", CANCELLED: "cancelled"}


def intent_to_item(intent: UploadIntent, signature_token: str) -> Item:
    """The intent as first stored: `signature_token` stands for its first signature (see
    `IntentStorage.renew_signature`)."""
    assert intent.signatures_minted == 1, "an intent is stored with its first signature"
    terms, client = intent.terms, intent.client
    return {
        **upload_key(intent.upload_id),
        "type": as_s("upload"),
        "owner": as_s(intent.owner),
        "tier": as_s(intent.tier),
        "status": as_s(intent.status),
        "createdAt": as_n(intent.created_at),
        "windowEndsAt": as_n(intent.window_ends_at),
        "ttl": as_n(intent.expires_at),
        "openSlot": as_s(intent.open_slot),
        "signatureTokens": {"SS": [signature_token]},
        "maxSignatures": as_n(intent.max_signatures),
        "procedure": as_opt_s(terms.procedure),
        "classId": as_n(terms.class_id),
        "storageRegion": as_opt_s(terms.storage_region),
        "vodSubAppId": as_opt_n(terms.vod_sub_app_id),
        "oneTimeValid": {"BOOL": terms.one_time},
        "taskPriority": as_n(terms.task_priority),
        "taskNotifyMode": as_s(terms.task_notify_mode),
        "signatureTtl": as_n(terms.ttl_seconds),
        "title": as_opt_s(client.title),
        "fileName": as_opt_s(client.file_name),
        "fileSize": as_opt_n(client.file_size),
        "contentType": as_opt_s(client.content_type),
        "withCover": {"BOOL": client.with_cover},
        "metadata": as_opt_json(client.metadata),
        "client": as_opt_s(client.client),
        "fileId": as_opt_s(intent.file_id),
        "completedAt": as_opt_n(intent.completed_at),
        "gsi1pk": as_s(open_intent_partition(intent.upload_id)),
        "gsi1sk": as_s(video_sort_key(intent.closes_at, intent.upload_id)),
    }


def item_to_intent(item: Mapping[str, Any]) -> UploadIntent:
    status = req_s(item, "status")
    return UploadIntent(
        upload_id=req_s(item, "pk").removeprefix("UPLOAD#"),
        owner=req_s(item, "owner"),
        tier=req_s(item, "tier"),
        status=_SETTLED_STATUSES.get(status, "open"),
        created_at=req_n(item, "createdAt"),
        window_ends_at=req_n(item, "windowEndsAt"),
        expires_at=req_n(item, "ttl"),
        terms=SignatureTerms(
            procedure=get_s(item, "procedure"),
            class_id=req_n(item, "classId"),
            storage_region=get_s(item, "storageRegion"),
            vod_sub_app_id=get_n(item, "vodSubAppId"),
            one_time=bool(item.get("oneTimeValid", {}).get("BOOL")),
            task_priority=req_n(item, "taskPriority"),
            task_notify_mode=req_s(item, "taskNotifyMode"),
            ttl_seconds=req_n(item, "signatureTtl"),
        ),
        client=ClientFields(
            title=get_s(item, "title"),
            file_name=get_s(item, "fileName"),
            file_size=get_n(item, "fileSize"),
            content_type=get_s(item, "contentType"),
            with_cover=bool(item.get("withCover", {}).get("BOOL")),
            metadata=get_json(item, "metadata"),
            client=cast("ClientKind | None", get_s(item, "client")),
        ),
        signatures_minted=len(string_set(item, "signatureTokens")),
        max_signatures=req_n(item, "maxSignatures"),
        file_id=get_s(item, "fileId"),
        completed_at=get_n(item, "completedAt"),
        cancelled_at=get_n(item, "cancelledAt"),
    )


def slot_ends(slots: list[str]) -> list[int]:
    """When each open slot's upload window ends."""
    return [int(slot.split("#", 1)[0]) for slot in slots]


# -- videos -------------------------------------------------------------------------------------------

_ENCODE: dict[str, Callable[[Any], dict[str, Any]]] = {"str": as_opt_s, "int": as_opt_n, "float": as_opt_f}
_DECODE: dict[str, Callable[[Mapping[str, Any], str], Any]] = {"str": get_s, "int": get_n, "float": get_f}


def video_upload_attributes(video: Video) -> dict[str, dict[str, Any]]:
    """The attributes a NewFileUpload owns on the video item. Processing and deletion attributes are
    written by other events and never touched with these, so the events commute."""
    from chalicelib.media import FACTS

    return {
        "owner": as_s(video.owner),
        "uploadId": as_s(video.upload_id),
        "receivedAt": as_n(video.received_at),
        "title": as_opt_s(video.title),
        "fileName": as_opt_s(video.file_name),
        "procedure": as_opt_s(video.procedure),
        "procedureTaskId": as_opt_s(video.procedure_task_id),
        "metadata": as_opt_json(video.metadata),
        **{fact.stored: _ENCODE[fact.kind](getattr(video.media, fact.attribute)) for fact in FACTS},
        "gsi1pk": owner_partition(video.owner),
        "gsi1sk": as_s(video_sort_key(video.received_at, video.file_id)),
    }


def item_to_video(item: Mapping[str, Any]) -> Video | None:
    from chalicelib.media import FACTS, MediaFacts
    from chalicelib.videos import Video

    owner = get_s(item, "owner")
    if owner is None:
        return None  # only processing/deletion state so far: not attributed to anyone
    return Video(
        file_id=req_s(item, "pk").removeprefix("VIDEO#"),
        owner=owner,
        upload_id=req_s(item, "uploadId"),
        received_at=req_n(item, "receivedAt"),
        title=get_s(item, "title"),
        file_name=get_s(item, "fileName"),
        procedure=get_s(item, "procedure"),
        procedure_task_id=get_s(item, "procedureTaskId"),
        metadata=get_json(item, "metadata"),
        media=MediaFacts(**{fact.attribute: _DECODE[fact.kind](item, fact.stored) for fact in FACTS}),
        processing_tasks={
            task_id: load_stored_json(entry["M"]["snapshot"]["S"], STORED_JSON_DEPTH) or {"taskId": task_id}
            for task_id, entry in item.get("processing", {}).get("M", {}).items()
        },
        deletion_requested_at=get_n(item, "deletionRequestedAt"),
        deleted_at=get_n(item, "deletedAt"),
        quota_exceeded=tuple(sorted(string_set(item, "quotaExceeded"))),
        over_quota=cast("OverQuotaRule | None", get_s(item, "overQuota")),
        counted_bytes=get_n(item, "countedBytes") or 0,
    )


def processing_entry(update: ProcessingUpdate, now: int) -> dict[str, Any]:
    """A task flow's snapshot as kept in the video's `processing` map under its TaskId."""
    snapshot = as_s(dump_json(stored_snapshot(update)))
    return {"M": {"rank": as_n(update.rank), "snapshot": snapshot, "updatedAt": as_n(now)}}


def stored_snapshot(update: ProcessingUpdate, max_bytes: int = MAX_SNAPSHOT_BYTES) -> dict[str, Any]:
    """What is kept of a task flow's snapshot: the fields the API returns, each bounded; of each kind of output
    the last MAX_OUTPUTS_PER_KIND VOD lists; and within `max_bytes` of JSON, the review results VOD lists
    first, then the outputs it lists last. The fields outside the two lists fit far below MAX_SNAPSHOT_BYTES
    and MAX_DATA_BYTES, whatever they hold, so every snapshot does."""
    head: dict[str, Any] = {
        "taskId": update.task_id,
        "status": update.status,
        "errCode": update.err_code,
        "message": update.message and update.message[:_MAX_MESSAGE],
        "tasks": [],
        "review": [],
    }
    budget = max_bytes - len(dump_json(head))
    review = _leading_within(list(update.review), budget)
    budget -= sum(map(_cost_in_a_list, review))
    outputs = [_stored_output(output) for output in _last_of_each_kind(update.outputs)]
    tasks = _leading_within(outputs[::-1], budget)[::-1]
    return {**head, "tasks": tasks, "review": review}


def _last_of_each_kind(outputs: tuple[TaskOutput, ...]) -> list[TaskOutput]:
    left = Counter(output.kind for output in outputs)
    kept = []
    for output in outputs:
        left[output.kind] -= 1
        if left[output.kind] < MAX_OUTPUTS_PER_KIND:
            kept.append(output)
    return kept


def _stored_output(output: TaskOutput) -> dict[str, Any]:
    detail = {name: value for name, value in output.detail.items() if len(dump_json(value)) <= _MAX_DETAIL_BYTES}
    return {
        "type": output.kind[:_MAX_LABEL],
        "status": output.status[:_MAX_LABEL],
        "errCode": output.err_code,
        "url": output.url if output.url and len(output.url) <= _MAX_URL else None,  # a cut URL is no URL
        "definition": output.definition,
        **({"detail": detail} if detail else {}),
    }


def _leading_within(entries: list[Any], budget: int) -> list[Any]:
    """The longest run of `entries` from the first whose JSON, as list members, takes at most `budget` bytes."""
    kept: list[Any] = []
    for entry in entries:
        budget -= _cost_in_a_list(entry)
        if budget < 0:
            break
        kept.append(entry)
    return kept


def _cost_in_a_list(entry: Any) -> int:
    return len(dump_json(entry)) + 1  # and a comma


# -- uploads kept for review --------------------------------------------------------------------------


def review_item(kind: str, uploaded: UploadedFile, reason: str, now: int, intent: UploadIntent | None) -> Item:
    return {
        **review_key(uploaded.file_id),
        "kind": as_s(kind),
        "reason": as_s(reason),
        "receivedAt": as_n(now),
        "sourceContext": as_opt_s((uploaded.source_context or "")[:250] or None),
        "uploadId": as_opt_s(intent.upload_id if intent else None),
        "intentOwner": as_opt_s(intent.owner if intent else None),
        "name": as_opt_s(uploaded.media.name),
        "mediaUrl": as_opt_s(uploaded.media.media_url),
        "size": as_opt_n(uploaded.media.size),
        "gsi1pk": as_s(REVIEW_PARTITION),
        "gsi1sk": as_s(video_sort_key(now, uploaded.file_id)),
    }


def item_to_review(item: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "fileId": req_s(item, "pk").removeprefix("REVIEW#"),
        **{name: get_s(item, name) for name in ("kind", "reason", "uploadId", "intentOwner")},
        "receivedAt": get_n(item, "receivedAt"),
    }


# -- pulled events that failed ------------------------------------------------------------------------


def failed_event_body(body: bytes) -> str:
    """The body a failed event's record keeps: its first FAILED_EVENT_BODY_BYTES, less a character that
    the cut splits (a body that is not UTF-8 loses what is not)."""
    return body[:FAILED_EVENT_BODY_BYTES].decode("utf-8", "ignore")


def item_to_dead_letter(item: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "event": req_s(item, "pk").removeprefix("EVENT#"),
        "eventType": get_s(item, "eventType"),
        "failures": get_n(item, "failures"),
        "size": get_n(item, "size"),
        "lastError": get_s(item, "lastError"),
        "parkedAt": get_n(item, "parkedAt"),
        "body": get_s(item, "body"),
    }


# -- the outbox ---------------------------------------------------------------------------------------


def outbox_item(event: DomainEvent) -> Item:
    """A domain event's outbox row (docs/events.md): every attribute a string but `ttl`, so that the
    stream's image maps to the delivered envelope field by field."""
    return {
        **outbox_key(event.event_id),
        "eventId": as_s(event.event_id),
        "type": as_s(event.type),
        "schemaVersion": as_s(SCHEMA_VERSION),
        "occurredAt": as_s(event.occurred_at_text),
        "owner": as_s(event.owner),
        "uploadId": as_s(event.upload_id),
        "fileId": as_s(event.file_id),
        "data": as_s(event.data_json),
        "ttl": as_n(event.occurred_at + OUTBOX_RETENTION_SECONDS),
    }


def item_to_envelope(item: Mapping[str, Any]) -> dict[str, Any]:
    """The envelope an outbox row (or its stream image) is delivered as."""
    return envelope(
        req_s(item, "eventId"),
        req_s(item, "type"),
        req_s(item, "occurredAt"),
        req_s(item, "owner"),
        req_s(item, "uploadId"),
        req_s(item, "fileId"),
        load_stored_json(req_s(item, "data"), STORED_JSON_DEPTH),
    )
