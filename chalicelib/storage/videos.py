"""Videos: an upload's attribution to its owner (which completes its intent), VOD's processing of it and
its deletion, and the owner's listing."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from msgspec import Struct

from chalicelib.domain_events import (
    MAX_DATA_BYTES,
    DomainEvent,
    upload_attributed,
    video_deleted,
    video_processing_finished,
)
from chalicelib.errors import CompletionLost, FileOwnedElsewhere
from chalicelib.events import ProcessingUpdate
from chalicelib.items import (
    DELETING_PARTITION,
    EXPIRED,
    MAX_TASK_FLOWS,
    Item,
    as_n,
    as_s,
    deletion_key,
    get_s,
    item_to_video,
    owner_partition,
    page_key,
    page_start,
    processing_entry,
    req_s,
    stored_snapshot,
    string_set,
    upload_key,
    video_key,
    video_sort_key,
    video_upload_attributes,
)
from chalicelib.quotas import UNLIMITED, QuotaBreak, QuotaTerms, known_duration, stored_size
from chalicelib.storage.intents import release_slot_item
from chalicelib.storage.outbox import outbox_put
from chalicelib.storage.table import AGAIN, Again, AlreadyPublished, Reasons, Table, failed
from chalicelib.storage.usage import Attribution, UsageStorage
from chalicelib.uploads import UploadIntent
from chalicelib.videos import PageKey, Video

# Immediate retries of an attribution whose usage crossed its room between tries, before pausing between them.
_IMMEDIATE_RETRIES = 4


class _VideoDeleted(Exception):
    """A write conditioned on a video not being deleted found it deleted."""


class VideoStorage:
    def __init__(self, table: Table, usage: UsageStorage) -> None:
        self._table = table
        self._usage = usage

    def complete_upload(
        self, intent: UploadIntent, video: Video, now: int, quota: QuotaTerms = UNLIMITED
    ) -> list[QuotaBreak]:
        """Intent open -> completed with this FileId, the video record, the open slot released, the owner's usage
        counted and `upload.attributed` published: one transaction, so an upload is attributed and counted
        exactly once or not at all.
        Returns the quotas it broke (the video is marked, and each break published, in the same transaction).
        Raises CompletionLost if the intent is no longer open, FileOwnedElsewhere if another user's video has
        this FileId."""
        attribution = Attribution.start(stored_size(video.media.size, intent.client.file_size), quota)
        breaks: list[QuotaBreak] = []
        items: dict[str, Item] = {}

        def build() -> None:
            breaks[:] = attribution.breaks(known_duration(video.media.duration))
            attributes = video_upload_attributes(video) | self._usage.video_attributes(intent.tier, attribution, breaks)
            condemned = self._condemnation(video.file_id, intent.owner, breaks, now)
            if condemned:
                attributes["deletionRequestedAt"] = as_n(now)
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
            items["event"] = outbox_put(self._table, upload_attributed(video))
            if not attribution.deleted:
                items["usage"] = self._usage.count_item(intent.owner, attribution)
            items.update(self._usage.break_items(intent.owner, intent.upload_id, video.file_id, breaks, now))
            items.update(condemned)

        changes = 0

        def settle(reasons: Reasons) -> bool:
            nonlocal changes
            if failed(reasons["intent"]) or failed(reasons["event"]):
                raise CompletionLost(intent.upload_id)  # completed since it was read: a duplicate, or lost
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
        return get_s(self._attribution(file_id), "owner")

    def apply_processing(self, update: ProcessingUpdate, now: int) -> bool:
        """Store a task-flow snapshot under its TaskId in the video's `processing` map, unless a later
        snapshot of the same task is already there. Each task flow is ordered on its own, so the final
        record does not depend on the order in which snapshots of several flows arrive. The map holds at most
        MAX_TASK_FLOWS flows: a new one takes the place of the least recently updated (never of the upload's
        own flow), so that no number of flows takes the item past DynamoDB's size limit.

        The first FINISH snapshot of a flow stored publishes `video.processed` (or `_failed`) in the same
        transaction, naming the video's owner as read just before (the write holds only if it still is);
        a later copy of it is stored alone."""
        entry = processing_entry(update, now)

        def attempt() -> bool | Again:
            publishing = self._publishing(update, now) if update.status == FINISHED else None
            try:
                return self._store_snapshot(update, entry, publishing)
            except _AttributionChanged:
                return AGAIN
            except AlreadyPublished:
                return self._store_snapshot(update, entry, None)

        return self._table.until_settled("UpdateItem", "processing map changed concurrently", attempt)

    def _publishing(self, update: ProcessingUpdate, now: int) -> _Publishing:
        attribution = self._attribution(update.file_id)
        owner = get_s(attribution, "owner")
        snapshot = stored_snapshot(update, MAX_DATA_BYTES)
        event = video_processing_finished(update, snapshot, owner or "", get_s(attribution, "uploadId") or "", now)
        return _Publishing(event, owner)

    def _store_snapshot(
        self, update: ProcessingUpdate, entry: dict[str, Any], publishing: _Publishing | None
    ) -> bool | Again:
        old = self._write(
            publishing,
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
            created = self._write(  # first snapshot for this file: create the map
                publishing,
                Key=video_key(update.file_id),
                UpdateExpression="SET processing = :tasks",
                ConditionExpression="attribute_not_exists(processing)",
                ExpressionAttributeValues={":tasks": {"M": {update.task_id: entry}}},
            )
            return True if created is None else AGAIN
        if update.task_id in old["processing"]["M"]:
            return False  # a later snapshot of this task is already stored
        return self._replace_oldest_flows(update, entry, old, publishing)

    def _replace_oldest_flows(
        self, update: ProcessingUpdate, entry: dict[str, Any], video: Item, publishing: _Publishing | None
    ) -> bool | Again:
        """Put a new task flow's entry in a full `processing` map in place of the least recently updated
        flows (AGAIN if the map changed since it was read)."""
        flows = video["processing"]["M"]
        own = get_s(video, "procedureTaskId")
        updated_at = {task: flow["M"]["updatedAt"] for task, flow in flows.items() if task != own}
        oldest = sorted(updated_at, key=lambda task: (int(updated_at[task]["N"]), task))
        removed = oldest[: len(flows) - MAX_TASK_FLOWS + 1]
        paths = [f"processing.#old{i}" for i in range(len(removed))]
        unchanged = " AND ".join(f"{path}.#at = :at{i}" for i, path in enumerate(paths))
        replaced = self._write(
            publishing,
            Key=video_key(update.file_id),
            UpdateExpression=f"REMOVE {', '.join(paths)} SET processing.#task = :entry",
            ConditionExpression=f"size(processing) = :count AND attribute_not_exists(processing.#task) AND {unchanged}",
            ExpressionAttributeNames={"#task": update.task_id, "#at": "updatedAt"}
            | {f"#old{i}": task for i, task in enumerate(removed)},
            ExpressionAttributeValues={":entry": entry, ":count": as_n(len(flows))}
            | {f":at{i}": updated_at[task] for i, task in enumerate(removed)},
        )
        return True if replaced is None else AGAIN

    def mark_unattributed_deleted(self, file_id: str, now: int) -> bool:
        """VOD deleted a file nobody owns (yet): the record says so, and an attribution arriving later finds it
        deleted. False (nothing written) if the file is attributed: its deletion is `complete_deletion`'s."""
        return (
            self._table.conditional_update(
                Key=video_key(file_id),
                UpdateExpression="SET deletedAt = if_not_exists(deletedAt, :now)",
                ConditionExpression="attribute_not_exists(#owner)",
                ExpressionAttributeNames={"#owner": "owner"},
                ExpressionAttributeValues={":now": as_n(now)},
            )
            is None
        )

    def record_duration(
        self, file_id: str, duration: float, terms_for: Callable[[str], QuotaTerms], now: int
    ) -> QuotaBreak | None:
        """A duration VOD reported after the attribution (a task flow's metadata), checked against the quota of
        the tier the video was attributed in: a break marks the video and is published in one transaction, once."""
        item = self._attribution(file_id)
        owner, tier = get_s(item, "owner"), get_s(item, "tier")
        if owner is None or tier is None or "deletedAt" in item or "duration" in string_set(item, "quotaExceeded"):
            return None  # not attributed yet (its attribution checks VOD's own duration), gone, or marked already
        broken = terms_for(tier).duration_break(duration)
        if broken is None:
            return None
        condemned = self._condemnation(file_id, owner, [broken], now)
        requested = ", deletionRequestedAt = if_not_exists(deletionRequestedAt, :now)" if condemned else ""
        items: dict[str, Item] = {
            "video": {
                "Update": {
                    "TableName": self._table.name,
                    "Key": video_key(file_id),
                    "UpdateExpression": "ADD quotaExceeded :duration SET overQuota = if_not_exists(overQuota, :rule)"
                    + requested,
                    "ConditionExpression": "#owner = :owner AND attribute_not_exists(deletedAt)"
                    " AND NOT contains(quotaExceeded, :quota)",
                    "ExpressionAttributeNames": {"#owner": "owner"},
                    "ExpressionAttributeValues": {
                        ":duration": {"SS": ["duration"]}, ":quota": as_s("duration"), ":rule": as_s(broken.rule),
                        ":owner": as_s(owner), **({":now": as_n(now)} if condemned else {}),
                    },
                }
            },
            **self._usage.break_items(owner, get_s(item, "uploadId") or "", file_id, [broken], now),
            **condemned,
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

    def _attribution(self, file_id: str) -> Item:
        """Of the video item: its owner, upload id and tier if attributed, its deletion time if deleted and the
        quotas it broke (a consistent read, so that a write conditioned on them finds them so unless they changed
        since)."""
        response = self._table.call(
            "get_item",
            TableName=self._table.name,
            Key=video_key(file_id),
            ConsistentRead=True,
            ProjectionExpression="#owner, uploadId, deletedAt, tier, quotaExceeded",
            ExpressionAttributeNames={"#owner": "owner"},
        )
        item: Item = response.get("Item", {})
        return item

    def _write(self, publishing: _Publishing | None, **request: Any) -> dict[str, Any] | None:
        if publishing is None:
            return self._table.conditional_update(**request)
        return publishing.write(self._table, request)

    # -- deleting a video (the states: chalicelib/deletion.py) ------------------------------------------

    def request_deletion(self, video: Video, now: int) -> bool:
        """The owner's video becomes `deleting` (its first request time is kept), and enters the sweep's work
        list: one transaction. False (nothing written) if it is deleted already."""
        items: dict[str, Item] = {
            "video": self._undeleted_video_update(
                video, "SET deletionRequestedAt = if_not_exists(deletionRequestedAt, :now)", now
            ),
            "work list": self._work_list_item(video.file_id, video.owner, now),
        }
        return self._commit_unless_deleted(items)

    def _condemnation(self, file_id: str, owner: str, breaks: list[QuotaBreak], now: int) -> dict[str, Item]:
        """A video that broke a quota whose rule is `delete` is condemned: its deletion is requested (with
        `deletionRequestedAt` on the video, set by the caller) in the transaction that marks it, and the sweep
        completes it as any pending deletion, with reason `over_quota` (chalicelib/deletion.py)."""
        if not any(b.rule == "delete" for b in breaks):
            return {}
        return {"work list": self._work_list_item(file_id, owner, now)}

    def _work_list_item(self, file_id: str, owner: str, now: int) -> Item:
        """The video's DELETION item, listed under DELETING by its first request time: the sweep's work list."""
        return {
            "Update": {
                "TableName": self._table.name,
                "Key": deletion_key(file_id),
                "UpdateExpression": (
                    "SET #owner = :owner, requestedAt = if_not_exists(requestedAt, :now), gsi1pk = :deleting, "
                    "gsi1sk = if_not_exists(gsi1sk, :sort)"
                ),
                "ExpressionAttributeNames": {"#owner": "owner"},
                "ExpressionAttributeValues": {
                    ":owner": as_s(owner), ":now": as_n(now), ":deleting": as_s(DELETING_PARTITION),
                    ":sort": as_s(video_sort_key(now, file_id)),
                },
            }
        }  # fmt: skip

    def complete_deletion(self, video: Video, reason: str, now: int) -> bool:
        """The video is deleted: it leaves its owner's listing (and, asked by its owner, the sweep's work list),
        its owner's usage gets back what its attribution counted, and its `video.deleted` event is written, in
        one transaction. False (nothing written) if it was deleted already. The one write of a deletion, whoever
        finishes it: so the usage is given back exactly once."""
        event = video_deleted(video.file_id, video.owner, video.upload_id, reason, now)
        items: dict[str, Item] = {
            "video": self._undeleted_video_update(video, "SET deletedAt = :now REMOVE gsi1pk, gsi1sk", now),
            "event": outbox_put(self._table, event),
            "usage": self._usage.uncount_item(video),
        }
        if video.deletion_requested_at is not None:  # it is on the sweep's work list
            items["work list"] = {
                "Update": {
                    "TableName": self._table.name,
                    "Key": deletion_key(video.file_id),
                    "UpdateExpression": "SET completedAt = :now REMOVE gsi1pk, gsi1sk",
                    "ExpressionAttributeValues": {":now": as_n(now)},
                }
            }
        return self._commit_unless_deleted(items)

    def deletions_requested_before(self, moment: int, limit: int) -> list[str]:
        """The FileIds of the oldest videos still `deleting` whose deletion was asked for before `moment`."""
        items = self._table.index_partition(DELETING_PARTITION, limit, before=moment)
        return [req_s(item, "pk").removeprefix("VIDEO#") for item in items]

    def _undeleted_video_update(self, video: Video, expression: str, now: int) -> Item:
        """An update of the owner's video (`:now` bound to `now`) that holds only while it is not deleted."""
        return {
            "Update": {
                "TableName": self._table.name,
                "Key": video_key(video.file_id),
                "UpdateExpression": expression,
                "ConditionExpression": "#owner = :owner AND attribute_not_exists(deletedAt)",
                "ExpressionAttributeNames": {"#owner": "owner"},
                "ExpressionAttributeValues": {":now": as_n(now), ":owner": as_s(video.owner)},
            }
        }

    def _commit_unless_deleted(self, items: dict[str, Item]) -> bool:
        """Commit a transaction whose conditions hold while the video is not deleted (its event, written only
        with its deletion, is not there either): False when it was."""

        def settle(reasons: Reasons) -> bool:
            if any(failed(reason) for reason in reasons.values()):
                raise _VideoDeleted
            return False

        try:
            self._table.commit(items, settle)
        except _VideoDeleted:
            return False
        return True

    def get_video(self, file_id: str, consistent: bool = False) -> Video | None:
        response = self._table.call(
            "get_item", TableName=self._table.name, Key=video_key(file_id), ConsistentRead=consistent
        )
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


FINISHED = "FINISH"  # the status of a task flow's last snapshot


class _AttributionChanged(Exception):
    """The video's owner is no longer what the event about to be published names."""


class _Publishing(Struct, frozen=True):
    """A write that publishes `event`, valid only while the video's owner is still `owner` (None: none)."""

    event: DomainEvent
    owner: str | None

    def write(self, table: Table, request: dict[str, Any]) -> dict[str, Any] | None:
        """`request`'s update with the event, in one transaction: None when both were written, else the old
        item whose condition failed; _AttributionChanged if the owner changed (the event would be wrong)."""
        names = {**request.get("ExpressionAttributeNames", {}), "#attributedTo": "owner"}
        values = dict(request["ExpressionAttributeValues"])
        if self.owner is None:
            attributed = "attribute_not_exists(#attributedTo)"
        else:
            attributed, values[":attributedTo"] = "#attributedTo = :attributedTo", as_s(self.owner)
        conditioned = {
            **request,
            "ConditionExpression": f"({request['ConditionExpression']}) AND {attributed}",
            "ExpressionAttributeNames": names,
            "ExpressionAttributeValues": values,
        }
        old = table.conditional_update(self.event, **conditioned)
        if old is not None and get_s(old, "owner") != self.owner:
            raise _AttributionChanged
        return old
