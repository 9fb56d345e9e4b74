"""Videos: an upload's attribution to its owner (which completes its intent), VOD's processing of it and
its deletion, and the owner's listing."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from chalicelib.errors import CompletionLost, FileOwnedElsewhere
from chalicelib.events import ProcessingUpdate
from chalicelib.items import (
    EXPIRED,
    MAX_TASK_FLOWS,
    Item,
    as_n,
    as_s,
    get_n,
    get_s,
    item_to_video,
    owner_partition,
    page_key,
    page_start,
    processing_entry,
    string_set,
    upload_key,
    video_key,
    video_upload_attributes,
)
from chalicelib.quotas import UNLIMITED, QuotaBreak, QuotaTerms, known_duration, stored_size
from chalicelib.storage.intents import release_slot_item
from chalicelib.storage.table import AGAIN, Again, Reasons, Table, failed
from chalicelib.storage.usage import Attribution, UsageStorage
from chalicelib.uploads import UploadIntent
from chalicelib.videos import PageKey, Video

# Immediate retries of an attribution whose usage crossed its room between tries, before pausing between them.
_IMMEDIATE_RETRIES = 4


class VideoStorage:
    def __init__(self, table: Table, usage: UsageStorage) -> None:
        self._table = table
        self._usage = usage

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
                    "TableName": self._table.name,
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
                    "TableName": self._table.name,
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
            items["open slot"] = release_slot_item(self._table, intent)
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
            return changes <= _IMMEDIATE_RETRIES  # then after a pause, within the race budget: usage keeps changing

        build()
        self._table.commit(items, settle)
        return breaks

    def file_owner(self, file_id: str) -> str | None:
        """Whom a FileId is attributed to, if anyone (a consistent read: the sweep deletes only what nobody owns)."""
        response = self._table.call(
            "get_item",
            TableName=self._table.name,
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

        def attempt() -> bool | Again:
            old = self._table.conditional_update(
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
                created = self._table.conditional_update(  # first snapshot for this file: create the map
                    Key=video_key(update.file_id),
                    UpdateExpression="SET processing = :tasks",
                    ConditionExpression="attribute_not_exists(processing)",
                    ExpressionAttributeValues={":tasks": {"M": {update.task_id: entry}}},
                )
                return True if created is None else AGAIN
            if update.task_id in old["processing"]["M"]:
                return False  # a later snapshot of this task is already stored
            return self._replace_oldest_flows(update, entry, old)

        return self._table.until_settled("UpdateItem", "processing map changed concurrently", attempt)

    def _replace_oldest_flows(self, update: ProcessingUpdate, entry: dict[str, Any], video: Item) -> bool | Again:
        """Put a new task flow's entry in a full `processing` map in place of the least recently updated
        flows (AGAIN if the map changed since it was read)."""
        flows = video["processing"]["M"]
        own = get_s(video, "procedureTaskId")
        updated_at = {task: flow["M"]["updatedAt"] for task, flow in flows.items() if task != own}
        oldest = sorted(updated_at, key=lambda task: (int(updated_at[task]["N"]), task))
        removed = oldest[: len(flows) - MAX_TASK_FLOWS + 1]
        paths = [f"processing.#old{i}" for i in range(len(removed))]
        unchanged = " AND ".join(f"{path}.#at = :at{i}" for i, path in enumerate(paths))
        replaced = self._table.conditional_update(
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

        def attempt() -> Again | None:
            video = self._table.call(
                "get_item", TableName=self._table.name, Key=video_key(file_id), ConsistentRead=True
            )
            owner = get_s(video.get("Item", {}), "owner")
            if "deletedAt" in video.get("Item", {}):
                return None
            if owner is None:
                marked = self._table.conditional_update(
                    Key=video_key(file_id),
                    UpdateExpression="SET deletedAt = if_not_exists(deletedAt, :now)",
                    ConditionExpression="attribute_not_exists(#owner)",
                    ExpressionAttributeNames={"#owner": "owner"},
                    ExpressionAttributeValues={":now": as_n(now)},
                )
                return None if marked is None else AGAIN  # attributed meanwhile: count it out
            condemned = get_s(video["Item"], "overQuota") == "delete" and "quotaExceeded" in video["Item"]
            items: list[Item] = [
                {
                    "Update": {
                        "TableName": self._table.name,
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
            try:
                self._table.commit({str(index): item for index, item in enumerate(items)}, _changed_if_failed)
            except CompletionLost:
                return AGAIN  # deleted or changed meanwhile: read it again
            return None

        self._table.until_settled("TransactWriteItems", "video changed during its deletion", attempt)

    def record_duration(
        self, file_id: str, duration: float, terms_for: Callable[[str], QuotaTerms], now: int
    ) -> QuotaBreak | None:
        """A duration VOD reported after the attribution (a task flow's metadata), checked against the quota of
        the tier the video was attributed in: a break marks the video and is published in one transaction, once."""
        read = self._table.call("get_item", TableName=self._table.name, Key=video_key(file_id), ConsistentRead=True)
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
                    "TableName": self._table.name,
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
            self._table.commit(items, settle)
        except CompletionLost:
            return None
        return broken

    def get_video(self, file_id: str) -> Video | None:
        response = self._table.call("get_item", TableName=self._table.name, Key=video_key(file_id))
        item = response.get("Item")
        return None if item is None else item_to_video(item)

    def list_videos(self, owner: str, limit: int, after: PageKey | None) -> tuple[list[Video], PageKey | None]:
        """Newest first. Deleted videos are filtered out, so a page may hold fewer than `limit`."""
        request: dict[str, Any] = {
            "TableName": self._table.name,
            "IndexName": "gsi1",
            "KeyConditionExpression": "gsi1pk = :owner",
            "FilterExpression": "attribute_not_exists(deletedAt)",
            "ExpressionAttributeValues": {":owner": owner_partition(owner)},
            "ScanIndexForward": False,
            "Limit": limit,
        }
        if after is not None:
            request["ExclusiveStartKey"] = page_start(owner, after)
        response = self._table.call("query", **request)
        videos = [video for video in map(item_to_video, response.get("Items", [])) if video is not None]
        last = response.get("LastEvaluatedKey")
        return videos, page_key(last) if last else None


def _changed_if_failed(reasons: Reasons) -> bool:
    """A transaction settled by reading again: any failed condition means the item changed since the read."""
    if any(failed(reason) for reason in reasons.values()):
        raise CompletionLost("changed since read")
    return False
