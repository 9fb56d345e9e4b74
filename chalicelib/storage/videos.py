"""Videos: an upload's attribution to its owner (which completes its intent), VOD's processing of it and
its deletion, and the owner's listing."""

from __future__ import annotations

from typing import Any

from chalicelib.errors import CompletionLost, FileOwnedElsewhere
from chalicelib.events import ProcessingUpdate
from chalicelib.items import (
    EXPIRED,
    MAX_TASK_FLOWS,
    Item,
    as_n,
    as_s,
    get_s,
    item_to_video,
    owner_partition,
    page_key,
    page_start,
    processing_entry,
    upload_key,
    video_key,
    video_upload_attributes,
)
from chalicelib.storage.intents import release_slot_item
from chalicelib.storage.table import AGAIN, Again, Reasons, Table, failed
from chalicelib.uploads import UploadIntent
from chalicelib.videos import PageKey, Video


class VideoStorage:
    def __init__(self, table: Table) -> None:
        self._table = table

    def complete_upload(self, intent: UploadIntent, video: Video, now: int) -> None:
        """Intent open -> completed with this FileId, the video record, and the open slot released:
        one transaction, so an upload is attributed exactly once or not at all. Raises CompletionLost if
        the intent is no longer open, FileOwnedElsewhere if another user's video has this FileId."""
        attributes = video_upload_attributes(video)
        names = {f"#a{i}": name for i, name in enumerate(attributes)}
        values = {f":a{i}": value for i, value in enumerate(attributes.values())}
        items: dict[str, Item] = {
            "intent": {
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
            },
            "video": {
                "Update": {
                    "TableName": self._table.name,
                    "Key": video_key(video.file_id),
                    "UpdateExpression": "SET " + ", ".join(f"#a{i} = :a{i}" for i in range(len(names))),
                    "ConditionExpression": "attribute_not_exists(#a0) OR #a0 = :a0",  # #a0: the owner
                    "ExpressionAttributeNames": names,
                    "ExpressionAttributeValues": values,
                }
            },
            "open slot": release_slot_item(self._table, intent),
        }

        def settle(reasons: Reasons) -> bool:
            if failed(reasons["intent"]):
                raise CompletionLost(intent.upload_id)
            if failed(reasons["video"]):
                raise FileOwnedElsewhere(video.file_id)
            return False

        self._table.commit(items, settle)

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
        self._table.call(
            "update_item",
            TableName=self._table.name,
            Key=video_key(file_id),
            UpdateExpression="SET deletedAt = if_not_exists(deletedAt, :now)",
            ExpressionAttributeValues={":now": as_n(now)},
        )

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
