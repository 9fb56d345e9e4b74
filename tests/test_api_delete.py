"""`DELETE /videos/{fileId}`: the owner's video is deleted from VOD (DeleteMedia, through Tencent's SDK, to
vodlocal over HTTP) and from the owner's list, with one `video.deleted` outbox row; VOD failing leaves it
pending for a retry or the sweep; VOD's FileDeleted afterwards (PULLed or PUSHed) changes nothing.

Between the app and vodlocal runs the fault proxy, which counts the DeleteMedia calls that reach vodlocal and
injects VOD's failures. The states are chalicelib/deletion.py's."""

from __future__ import annotations

import calendar
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from chalicelib import container
from chalicelib.deletion import PENDING_SECONDS, RETRY_AFTER_SECONDS
from chalicelib.domain_events import video_deleted
from chalicelib.sweep import ReconciliationSweep
from chalicelib.vod_api import VodMediaLibrary
from devstack.events import EventSink, StreamReader, reading
from devstack.outbox_pipe import OutboxPipe
from tests.conftest import ApiFactory, TokenFactory, bearer, call, free_port, wait_for_video
from tests.fault_proxy import FaultProxy
from tests.test_api_complete import http_post
from tests.test_pull_consumer import CONSUMER_SECONDS, as_user, commit_through
from vodlocal import Handle

Items = Callable[[], list[dict[str, Any]]]


@pytest.fixture
def items(dynamodb: Any, table_name: str) -> Items:
    def scan() -> list[dict[str, Any]]:
        found = dynamodb.scan(TableName=table_name, ConsistentRead=True)["Items"]
        return sorted(found, key=lambda item: (item["pk"]["S"], item["sk"]["S"]))

    return scan


def deletion_events(items: Items) -> list[dict[str, Any]]:
    """The outbox's `video.deleted` rows (the attribution wrote its own `upload.attributed` before)."""
    return [item for item in items() if item["pk"]["S"].startswith("OUTBOX#") and item["type"]["S"] == "video.deleted"]


@dataclass
class Vod:
    """vodlocal behind the fault proxy: `failing` maps an API 3.0 action to the fault each of its calls meets."""

    handle: Handle
    proxy: FaultProxy
    failing: dict[str, str] = field(default_factory=dict)
    calls: list[str] = field(default_factory=list)

    def plan(self, _number: int, operation: str) -> str | None:
        self.calls.append(operation)
        return self.failing.get(operation)

    def has(self, file_id: str) -> bool:
        return self.handle.app.media.get(file_id) is not None


@pytest.fixture
def vod(pull_vod: Handle, stage_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Iterator[Vod]:
    """The stage's VOD API 3.0 is vodlocal (PULL mode) through the fault proxy."""
    vod = Vod(pull_vod, FaultProxy(pull_vod.url, lambda n, op: vod.plan(n, op), slow_seconds=3.0, keep_host=True))
    stage_env["VOD_API_ENDPOINT"] = vod.proxy.url
    monkeypatch.setenv("VOD_API_ENDPOINT", vod.proxy.url)
    container.reset()
    yield vod
    vod.proxy.stop()


def delete(api: Any, token: str, file_id: str) -> Any:
    return api.delete(f"/videos/{file_id}", headers=bearer(token))


def attributed_video(vod: Vod, api: Any, token: str) -> tuple[str, str]:
    """An upload through vodlocal, attributed by the PULLed event: its upload id and FileId."""
    upload_id, file_id = commit_through(vod.handle, as_user(api, token))
    outcomes = container.services().pull_consumer.run(CONSUMER_SECONDS).outcomes
    assert outcomes.get("attributed") == 1 and set(outcomes) <= {"attributed", "duplicate"}, outcomes
    return upload_id, file_id


def warm(api: Any, token: str) -> Any:
    """A new client whose services (the storage client, the token verifier) are built, as a warm function's
    are: a cold start's setup counts against the first request's deadline."""
    assert api.get("/videos", headers=bearer(token)).status_code == 200
    return api


def listed(api: Any, token: str) -> list[str]:
    return [video["fileId"] for video in api.get("/videos", headers=bearer(token)).json_body["videos"]]


def assert_deleted_once(items: Items, file_id: str, owner: str, upload_id: str, reason: str) -> None:
    [row] = deletion_events(items)
    assert row["pk"]["S"] == f"OUTBOX#{video_deleted(file_id, owner, upload_id, reason, 0).event_id}"
    fields = {name: row[name]["S"] for name in ("type", "schemaVersion", "owner", "uploadId", "fileId", "data")}
    assert fields == {
        "type": "video.deleted", "schemaVersion": "1", "owner": owner, "uploadId": upload_id, "fileId": file_id,
        "data": json.dumps({"reason": reason}, separators=(",", ":")),
    }  # fmt: skip
    occurred = calendar.timegm(time.strptime(row["occurredAt"]["S"], "%Y-%m-%dT%H:%M:%SZ"))
    assert abs(occurred - time.time()) < 3600  # the sweep's tests run it on a clock ahead
    assert int(row["ttl"]["N"]) == occurred + 7 * 86400


def pull_file_deleted(expected: str) -> None:
    """Run the PULL consumer until VOD's FileDeleted was applied with the `expected` outcome. (A NewFileUpload
    may come again alongside: vodlocal's 1 s confirm window is short under load. It is a duplicate.)"""
    outcomes = container.services().pull_consumer.run(CONSUMER_SECONDS).outcomes
    assert outcomes.get(expected, 0) >= 1 and set(outcomes) <= {expected, "duplicate"}, outcomes


def test_the_owner_deletes_a_video_from_vod_and_from_the_list_once(
    vod: Vod, api_factory: ApiFactory, token_for: TokenFactory, items: Items
) -> None:
    api, alice = api_factory(), token_for("alice")
    upload_id, file_id = attributed_video(vod, api, alice)
    _, kept = attributed_video(vod, api, alice)
    assert sorted(listed(api, alice)) == sorted([file_id, kept])

    answer = delete(api, alice, file_id)
    assert (answer.status_code, answer.body) == (204, b""), answer.body
    assert vod.calls.count("DeleteMedia") == 1 and not vod.has(file_id) and vod.has(kept)
    assert listed(api, alice) == [kept]
    assert api.get(f"/videos/{file_id}", headers=bearer(alice)).status_code == 404
    assert api.get(f"/uploads/{upload_id}", headers=bearer(alice)).json_body["video"] is None
    assert_deleted_once(items, file_id, "alice", upload_id, "owner_request")
    after = items()

    again = delete(api, alice, file_id)
    assert (again.status_code, again.body) == (204, b"")
    assert vod.calls.count("DeleteMedia") == 1  # nothing left to ask VOD
    # VOD's own FileDeleted, PULLed: the deletion it reports is done, so nothing is written.
    pull_file_deleted("duplicate")
    assert items() == after


def test_one_video_deleted_event_is_delivered_per_deleted_video(
    vod: Vod, api_factory: ApiFactory, token_for: TokenFactory, dynamodb_endpoint: str, table_name: str, tmp_path: Path
) -> None:
    """Through the table's stream to the local sink (devstack/events.py, as make dev delivers them): a deletion,
    its retry and VOD's FileDeleted deliver one event; a second video's deletion, delivered after them on the
    stream, is the signal that nothing more is on its way."""
    api, alice = api_factory(), token_for("alice")
    upload_id, file_id = attributed_video(vod, api, alice)
    other_upload, other = attributed_video(vod, api, alice)
    pipe = OutboxPipe.from_template("vod-upload", "local")
    with EventSink() as sink, reading(StreamReader(dynamodb_endpoint, table_name, sink.url, tmp_path / "ckpt", pipe)):
        for _ in range(2):
            assert delete(api, alice, file_id).status_code == 204
        pull_file_deleted("duplicate")
        assert delete(api, alice, other).status_code == 204
        ends = time.monotonic() + 20
        while other not in [event["fileId"] for event in sink.received.listed("video.deleted")]:
            assert time.monotonic() < ends, sink.received.listed()
            time.sleep(0.1)
    deleted = sink.received.listed("video.deleted")
    assert [(event["fileId"], event["uploadId"], event["owner"], event["data"]) for event in deleted] == [
        (file_id, upload_id, "alice", {"reason": "owner_request"}),
        (other, other_upload, "alice", {"reason": "owner_request"}),
    ]
    assert deleted[0]["id"] == video_deleted(file_id, "alice", upload_id, "owner_request", 0).event_id


def test_another_users_or_an_unknown_video_is_404_and_nothing_is_deleted(
    vod: Vod, api_factory: ApiFactory, token_for: TokenFactory, items: Items
) -> None:
    api, alice, bob = api_factory(), token_for("alice"), token_for("bob")
    _, file_id = attributed_video(vod, api, alice)
    before = items()
    for token, target in ((bob, file_id), (alice, "5285890000000404"), (alice, "x" * 65)):
        answer = delete(api, token, target)
        assert (answer.status_code, answer.json_body["error"]) == (404, "not_found"), (target, answer.body)
    assert items() == before
    assert "DeleteMedia" not in vod.calls and vod.has(file_id)
    assert listed(api, alice) == [file_id]


@pytest.mark.parametrize("fault", ["refused", "unreachable", "bad_gateway", "answer_lost", "slow"])
def test_vod_failing_is_a_503_with_retry_after_and_a_retry_finishes_the_deletion(
    vod: Vod, api_factory: ApiFactory, stage_env: dict[str, str], token_for: TokenFactory, items: Items, fault: str
) -> None:
    api, alice = api_factory(), token_for("alice")
    upload_id, file_id = attributed_video(vod, api, alice)
    if fault == "refused":  # nothing listens where the stage's VOD is
        stage_env["VOD_API_ENDPOINT"] = f"http://127.0.0.1:{free_port()}"
    else:
        vod.failing["DeleteMedia"] = fault
    failing_api = warm(api_factory(), alice)

    started = time.monotonic()
    answer = delete(failing_api, alice, file_id)
    took = time.monotonic() - started
    assert answer.status_code == 503, answer.body
    assert answer.headers["Retry-After"] == str(RETRY_AFTER_SECONDS)
    assert (answer.json_body["error"], answer.json_body["retryAfter"]) == ("service_unavailable", RETRY_AFTER_SECONDS)
    assert took < float(stage_env.get("REQUEST_DEADLINE_SECONDS", "3.5")) + 1.0, took
    # Pending: still listed, with when its deletion was asked for; no event yet. Whether VOD deleted the
    # file depends on where the fault struck: before vodlocal (refused, unreachable, 502) or after it.
    [shown] = api.get("/videos", headers=bearer(alice)).json_body["videos"]
    assert shown["fileId"] == file_id and isinstance(shown["deletionRequestedAt"], int)
    assert deletion_events(items) == []
    assert vod.has(file_id) == (fault in ("refused", "unreachable", "bad_gateway"))

    vod.failing.clear()
    stage_env["VOD_API_ENDPOINT"] = vod.proxy.url
    retry = warm(api_factory(), alice)
    assert delete(retry, alice, file_id).status_code == 204
    assert not vod.has(file_id) and listed(retry, alice) == []
    assert_deleted_once(items, file_id, "alice", upload_id, "owner_request")


@pytest.mark.parametrize("failing", ["deleting", "deleted"])
def test_storage_failing_leaves_nothing_half_done_and_a_retry_finishes(
    vod: Vod, api_factory: ApiFactory, stage_env: dict[str, str], token_for: TokenFactory, items: Items, failing: str
) -> None:
    """Every attempt of one of the deletion's two transactions is lost on its way to DynamoDB: the one that
    marks the video `deleting` (VOD is then not called) or the one that completes it (VOD has deleted the
    file). Either is all or nothing, and the owner's retry finishes the deletion."""
    api, alice = api_factory(), token_for("alice")
    upload_id, file_id = attributed_video(vod, api, alice)
    before = items()
    transactions_through = 0 if failing == "deleting" else 1
    transactions = 0

    def plan(_number: int, operation: str) -> str | None:
        nonlocal transactions
        transactions += operation == "TransactWriteItems"
        return "unreachable" if operation == "TransactWriteItems" and transactions > transactions_through else None

    storage = FaultProxy(stage_env["DYNAMODB_ENDPOINT_URL"], plan)
    real_storage, stage_env["DYNAMODB_ENDPOINT_URL"] = stage_env["DYNAMODB_ENDPOINT_URL"], storage.url
    try:
        answer = delete(warm(api_factory(), alice), alice, file_id)
    finally:
        storage.stop()
        stage_env["DYNAMODB_ENDPOINT_URL"] = real_storage
    assert (answer.status_code, answer.json_body["error"]) == (503, "service_unavailable"), answer.body
    assert "Retry-After" in answer.headers
    assert deletion_events(items) == []
    healed = api_factory()  # the stage's services are built again, on the real endpoint
    if failing == "deleting":
        assert items() == before and "DeleteMedia" not in vod.calls and vod.has(file_id)
    else:
        [shown] = healed.get("/videos", headers=bearer(alice)).json_body["videos"]
        assert isinstance(shown["deletionRequestedAt"], int) and not vod.has(file_id)

    assert delete(healed, alice, file_id).status_code == 204
    assert not vod.has(file_id) and listed(healed, alice) == []
    assert_deleted_once(items, file_id, "alice", upload_id, "owner_request")


def test_filedeleted_arriving_before_the_retry_finishes_the_pending_deletion_once(
    vod: Vod, api_factory: ApiFactory, token_for: TokenFactory, items: Items
) -> None:
    """VOD deleted the file but its answer was lost: VOD's FileDeleted completes the deletion the owner asked
    for, and the owner's retry then finds it done."""
    api, alice = api_factory(), token_for("alice")
    upload_id, file_id = attributed_video(vod, api, alice)
    vod.failing["DeleteMedia"] = "answer_lost"
    assert delete(warm(api_factory(), alice), alice, file_id).status_code == 503
    assert not vod.has(file_id) and listed(api, alice) == [file_id]

    pull_file_deleted("deleted")
    assert listed(api, alice) == []
    assert_deleted_once(items, file_id, "alice", upload_id, "owner_request")
    after = items()
    vod.failing.clear()
    assert delete(api, alice, file_id).status_code == 204
    assert items() == after


def sweep_ahead(seconds: float, media_endpoint: str, stage_env: dict[str, str]) -> ReconciliationSweep:
    """The stage's sweep on a clock `seconds` ahead, deleting through VOD at `media_endpoint`."""
    services = container.services()
    return ReconciliationSweep(
        services.storage,
        lambda: VodMediaLibrary(stage_env["VOD_SECRET_ID"], stage_env["VOD_SECRET_KEY"], media_endpoint, None),
        services.settings.delete_unattributed,  # the default, dry-run: pending deletions are finished all the same
        services.settings.delete_unattributed_after_seconds,
        services.settings.request_deadline_seconds,
        clock=lambda: time.time() + seconds,
    )


def test_the_sweep_finishes_a_deletion_left_pending(
    vod: Vod, api_factory: ApiFactory, stage_env: dict[str, str], token_for: TokenFactory, items: Items
) -> None:
    api, alice = api_factory(), token_for("alice")
    upload_id, file_id = attributed_video(vod, api, alice)
    _, kept = attributed_video(vod, api, alice)
    vod.failing["DeleteMedia"] = "bad_gateway"
    assert delete(warm(api_factory(), alice), alice, file_id).status_code == 503
    vod.failing.clear()
    pending = items()

    early = sweep_ahead(PENDING_SECONDS - 10, vod.proxy.url, stage_env).run(30)
    assert early.deletions_finished == 0 and vod.has(file_id)  # its request may still be under way
    refused = sweep_ahead(PENDING_SECONDS + 1, f"http://127.0.0.1:{free_port()}", stage_env).run(30)
    assert (refused.deletions_finished, refused.failed, refused.finished) == (0, 1, False)
    assert items() == pending

    swept = sweep_ahead(PENDING_SECONDS + 1, vod.proxy.url, stage_env).run(30)
    assert (swept.deletions_finished, swept.failed, swept.finished) == (1, 0, True)
    assert not vod.has(file_id) and vod.has(kept)
    assert listed(api, alice) == [kept]
    assert_deleted_once(items, file_id, "alice", upload_id, "owner_request")
    after = items()
    assert sweep_ahead(PENDING_SECONDS + 1, vod.proxy.url, stage_env).run(30).deletions_finished == 0
    assert delete(api, alice, file_id).status_code == 204
    pull_file_deleted("duplicate")
    assert items() == after


def test_a_video_deleted_in_vod_by_other_means_is_deleted_once_with_its_event(
    vod: Vod, api_factory: ApiFactory, stage_env: dict[str, str], token_for: TokenFactory, items: Items
) -> None:
    api, alice = api_factory(), token_for("alice")
    upload_id, file_id = attributed_video(vod, api, alice)
    assert VodMediaLibrary(stage_env["VOD_SECRET_ID"], stage_env["VOD_SECRET_KEY"], vod.handle.url, None).delete(
        file_id
    )  # as VOD's console would
    pull_file_deleted("deleted")
    assert listed(api, alice) == []
    assert_deleted_once(items, file_id, "alice", upload_id, "deleted_in_vod")
    after = items()
    assert delete(api, alice, file_id).status_code == 204
    assert "DeleteMedia" not in vod.calls and items() == after


# -- PUSH: a served copy of the app, vodlocal pushing its events to the callback ---------------------------------


def test_push_the_owner_deletes_and_the_pushed_filedeleted_changes_nothing(
    chalice_local: str, vodlocal: Handle, token_for: TokenFactory, items: Items
) -> None:
    api, alice = chalice_local, token_for("alice")
    upload_id, file_id = commit_through(vodlocal, http_post(api, alice))
    wait_for_video(api, alice, file_id)

    status, _ = call("DELETE", f"{api}/videos/{file_id}", token=alice)
    assert status == 204
    assert vodlocal.app.media.get(file_id) is None
    assert call("GET", f"{api}/videos/{file_id}", token=alice)[0] == 404
    assert_deleted_once(items, file_id, "alice", upload_id, "owner_request")
    after = items()

    # Two events pushed and answered: the NewFileUpload, then the FileDeleted our DeleteMedia caused.
    ends = time.monotonic() + 15
    while [record.get("status") for record in vodlocal.app.bus.deliveries] != [200, 200]:
        assert time.monotonic() < ends, vodlocal.app.bus.deliveries
        time.sleep(0.05)
    assert items() == after
    assert call("DELETE", f"{api}/videos/{file_id}", token=alice)[0] == 204
    assert items() == after
