"""The reconciliation sweep against the local DynamoDB (and vodlocal for DeleteMedia): intents no upload
came for are expired and their slots released, a late event still completes one, and old uploads nobody
owns are only reported unless the stage enables their deletion, while a reviewed FileId that is a user's
video is never deleted.

The sweep is given a clock that runs ahead, so that hours pass without waiting for them."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import pytest

import app as application
from chalicelib import container, sweep, vod_signature
from chalicelib.deletion import MediaLibrary
from chalicelib.items import limits_key
from chalicelib.sweep import Deletion, ReconciliationSweep
from chalicelib.vod_api import VodMediaLibrary, vod_api_client
from devstack.pull import RunContext, scheduled_event
from tests import vod_payloads as vod
from tests.conftest import Stack, TokenFactory, bearer, with_policy
from tests.test_pull_consumer import as_user, attributed_file, upload_through
from tests.waiting import pulled
from vodlocal import Handle

WINDOW, TTL = 60, 30  # the test policy's upload window and signature lifetime
CLOSED = WINDOW + TTL + 1  # how far ahead of an intent's creation no signature of it is valid any more
GRACE = 3600
REFUSING_VOD = "http://127.0.0.1:9"  # nothing listens on the discard port: every call is refused


@pytest.fixture
def stack(
    api_factory: Any, stage_env: dict[str, str], token_for: TokenFactory, dynamodb: Any, table_name: str
) -> Stack:
    with_policy(stage_env, uploadWindowSeconds=WINDOW, signatureTtlSeconds=TTL, maxOpenIntents=50)
    return Stack(api_factory(), stage_env, token_for, dynamodb, table_name)


def media_at(stage_env: dict[str, str], endpoint: str) -> Callable[[], MediaLibrary]:
    return lambda: VodMediaLibrary(stage_env["VOD_SECRET_ID"], stage_env["VOD_SECRET_KEY"], endpoint, None)


def sweep_ahead(
    seconds: float, deletion: Deletion = "dry-run", media: Callable[[], MediaLibrary] | None = None
) -> ReconciliationSweep:
    """The stage's sweep, on a clock `seconds` ahead."""
    services = container.services()
    return ReconciliationSweep(
        services.storage,
        media or (lambda: pytest.fail("the sweep called VOD without a deletion to make")),
        deletion,
        GRACE,
        services.settings.request_deadline_seconds,
        clock=lambda: time.time() + seconds,
    )


def intent_status(stack: Stack, upload_id: str, user: str = "alice") -> str:
    response = stack.api.get(f"/uploads/{upload_id}", headers=bearer(stack.token_for(user)))
    assert response.status_code == 200, response.body
    return str(response.json_body["status"])


def open_slots(stack: Stack, user: str = "alice") -> list[str]:
    item = stack.dynamodb.get_item(TableName=stack.table, Key=limits_key(user), ConsistentRead=True).get("Item", {})
    return list(item.get("openSlots", {}).get("SS", []))


def test_intents_no_upload_came_for_are_expired_and_their_slots_released(stack: Stack) -> None:
    (done, done_context), (idle, _), (late, late_context) = (stack.create_upload() for _ in range(3))
    assert stack.deliver(vod.new_file_upload("5285890000000001", done_context)).json_body["outcome"] == "attributed"
    assert len(open_slots(stack)) == 2

    assert sweep_ahead(WINDOW).run(30).expired == 0  # the window has ended; the last signature is still valid
    report = sweep_ahead(CLOSED).run(30)
    assert (report.expired, report.failed, report.finished) == (2, 0, True)
    assert [intent_status(stack, upload_id) for upload_id in (done, idle, late)] == ["completed", "expired", "expired"]
    assert open_slots(stack) == []
    assert sweep_ahead(CLOSED).run(30).expired == 0  # expired intents leave the sweep's index

    # An event still on its way when the intent expired (PULL keeps them for days) completes it all the same.
    assert stack.deliver(vod.new_file_upload("5285890000000002", late_context)).json_body["outcome"] == "attributed"
    assert intent_status(stack, late) == "completed"
    assert {video["fileId"] for video in stack.videos()} == {"5285890000000001", "5285890000000002"}
    # An expired intent gets no new signature, and says why.
    renewed = stack.api.post(f"/uploads/{idle}/signature", headers=bearer(stack.token_for("alice")))
    assert renewed.status_code == 409 and "window has closed" in renewed.json_body["message"]


def test_the_sweep_works_through_every_partition_in_batches(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sweep, "BATCH", 3)
    uploads = {user: [stack.create_upload(user)[0] for _ in range(8)] for user in ("alice", "bob", "carol")}
    report = sweep_ahead(CLOSED).run(60)
    assert (report.expired, report.finished) == (24, True)
    for user, upload_ids in uploads.items():
        assert {intent_status(stack, upload_id, user) for upload_id in upload_ids} == {"expired"}
        assert open_slots(stack, user) == []


def test_an_open_window_is_left_alone(stack: Stack) -> None:
    upload_id, _ = stack.create_upload()
    assert sweep_ahead(0).run(30).expired == 0
    assert intent_status(stack, upload_id) == "open" and len(open_slots(stack)) == 1


def test_the_scheduled_handler_runs_the_sweep_of_the_stage(stack: Stack) -> None:
    stack.create_upload()
    result = application.app.handler_map["reconcile"](
        scheduled_event("vod-upload-backend-local-reconcile"), RunContext(30)
    )
    # Nothing has closed yet on the real clock; the handler reports the run's figures.
    assert result == {
        "expired": 0, "deletion": "dry-run", "dueForDeletion": 0, "deleted": 0, "keptOwned": 0,
        "deletionsFinished": 0, "failed": 0, "finished": True,
    }  # fmt: skip


def orphan_in_vod(vod_handle: Handle, stage_env: dict[str, str]) -> None:
    """A real upload to vodlocal whose signature is ours but carries no intent of ours (as an upload signed
    with a leaked or hand-made signature would)."""
    params = vod_signature.new_params(
        stage_env["VOD_SECRET_ID"], 600, vod_signature.SignatureOptions(sourceContext="not-one-of-ours")
    )
    signature = vod_signature.sign(params, stage_env["VOD_SECRET_KEY"])
    upload_through(vod_handle, lambda _path, _body: {"signature": signature, "uploadId": "orphan"})


def exists_in_vod(stage_env: dict[str, str], file_id: str) -> bool:
    from tencentcloud.vod.v20180717 import models

    request = models.DescribeMediaInfosRequest()
    request.FileIds = [file_id]
    client = vod_api_client(stage_env["VOD_SECRET_ID"], stage_env["VOD_SECRET_KEY"], stage_env["VOD_API_ENDPOINT"])
    return file_id not in (client.DescribeMediaInfos(request).NotExistFileIdSet or [])


def test_old_unattributed_uploads_are_deleted_from_vod_only_when_enabled(
    pull_vod: Handle, api_factory: Any, stage_env: dict[str, str], token_for: TokenFactory, dynamodb: Any
) -> None:
    stack = Stack(api_factory(), stage_env, token_for, dynamodb, stage_env["TABLE_NAME"])
    orphan_in_vod(pull_vod, stage_env)
    assert pulled({"orphan": 1}) == {"orphan": 1}
    [review] = container.services().storage.reviews.pending()
    orphan = review["fileId"]
    gone = "5285890000000404"  # kept for review, but not (or no longer) in VOD
    assert stack.deliver(vod.new_file_upload(gone, "not-a-context")).json_body["outcome"] == "orphan"
    vod_media = media_at(stage_env, stage_env["VOD_API_ENDPOINT"])

    assert sweep_ahead(GRACE - 60, "delete", vod_media).run(30).due_for_deletion == []  # not old enough yet
    dry = sweep_ahead(GRACE + 1).run(30)  # the default: report only
    assert (sorted(dry.due_for_deletion), dry.deleted) == (sorted([orphan, gone]), 0)
    assert exists_in_vod(stage_env, orphan)

    failing = sweep_ahead(GRACE + 1, "delete", media_at(stage_env, REFUSING_VOD)).run(30)
    assert (failing.deleted, failing.failed, failing.finished) == (0, 1, False)
    assert len(container.services().storage.reviews.pending()) == 2  # left for the next run

    deleting = sweep_ahead(GRACE + 1, "delete", vod_media).run(30)
    assert (sorted(deleting.due_for_deletion), deleting.deleted, deleting.failed) == (sorted([orphan, gone]), 2, 0)
    assert not exists_in_vod(stage_env, orphan)
    assert container.services().storage.reviews.pending() == []
    stored = dynamodb.get_item(
        TableName=stage_env["TABLE_NAME"], Key={"pk": {"S": f"REVIEW#{orphan}"}, "sk": {"S": "REVIEW"}}
    )["Item"]
    assert "deletedFromVodAt" in stored and stored["kind"]["S"] == "orphan"  # the record stays as the trace
    # VOD tells of the deletion like any other (FileDeleted), and the next sweep finds nothing due.
    assert pulled({"deleted": 1}) == {"deleted": 1}
    assert sweep_ahead(GRACE + 1, "delete", vod_media).run(30).due_for_deletion == []
    assert json.dumps(deleting.as_fields())  # the handler's log line and return value


def test_the_sweep_deletes_only_uploads_nobody_owns(
    pull_vod: Handle, api_factory: Any, stage_env: dict[str, str], token_for: TokenFactory, dynamodb: Any
) -> None:
    """A review item stands for an event, not a file: here Bob's intent came with Alice's FileId (a second,
    VOD-signed NewFileUpload for it), which is rejected and kept for review while the file is Alice's video."""
    stack = Stack(api_factory(), stage_env, token_for, dynamodb, stage_env["TABLE_NAME"])
    alices = upload_through(pull_vod, as_user(stack.api, token_for("alice")))
    assert pulled({"attributed": 1}) == {"attributed": 1}
    owned = attributed_file(stack.api, token_for("alice"), alices)
    assert owned is not None
    _, bobs_context = stack.create_upload("bob")
    assert stack.deliver(vod.new_file_upload(owned, bobs_context)).json_body["outcome"] == "rejected"
    orphan_in_vod(pull_vod, stage_env)
    assert pulled({"orphan": 1}) == {"orphan": 1}
    [orphan] = [
        review["fileId"] for review in container.services().storage.reviews.pending() if review["fileId"] != owned
    ]
    eight_days = 8 * 86400
    vod_media = media_at(stage_env, stage_env["VOD_API_ENDPOINT"])

    dry = sweep_ahead(eight_days).run(30)
    assert (dry.due_for_deletion, dry.kept_owned, dry.deleted) == ([orphan], [owned], 0)
    deleting = sweep_ahead(eight_days, "delete", vod_media).run(30)
    assert (deleting.due_for_deletion, deleting.deleted, deleting.kept_owned, deleting.failed) == ([orphan], 1, [], 0)

    assert exists_in_vod(stage_env, owned) and not exists_in_vod(stage_env, orphan)
    # VOD tells of the one deletion (FileDeleted); Alice's video is still hers to see.
    assert pulled({"deleted": 1}) == {"deleted": 1}
    assert stack.api.get(f"/videos/{owned}", headers=bearer(token_for("alice"))).status_code == 200
    assert container.services().storage.reviews.pending() == []
    kept = dynamodb.get_item(
        TableName=stage_env["TABLE_NAME"], Key={"pk": {"S": f"REVIEW#{owned}"}, "sk": {"S": "REVIEW"}}
    )["Item"]
    assert (kept["kind"]["S"], kept["ownedBy"]["S"], kept["gsi1pk"]["S"]) == ("rejected", "alice", "REVIEW#OWNED")
    assert "deletedFromVodAt" not in kept
    assert sweep_ahead(eight_days, "delete", vod_media).run(30).as_fields()["keptOwned"] == 0
