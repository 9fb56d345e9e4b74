"""Quotas per tier (issue 21, item 4), through the API against the local DynamoDB: a declared size that does not
fit is refused with the quota and the usage; attribution counts usage; an upload that breaks the bytes or the
duration quota is marked, published (a `quota.exceeded` outbox row) and kept for review or deleted from VOD;
a deletion gives its bytes back; concurrent uploads through the local stack never take the count past the
quota; `GET /me` says it all."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import pytest

from chalicelib import container
from chalicelib.deletion import PENDING_SECONDS
from chalicelib.items import deletion_key, usage_key
from chalicelib.vod_api import VodMediaCatalog
from tests import vod_payloads as vod
from tests.conftest import Stack, TokenFactory, bearer, call, vodlocal_for, with_policy
from tests.test_pull_consumer import commit_through
from tests.test_sweep import media_at, sweep_ahead
from vodlocal import Handle, start

QUOTA = 1000


@pytest.fixture
def stage_env(stage_env: dict[str, str]) -> dict[str, str]:
    """Every stage of this module has the quotas (set before `chalice_local` starts with them)."""
    with_policy(stage_env, maxStoredBytes=QUOTA, maxVideoSeconds=3600, maxOpenIntents=20)
    return stage_env


@pytest.fixture
def stack(
    api_factory: Any, stage_env: dict[str, str], token_for: TokenFactory, dynamodb: Any, table_name: str
) -> Stack:
    return Stack(api_factory(), stage_env, token_for, dynamodb, table_name)


def me(stack: Stack, user: str = "alice") -> dict[str, Any]:
    response = stack.api.get("/me", headers=bearer(stack.token_for(user)))
    assert response.status_code == 200, response.body
    return dict(response.json_body)


def attribute(stack: Stack, file_id: str, size: int, duration: float = 60.5, user: str = "alice") -> str:
    upload_id, context = stack.create_upload(user)
    outcome = stack.deliver(vod.new_file_upload(file_id, context, size=size, duration=duration)).json_body["outcome"]
    assert outcome == "attributed"
    return upload_id


def video(stack: Stack, file_id: str, user: str = "alice") -> dict[str, Any]:
    response = stack.api.get(f"/videos/{file_id}", headers=bearer(stack.token_for(user)))
    assert response.status_code == 200, response.body
    return dict(response.json_body)


def outbox(stack: Stack) -> list[dict[str, Any]]:
    """The `quota.exceeded` rows (other facts publish theirs)."""
    rows = [item for item in stack.items() if item.get("type", {}).get("S") == "quota.exceeded"]
    return [
        {name: item[name]["S"] for name in ("eventId", "type", "owner", "uploadId", "fileId")}
        | {"data": json.loads(item["data"]["S"])}
        for item in rows
    ]


def deletions(stack: Stack) -> list[tuple[str, str]]:
    """The `video.deleted` rows: FileId and reason."""
    rows = [item for item in stack.items() if item.get("type", {}).get("S") == "video.deleted"]
    return sorted((item["fileId"]["S"], json.loads(item["data"]["S"])["reason"]) for item in rows)


def test_a_declared_size_past_the_bytes_quota_is_refused_naming_the_quota_and_the_usage(stack: Stack) -> None:
    alice = bearer(stack.token_for("alice"))
    assert stack.api.post("/uploads", headers=alice, body=b'{"fileSize": 600}').status_code == 201
    refused = stack.api.post("/uploads", headers=alice, body=b'{"fileSize": 401}')
    assert refused.status_code == 429
    assert "Retry-After" not in refused.headers  # waiting makes no room
    assert refused.json_body == {
        "error": "quota_exceeded",
        "message": "a file of 401 bytes does not fit in the quota of 1000 bytes: 0 stored and 600 declared by "
        "open uploads",
        "limit": "stored_bytes",
        "maxStoredBytes": QUOTA,
        "bytesStored": 0,
        "bytesReserved": 600,
        "fileSize": 401,
    }
    assert stack.api.post("/signature", headers=alice, body=b'{"fileSize": 401}').status_code == 429  # same create
    assert stack.api.post("/uploads", headers=alice, body=b'{"fileSize": 400}').status_code == 201
    # Full: not even an upload that declares nothing is signed. Another user's quota is their own.
    nothing = stack.api.post("/uploads", headers=alice, body=b"{}")
    assert (nothing.status_code, nothing.json_body["fileSize"]) == (429, None)
    assert (
        stack.api.post("/uploads", headers=bearer(stack.token_for("bob")), body=b'{"fileSize": 1000}').status_code
        == 201
    )


def test_attribution_counts_usage_and_get_me_reports_tier_limits_and_usage(stack: Stack) -> None:
    assert me(stack) == {
        "subject": "alice",
        "tier": "default",
        "limits": {
            "maxStoredBytes": QUOTA, "maxVideoSeconds": 3600, "overQuota": "review", "maxFileSize": 5368709120,
            "maxOpenIntents": 20, "maxIntentsPerHour": 30,
        },
        "usage": {"bytesStored": 0, "videos": 0, "openIntents": 0, "bytesReserved": 0},
    }  # fmt: skip
    attribute(stack, "5285890000000101", 300)
    stack.api.post("/uploads", headers=bearer(stack.token_for("alice")), body=b'{"fileSize": 250}')
    assert me(stack)["usage"] == {"bytesStored": 300, "videos": 1, "openIntents": 1, "bytesReserved": 250}
    assert video(stack, "5285890000000101")["quotaExceeded"] == []
    assert outbox(stack) == []
    counters = stack.dynamodb.get_item(TableName=stack.table, Key=usage_key("alice"))["Item"]
    assert (counters["bytesStored"]["N"], counters["videos"]["N"]) == ("300", "1")


def test_an_upload_past_the_bytes_quota_is_marked_published_and_kept_for_review(stack: Stack) -> None:
    attribute(stack, "5285890000000201", 600)
    upload_id = attribute(stack, "5285890000000202", 600)  # declared nothing: only VOD's size tells
    assert video(stack, "5285890000000202")["quotaExceeded"] == ["bytes"]
    assert {v["fileId"] for v in stack.videos()} == {"5285890000000201", "5285890000000202"}  # kept
    assert me(stack)["usage"]["bytesStored"] == 600  # counted only what fitted
    assert me(stack)["usage"]["videos"] == 2
    [event] = outbox(stack)
    assert event == {
        "eventId": event["eventId"], "type": "quota.exceeded", "owner": "alice", "uploadId": upload_id,
        "fileId": "5285890000000202", "data": {"quota": "bytes", "limit": QUOTA, "measured": 600, "rule": "review"},
    }  # fmt: skip
    assert not any(item["pk"]["S"].startswith("QUOTA#") for item in stack.items())  # nothing for the sweep
    # A duplicate of the event changes nothing: no second count, no second row.
    duplicate = stack.deliver(vod.new_file_upload("5285890000000202", None))
    assert duplicate.status_code == 200
    assert me(stack)["usage"]["bytesStored"] == 600 and len(outbox(stack)) == 1


def test_a_video_longer_than_the_tier_allows_is_marked_at_attribution(stack: Stack) -> None:
    attribute(stack, "5285890000000301", 100, duration=3600.5)
    assert video(stack, "5285890000000301")["quotaExceeded"] == ["duration"]
    assert me(stack)["usage"]["bytesStored"] == 100  # its bytes fitted: counted until it is deleted
    [event] = outbox(stack)
    assert event["data"] == {"quota": "duration", "limit": 3600, "measured": 3600.5, "rule": "review"}


def test_a_duration_reported_by_processing_breaks_the_quota_once(stack: Stack) -> None:
    upload_id = attribute(stack, "5285890000000401", 100, duration=0.0)  # not measured at upload
    assert video(stack, "5285890000000401")["quotaExceeded"] == []
    for status in ("PROCESSING", "FINISH"):  # reported twice: marked and published once
        event = vod.procedure_state_changed("5285890000000401", "task-1", status, [], duration=7200.0)
        assert stack.deliver(event).status_code == 200
    assert video(stack, "5285890000000401")["quotaExceeded"] == ["duration"]
    [event] = outbox(stack)
    assert (event["uploadId"], event["data"]) == (
        upload_id,
        {"quota": "duration", "limit": 3600, "measured": 7200.0, "rule": "review"},
    )
    short = vod.procedure_state_changed("5285890000000402", "task-2", "FINISH", [], duration=60.0)
    assert stack.deliver(short).status_code == 200 and len(outbox(stack)) == 1


def test_a_duration_reported_later_under_the_delete_rule_requests_the_deletion(
    api_factory: Any, stage_env: dict[str, str], token_for: TokenFactory, dynamodb: Any, table_name: str
) -> None:
    with_policy(stage_env, overQuota="delete")
    stack = Stack(api_factory(), stage_env, token_for, dynamodb, table_name)
    attribute(stack, "5285890000000411", 100, duration=0.0)  # not measured at upload
    assert video(stack, "5285890000000411")["deletionRequestedAt"] is None
    event = vod.procedure_state_changed("5285890000000411", "task-1", "FINISH", [], duration=7200.0)
    assert stack.deliver(event).status_code == 200
    marked = video(stack, "5285890000000411")
    assert marked["quotaExceeded"] == ["duration"] and marked["deletionRequestedAt"]
    listed = dynamodb.get_item(TableName=table_name, Key=deletion_key("5285890000000411"))["Item"]
    assert listed["gsi1pk"]["S"] == "DELETING"  # on the sweep's work list


def test_vods_file_deleted_gives_the_bytes_back_once(stack: Stack) -> None:
    attribute(stack, "5285890000000501", 700)
    attribute(stack, "5285890000000502", 700)  # over: marked, counted nothing
    for _ in range(2):
        assert stack.deliver(vod.file_deleted("5285890000000501", "5285890000000502")).status_code == 200
    assert me(stack)["usage"] == {"bytesStored": 0, "videos": 0, "openIntents": 0, "bytesReserved": 0}
    assert stack.videos() == []
    assert deletions(stack) == [  # with the usage, once each
        ("5285890000000501", "deleted_in_vod"),
        ("5285890000000502", "deleted_in_vod"),
    ]
    attribute(stack, "5285890000000503", 1000)  # the room is back
    assert video(stack, "5285890000000503")["quotaExceeded"] == []


def test_a_file_vod_deleted_before_its_upload_event_counts_nothing(stack: Stack) -> None:
    assert stack.deliver(vod.file_deleted("5285890000000601")).status_code == 200
    attribute(stack, "5285890000000601", 900)
    assert me(stack)["usage"]["bytesStored"] == 0 and me(stack)["usage"]["videos"] == 0
    assert stack.videos() == []


def test_the_delete_rule_deletes_the_upload_from_vod_through_the_sweep(
    api_factory: Any, stage_env: dict[str, str], token_for: TokenFactory, dynamodb: Any, table_name: str,
    tmp_path: Path,
) -> None:  # fmt: skip
    vod_handle = start(vodlocal_for("http://127.0.0.1:9", stage_env, tmp_path / "vodlocal"))  # pushes go nowhere
    try:
        stage_env["VOD_API_ENDPOINT"] = vod_handle.url
        with_policy(stage_env, overQuota="delete")
        stack = Stack(api_factory(), stage_env, token_for, dynamodb, table_name)
        alice = stack.token_for("alice")

        def post(path: str, body: bytes) -> dict[str, Any]:
            return dict(stack.api.post(path, headers=bearer(alice), body=body).json_body)

        kept, over = (commit_through(vod_handle, post, payload) for payload in (b"k" * 600, b"o" * 600))
        for upload_id, file_id in (kept, over):  # the client reports each done: VOD describes the file
            assert (
                post(f"/uploads/{upload_id}/complete", json.dumps({"fileId": file_id}).encode())["outcome"]
                == "attributed"
            )
        assert video(stack, over[1])["quotaExceeded"] == ["bytes"]
        # Its deletion is requested with the break (as its owner's request would), the kept one's is not.
        assert video(stack, over[1])["deletionRequestedAt"] and video(stack, kept[1])["deletionRequestedAt"] is None
        assert [event["data"]["rule"] for event in outbox(stack)] == ["delete"]

        report = sweep_ahead(PENDING_SECONDS + 1, media=media_at(stage_env, vod_handle.url)).run(30)
        assert (report.deletions_finished, report.failed) == (1, 0)
        catalog = VodMediaCatalog(stage_env["VOD_SECRET_ID"], stage_env["VOD_SECRET_KEY"], vod_handle.url, None)
        assert catalog.describe(over[1]) is None and catalog.describe(kept[1]) is not None
        assert [v["fileId"] for v in stack.videos()] == [kept[1]]
        assert me(stack)["usage"]["bytesStored"] == 600 and me(stack)["usage"]["videos"] == 1
        assert deletions(stack) == [(over[1], "over_quota")]
        done = dynamodb.get_item(TableName=table_name, Key=deletion_key(over[1]))["Item"]
        assert "gsi1pk" not in done and "completedAt" in done  # off the sweep's list
        sweep = sweep_ahead(PENDING_SECONDS + 1, media=media_at(stage_env, vod_handle.url))
        assert sweep.run(30).deletions_finished == 0
    finally:
        vod_handle.stop()
        container.reset()


UPLOADS, SIZE = 8, 300  # the quota holds 3 of them
CLIENT_ATTEMPTS = 5


def test_the_owners_deletion_gives_the_bytes_back_once(
    api_factory: Any, stage_env: dict[str, str], token_for: TokenFactory, dynamodb: Any, table_name: str,
    tmp_path: Path,
) -> None:  # fmt: skip
    """DELETE /videos/{fileId} completes through the deletion's one transaction: the usage is given back with the
    video's deletion and its event, and neither a second DELETE nor VOD's FileDeleted of our DeleteMedia gives it
    back again."""
    vod_handle = start(vodlocal_for("http://127.0.0.1:9", stage_env, tmp_path / "vodlocal"))  # pushes go nowhere
    try:
        stage_env["VOD_API_ENDPOINT"] = vod_handle.url
        stack = Stack(api_factory(), stage_env, token_for, dynamodb, table_name)
        alice = bearer(stack.token_for("alice"))

        def post(path: str, body: bytes) -> dict[str, Any]:
            return dict(stack.api.post(path, headers=alice, body=body).json_body)

        kept, gone = (commit_through(vod_handle, post, payload) for payload in (b"k" * 300, b"d" * 600))
        for upload_id, file_id in (kept, gone):
            assert (
                post(f"/uploads/{upload_id}/complete", json.dumps({"fileId": file_id}).encode())["outcome"]
                == "attributed"
            )
        assert me(stack)["usage"]["bytesStored"] == 900
        for _ in range(2):
            assert stack.api.request("DELETE", f"/videos/{gone[1]}", headers=alice).status_code == 204
        assert stack.deliver(vod.file_deleted(gone[1])).json_body["outcome"] == "duplicate"
        assert me(stack)["usage"] == {"bytesStored": 300, "videos": 1, "openIntents": 0, "bytesReserved": 0}
        assert deletions(stack) == [(gone[1], "owner_request")]
    finally:
        vod_handle.stop()
        container.reset()


def test_concurrent_uploads_through_the_local_stack_never_count_past_the_quota(
    chalice_local: str, vod_port: int, token_for: TokenFactory, stage_env: dict[str, str], dynamodb: Any,
    table_name: str, tmp_path: Path,
) -> None:  # fmt: skip
    """Eight uploads, each committed to vodlocal, then all reported done at once (`POST /uploads/{id}/complete`
    from eight threads) to `chalice local`: the attributions race on the usage item (vodlocal's pushes go
    nowhere, so that no event attributes one first). Exactly three fit and are counted; the five others are
    marked and published."""
    vodlocal = start(vodlocal_for("http://127.0.0.1:9", stage_env, tmp_path / "vodlocal", port=vod_port))
    try:
        check_concurrent_completes(chalice_local, vodlocal, token_for("alice"), dynamodb, table_name)
    finally:
        vodlocal.stop()


def check_concurrent_completes(
    chalice_local: str, vodlocal: Handle, alice: str, dynamodb: Any, table_name: str
) -> None:

    def post(path: str, body: bytes) -> dict[str, Any]:
        status, answer = call("POST", f"{chalice_local}{path}", body, alice)
        assert status in (200, 201), answer
        return dict(answer)

    committed = [commit_through(vodlocal, post, bytes([index]) * SIZE) for index in range(UPLOADS)]
    barrier, outcomes = threading.Barrier(UPLOADS), []

    def complete(upload_id: str, file_id: str) -> None:
        """As a client does: a 503 (storage slow under the race, on this shared machine) is retried."""
        barrier.wait()
        for _ in range(CLIENT_ATTEMPTS):
            status, answer = call("POST", f"{chalice_local}/uploads/{upload_id}/complete", {"fileId": file_id}, alice)
            if status != 503:
                break
        # "duplicate": an attempt that answered 503 had committed the attribution all the same.
        outcomes.append((status, "attributed" if answer.get("outcome") == "duplicate" else answer.get("outcome")))

    threads = [threading.Thread(target=complete, args=pair) for pair in committed]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert outcomes == [(200, "attributed")] * UPLOADS, outcomes

    status, account = call("GET", f"{chalice_local}/me", token=alice)
    assert status == 200 and account["usage"]["videos"] == UPLOADS
    assert account["usage"]["bytesStored"] == (QUOTA // SIZE) * SIZE <= QUOTA
    marked = [
        file_id
        for _, file_id in committed
        if call("GET", f"{chalice_local}/videos/{file_id}", token=alice)[1]["quotaExceeded"] == ["bytes"]
    ]
    assert len(marked) == UPLOADS - QUOTA // SIZE
    rows = dynamodb.scan(TableName=table_name)["Items"]
    events = [item for item in rows if item.get("type", {}).get("S") == "quota.exceeded"]
    assert sorted(item["fileId"]["S"] for item in events) == sorted(marked)
