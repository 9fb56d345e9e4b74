"""Each fact writes its event's outbox row in its own transaction (docs/events.md), against the local
DynamoDB endpoint: exactly one row per fact with the envelope of the catalogue, none for a duplicate or
replayed event, and none for a write that did not commit (a failed condition, or storage faults injected
by tests/fault_proxy.py)."""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

import pytest

from chalicelib import container
from chalicelib.errors import CompletionLost, ServiceUnavailable
from chalicelib.events import ProcessingUpdate, TaskOutput, UploadedFile
from chalicelib.items import item_to_envelope, open_intent_partition, upload_key
from chalicelib.media import MediaFacts
from chalicelib.storage import Storage
from chalicelib.uploads import IntentLimits
from tests import vod_payloads as vod
from tests.conftest import Stack, TokenFactory, with_policy
from tests.fault_proxy import FaultProxy
from tests.test_repository_conflicts import attributed
from tests.test_repository_in_progress import through
from tests.test_repository_limits import NOW
from tests.test_sweep import CLOSED, GRACE, TTL, WINDOW, media_at, orphan_in_vod, sweep_ahead
from tests.waiting import pulled
from vodlocal import Handle

FILE = "5285890000000001"


def outbox(dynamodb: Any, table_name: str) -> list[dict[str, Any]]:
    """Every event in the outbox, as delivered."""
    pages = dynamodb.get_paginator("scan").paginate(
        TableName=table_name,
        FilterExpression="begins_with(pk, :outbox)",
        ExpressionAttributeValues={":outbox": {"S": "OUTBOX#"}},
        ConsistentRead=True,
    )
    return [item_to_envelope(item) for page in pages for item in page["Items"]]


def types(events: list[dict[str, Any]]) -> Counter[str]:
    return Counter(event["type"] for event in events)


@pytest.fixture
def stack(
    api_factory: Any, stage_env: dict[str, str], token_for: TokenFactory, dynamodb: Any, table_name: str
) -> Stack:
    with_policy(stage_env, uploadWindowSeconds=WINDOW, signatureTtlSeconds=TTL)
    return Stack(api_factory(), stage_env, token_for, dynamodb, table_name)


def test_an_attribution_publishes_one_event_whichever_report_comes_first(stack: Stack) -> None:
    upload_id, context = stack.create_upload(body={"title": "cat", "fileName": "cat.mp4", "metadata": {"k": 1}})
    assert outbox(stack.dynamodb, stack.table) == []  # an intent is no fact anyone is told of
    reported = UploadedFile(FILE, context, "task-1", MediaFacts(name="cat", size=2048, duration=3.5))
    assert container.services().events.apply_reported(reported).outcome == "attributed"  # POST .../complete
    assert stack.deliver(vod.new_file_upload(FILE, context)).json_body["outcome"] == "duplicate"
    assert container.services().events.apply_reported(reported).outcome == "duplicate"

    [event] = outbox(stack.dynamodb, stack.table)
    assert event["id"] and event["schemaVersion"] == "1" and event["occurredAt"].endswith("Z")
    assert (event["type"], event["owner"], event["uploadId"], event["fileId"]) == (
        "upload.attributed", "alice", upload_id, FILE,
    )  # fmt: skip
    data = event["data"]
    assert (data["title"], data["fileName"], data["metadata"], data["size"], data["duration"]) == (
        "cat", "cat.mp4", {"k": 1}, 2048, 3.5,
    )  # fmt: skip

    second_id, second_context = stack.create_upload()
    assert stack.deliver(vod.new_file_upload("5285890000000002", second_context)).json_body["outcome"] == "attributed"
    reported_late = UploadedFile("5285890000000002", second_context)
    assert container.services().events.apply_reported(reported_late).outcome == "duplicate"
    attributions = [event for event in outbox(stack.dynamodb, stack.table) if event["uploadId"] == second_id]
    assert types(attributions) == {"upload.attributed": 1}


def test_uploads_kept_for_review_publish_once_per_file(stack: Stack) -> None:
    _, context = stack.create_upload()
    assert stack.deliver(vod.new_file_upload(FILE, "not-a-context")).json_body["outcome"] == "orphan"
    assert stack.deliver(vod.new_file_upload(FILE, "not-a-context")).json_body["outcome"] == "orphan"  # replayed
    assert stack.deliver(vod.new_file_upload("5285890000000002", context)).json_body["outcome"] == "attributed"
    # A second file for the same intent is rejected and kept for review, under the intent's owner.
    assert stack.deliver(vod.new_file_upload("5285890000000003", context)).json_body["outcome"] == "rejected"

    events = {event["fileId"]: event for event in outbox(stack.dynamodb, stack.table)}
    assert types(list(events.values())) == {"upload.kept_for_review": 2, "upload.attributed": 1}
    orphan, rejected = events[FILE], events["5285890000000003"]
    assert (orphan["owner"], orphan["uploadId"], orphan["data"]["kind"]) == ("", "", "orphan")
    assert (rejected["owner"], rejected["data"]["kind"]) == ("alice", "rejected")
    assert rejected["uploadId"] == events["5285890000000002"]["uploadId"]
    assert "already completed" in rejected["data"]["reason"]


def test_a_finished_task_flow_publishes_its_outcome_once(stack: Stack) -> None:
    upload_id, context = stack.create_upload()
    stack.deliver(vod.new_file_upload(FILE, context))
    processing = vod.procedure_state_changed(FILE, "task-ok", "PROCESSING", [(100010, "PROCESSING")])
    assert stack.deliver(processing).json_body["outcome"] == "updated"
    assert types(outbox(stack.dynamodb, stack.table)) == {"upload.attributed": 1}  # not finished: no event

    finished = vod.procedure_state_changed(FILE, "task-ok", "FINISH", [(100010, "SUCCESS"), (100020, "SUCCESS")])
    assert stack.deliver(finished).json_body["outcome"] == "updated"
    assert stack.deliver(finished).json_body["outcome"] == "updated"  # a copy: stored again, published once
    failing = vod.procedure_state_changed(FILE, "task-bad", "FINISH", [(100030, "FAIL")])
    assert stack.deliver(failing).json_body["outcome"] == "updated"
    # A flow finishing for a file nobody owns (yet) is published without an owner.
    assert stack.deliver(vod.procedure_state_changed("5285890000000009", "task-x", "FINISH", [])).status_code == 200

    events = {
        event["data"]["taskId"]: event for event in outbox(stack.dynamodb, stack.table) if "taskId" in event["data"]
    }
    assert {task: event["type"] for task, event in events.items()} == {
        "task-ok": "video.processed", "task-bad": "video.processing_failed", "task-x": "video.processed",
    }  # fmt: skip
    processed = events["task-ok"]
    assert (processed["owner"], processed["uploadId"], processed["fileId"]) == ("alice", upload_id, FILE)
    assert [task["definition"] for task in processed["data"]["tasks"]] == [100010, 100020]
    assert all(task["url"].endswith(".mp4") for task in processed["data"]["tasks"])
    assert [task["status"] for task in events["task-bad"]["data"]["tasks"]] == ["FAIL"]
    assert (events["task-x"]["owner"], events["task-x"]["uploadId"]) == ("", "")


def test_a_processed_event_is_bounded_whatever_the_flow_reports(
    storage: Storage, dynamodb: Any, table_name: str
) -> None:
    created, video = attributed("many-outputs")
    storage.intents.create_intent(created, IntentLimits(5, 30), NOW)
    storage.videos.complete_upload(created, video, NOW)
    url = "https://example.com/" + "x" * 1500  # each output's URL is within bounds; all of them together are not
    outputs = tuple(TaskOutput(f"Kind{index % 50}", "SUCCESS", 0, f"{url}/{index}.mp4", index) for index in range(400))
    update = ProcessingUpdate("task-big", video.file_id, "FINISH", None, outputs, message="m" * 10_000)
    assert storage.videos.apply_processing(update, NOW)
    [processed] = [event for event in outbox(dynamodb, table_name) if event["type"] == "video.processed"]
    assert 0 < len(processed["data"]["tasks"]) < len(outputs) and len(processed["data"]["message"]) == 256


def test_a_file_deleted_in_vod_publishes_the_videos_deletion_once(stack: Stack) -> None:
    upload_id, context = stack.create_upload()
    stack.deliver(vod.new_file_upload(FILE, context))
    assert stack.deliver(vod.file_deleted(FILE, "5285890000000404")).json_body["outcome"] == "deleted"
    assert stack.deliver(vod.file_deleted(FILE)).json_body["outcome"] == "duplicate"  # replayed: changes nothing
    assert stack.videos() == []

    [deleted] = [event for event in outbox(stack.dynamodb, stack.table) if event["type"] == "video.deleted"]
    assert (deleted["owner"], deleted["uploadId"], deleted["fileId"]) == ("alice", upload_id, FILE)
    assert deleted["data"] == {"reason": "deleted_in_vod"}
    assert types(outbox(stack.dynamodb, stack.table)) == {"upload.attributed": 1, "video.deleted": 1}  # not 0404's


def test_an_expired_intent_publishes_once(stack: Stack) -> None:
    idle, _ = stack.create_upload(body={"title": "never sent"})
    assert sweep_ahead(CLOSED).run(30).expired == 1
    assert sweep_ahead(CLOSED + 60).run(30).expired == 0
    [expired] = outbox(stack.dynamodb, stack.table)
    assert (expired["type"], expired["owner"], expired["uploadId"], expired["fileId"]) == (
        "upload.expired", "alice", idle, "",
    )  # fmt: skip
    assert expired["data"] == {
        "title": "never sent",
        "fileName": None,
        "signaturesIssued": 1,
        "windowEndedAt": expired["data"]["windowEndedAt"],
    }
    assert expired["occurredAt"] > expired["data"]["windowEndedAt"]


def test_the_sweep_deleting_an_unowned_upload_publishes_its_rejection(
    pull_vod: Handle, api_factory: Any, stage_env: dict[str, str], token_for: TokenFactory, dynamodb: Any
) -> None:
    Stack(api_factory(), stage_env, token_for, dynamodb, stage_env["TABLE_NAME"])
    orphan_in_vod(pull_vod, stage_env)
    assert pulled({"orphan": 1}) == {"orphan": 1}
    vod_media = media_at(stage_env, stage_env["VOD_API_ENDPOINT"])
    assert sweep_ahead(GRACE + 1).run(30).deleted == 0  # a dry run deletes and publishes nothing
    assert types(outbox(dynamodb, stage_env["TABLE_NAME"])) == {"upload.kept_for_review": 1}

    assert sweep_ahead(GRACE + 1, "delete", vod_media).run(30).deleted == 1
    events = {event["type"]: event for event in outbox(dynamodb, stage_env["TABLE_NAME"])}
    rejected, kept = events["upload.rejected"], events["upload.kept_for_review"]
    assert rejected["fileId"] == kept["fileId"] and rejected["id"] != kept["id"]
    assert (rejected["data"]["kind"], rejected["owner"]) == ("orphan", "")
    assert rejected["data"]["keptSince"] <= int(time.time())
    # VOD's FileDeleted for it then changes nothing: nobody owned it.
    assert pulled({"deleted": 1}) == {"deleted": 1}
    assert types(outbox(dynamodb, stage_env["TABLE_NAME"])) == {"upload.kept_for_review": 1, "upload.rejected": 1}


# -- writes that do not commit leave no event ---------------------------------------------------------------


def test_a_failed_condition_writes_no_event(storage: Storage, dynamodb: Any, table_name: str) -> None:
    created, video = attributed("conditions")
    storage.intents.create_intent(created, IntentLimits(5, 30), NOW)
    storage.videos.complete_upload(created, video, NOW)
    with pytest.raises(CompletionLost):  # completed already: the attribution's condition fails
        storage.videos.complete_upload(created, video, NOW + 1)
    assert types(outbox(dynamodb, table_name)) == {"upload.attributed": 1}


@pytest.mark.parametrize("fault", ["in_progress", "throttled", "unreachable"])
def test_a_transaction_that_never_commits_writes_neither_fact_nor_event(
    proxy: FaultProxy, storage: Storage, dynamodb: Any, table_name: str, fault: str
) -> None:
    created, video = attributed(f"never-{fault}")
    storage.intents.create_intent(created, IntentLimits(5, 30), NOW)
    proxy.plan = lambda _number, operation: fault if operation == "TransactWriteItems" else None
    faulty = through(proxy, table_name, [])
    with pytest.raises(ServiceUnavailable):
        faulty.videos.complete_upload(created, video, NOW)
    finished = ProcessingUpdate("task-1", video.file_id, "FINISH", None, ())
    with pytest.raises(ServiceUnavailable):
        faulty.videos.apply_processing(finished, NOW)
    with pytest.raises(ServiceUnavailable):
        faulty.intents.expire_closed_intents(open_intent_partition(created.upload_id), NOW + 10**6, 25)
    assert proxy.faults[fault] >= 3
    assert outbox(dynamodb, table_name) == []
    assert storage.intents.get_intent(created.upload_id) == created  # still open: no fact either
    assert storage.videos.get_video(video.file_id) is None


def test_a_commit_whose_answer_was_lost_has_one_event(
    proxy: FaultProxy, storage: Storage, dynamodb: Any, table_name: str
) -> None:
    """The transaction applied but its answer was lost: the retry (same token) finds it done, and the
    duplicate that follows writes nothing."""
    created, video = attributed("answer-lost")
    storage.intents.create_intent(created, IntentLimits(5, 30), NOW)
    proxy.plan = lambda number, operation: "answer_lost" if operation == "TransactWriteItems" and number == 1 else None
    through(proxy, table_name, []).videos.complete_upload(created, video, NOW)
    assert proxy.faults["answer_lost"] == 1
    with pytest.raises(CompletionLost):
        storage.videos.complete_upload(created, video, NOW)
    [event] = outbox(dynamodb, table_name)
    assert (event["type"], event["uploadId"], event["fileId"]) == (
        "upload.attributed",
        created.upload_id,
        video.file_id,
    )
    stored = dynamodb.get_item(TableName=table_name, Key=upload_key(created.upload_id), ConsistentRead=True)["Item"]
    assert stored["status"]["S"] == "completed"


def test_a_processed_event_names_the_owner_of_an_attribution_that_lands_meanwhile(
    proxy: FaultProxy, storage: Storage, dynamodb: Any, table_name: str
) -> None:
    """The flow's end is read as nobody's file, then the upload is attributed before the write arrives: the
    write's condition sees it, and the retry publishes the event with the owner."""
    created, video = attributed("attributed-meanwhile")
    storage.intents.create_intent(created, IntentLimits(5, 30), NOW)
    assert storage.videos.apply_processing(ProcessingUpdate("task-1", video.file_id, "PROCESSING", None, ()), NOW)

    def attribute_first(number: int, operation: str) -> None:
        if operation == "TransactWriteItems" and not attributions:
            attributions.append(number)
            storage.videos.complete_upload(created, video, NOW)  # directly, before the proxy forwards the write

    attributions: list[int] = []
    proxy.plan = attribute_first
    finished = ProcessingUpdate("task-1", video.file_id, "FINISH", None, ())
    assert through(proxy, table_name, []).videos.apply_processing(finished, NOW)
    assert attributions
    events = {event["type"]: event for event in outbox(dynamodb, table_name)}
    assert set(events) == {"upload.attributed", "video.processed"}
    assert (events["video.processed"]["owner"], events["video.processed"]["uploadId"]) == ("alice", created.upload_id)
