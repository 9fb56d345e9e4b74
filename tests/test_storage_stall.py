"""A DynamoDB that stops answering (issue 7, finding 4): the API answers an honest 503 with Retry-After
within 4 s, and the writes it gave up on, which the stalled endpoint applies later, leave no hidden
open upload and count no extra signature. In PULL mode, an event pulled during the stall is not confirmed,
and VOD's redelivery applies it.

The endpoint is our local DynamoDB, frozen: requests are accepted but only served after the thaw, in
arrival order, like a real endpoint that commits after the client's timeout.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest

from chalicelib import container
from chalicelib.items import limits_key, upload_key
from chalicelib.storage.intents import IntentStorage
from devstack.dynamodb import DynamoDBServer
from devstack.table import ensure_table, local_client
from tests import vod_payloads as vod
from tests.conftest import ApiFactory, TokenFactory, bearer
from tests.test_pull_consumer import CONSUMER_SECONDS, as_user, attributed_file, upload_through
from vodlocal import Handle

ANSWER_WITHIN_SECONDS = 4.0


@pytest.fixture
def stalling(stage_env: dict[str, str]) -> Iterator[tuple[DynamoDBServer, Any]]:
    """A DynamoDB endpoint of this test's own, so that freezing it stalls nobody else."""
    with DynamoDBServer() as server:
        client = local_client(server.endpoint_url)
        ensure_table(client, stage_env["TABLE_NAME"])
        stage_env["DYNAMODB_ENDPOINT_URL"] = server.endpoint_url
        yield server, client


def settle(server: DynamoDBServer, client: Any, table: str) -> None:
    """After a thaw: wait until the held requests have been served (a read queues behind them)."""
    deadline = time.monotonic() + 20
    while server.held_requests and time.monotonic() < deadline:
        time.sleep(0.05)
    client.describe_table(TableName=table)


def timed(call: Any) -> tuple[Any, float]:
    started = time.perf_counter()
    response = call()
    return response, time.perf_counter() - started


def assert_honest_503(response: Any, elapsed: float) -> None:
    assert response.status_code == 503, response.body
    assert elapsed < ANSWER_WITHIN_SECONDS, elapsed
    assert int(response.headers["Retry-After"]) >= 1
    assert response.json_body["error"] == "service_unavailable"


def test_a_stalled_create_is_a_quick_503_and_leaves_no_hidden_open_upload(
    stalling: tuple[DynamoDBServer, Any], api_factory: ApiFactory, token_for: TokenFactory, stage_env: dict[str, str]
) -> None:
    server, client = stalling
    api, alice, table = api_factory(), bearer(token_for("alice")), stage_env["TABLE_NAME"]
    kept = api.post("/uploads", headers=alice, body=b"{}")
    assert kept.status_code == 201
    with server.frozen():
        response, elapsed = timed(lambda: api.post("/uploads", headers=alice, body=b'{"title": "stalled"}'))
        assert_honest_503(response, elapsed)
    settle(server, client, table)

    slots = client.get_item(TableName=table, Key=limits_key("alice"), ConsistentRead=True)["Item"]["openSlots"]["SS"]
    assert [slot.split("#", 1)[1] for slot in slots] == [kept.json_body["uploadId"]]
    uploads = client.scan(TableName=table, FilterExpression="begins_with(pk, :u)",
                          ExpressionAttributeValues={":u": {"S": "UPLOAD#"}})["Items"]  # fmt: skip
    open_uploads = [item["pk"]["S"] for item in uploads if item["status"]["S"] == "open"]
    assert open_uploads == [f"UPLOAD#{kept.json_body['uploadId']}"]
    assert api.post("/uploads", headers=alice, body=b"{}").status_code == 201  # storage is back


def test_a_stalled_resign_counts_no_signature(
    stalling: tuple[DynamoDBServer, Any], api_factory: ApiFactory, token_for: TokenFactory, stage_env: dict[str, str]
) -> None:
    """botocore used to re-send the update after its read timeout and count two signatures, neither of
    which the client received."""
    server, client = stalling
    api, alice, table = api_factory(), bearer(token_for("alice")), stage_env["TABLE_NAME"]
    upload_id = api.post("/uploads", headers=alice, body=b"{}").json_body["uploadId"]
    with server.frozen():
        response, elapsed = timed(lambda: api.post(f"/uploads/{upload_id}/signature", headers=alice, body=b""))
        assert_honest_503(response, elapsed)
    settle(server, client, table)
    item = client.get_item(TableName=table, Key=upload_key(upload_id), ConsistentRead=True)["Item"]
    assert len(item["signatureTokens"]["SS"]) == 1  # the first signature only: the stalled one is void
    assert len(item["voidedTokens"]["SS"]) == 1
    renewed = api.post(f"/uploads/{upload_id}/signature", headers=alice, body=b"")
    assert renewed.status_code == 200, renewed.body
    assert renewed.json_body["signaturesRemaining"] == 18


def test_a_stalled_cancel_is_a_quick_503_and_its_retry_answers_the_one_cancel_that_landed(
    stalling: tuple[DynamoDBServer, Any],
    api_factory: ApiFactory,
    token_for: TokenFactory,
    stage_env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Storage stalls as the cancel's transaction (intent, slot, outbox row) is sent, and applies it after the API
    gave up: the client's retry finds it cancelled, and there is one event, as for any cancel."""
    server, client = stalling
    api, alice, table = api_factory(), bearer(token_for("alice")), stage_env["TABLE_NAME"]
    upload_id = api.post("/uploads", headers=alice, body=b"{}").json_body["uploadId"]
    cancel_intent = IntentStorage.cancel_intent

    def stall_then_cancel(storage: IntentStorage, intent: Any, event: Any) -> None:
        server.freeze()
        cancel_intent(storage, intent, event)

    with monkeypatch.context() as patched:
        patched.setattr(IntentStorage, "cancel_intent", stall_then_cancel)
        try:
            response, elapsed = timed(lambda: api.delete(f"/uploads/{upload_id}", headers=alice))
            assert_honest_503(response, elapsed)
        finally:
            server.thaw()
    settle(server, client, table)
    landed = client.get_item(TableName=table, Key=upload_key(upload_id), ConsistentRead=True)["Item"]
    assert landed["status"]["S"] == "cancelled"  # applied after the API had answered 503

    retried = api.delete(f"/uploads/{upload_id}", headers=alice)
    assert (retried.status_code, retried.json_body["status"]) == (200, "cancelled"), retried.body
    assert api.delete(f"/uploads/{upload_id}", headers=alice).json_body == retried.json_body
    outbox = client.scan(TableName=table, FilterExpression="begins_with(pk, :o)",
                         ExpressionAttributeValues={":o": {"S": "OUTBOX#"}})["Items"]  # fmt: skip
    assert [(row["type"]["S"], row["uploadId"]["S"]) for row in outbox] == [("upload.cancelled", upload_id)]
    limits = client.get_item(TableName=table, Key=limits_key("alice"), ConsistentRead=True)["Item"]
    assert "openSlots" not in limits or not limits["openSlots"].get("SS")


def test_a_stalled_callback_answers_before_vod_gives_up_and_logs_what_it_did_not_apply(
    stalling: tuple[DynamoDBServer, Any],
    api_factory: ApiFactory,
    token_for: TokenFactory,
    stage_env: dict[str, str],
    capfd: Any,
) -> None:
    server, client = stalling
    api, alice = api_factory(), bearer(token_for("alice"))
    created = api.post("/uploads", headers=alice, body=b"{}")
    from chalicelib import vod_signature

    context = vod_signature.verify(created.json_body["signature"], stage_env["VOD_SECRET_KEY"]).params.options
    event = json.dumps(vod.signed(vod.new_file_upload("f-stall", context.sourceContext), stage_env["VOD_SIGN_KEY"]))
    path = f"/vod/events/{stage_env['VOD_CALLBACK_TOKEN']}"
    with server.frozen():
        response, elapsed = timed(lambda: api.post(path, headers={"Content-Type": "application/json"}, body=event))
        assert_honest_503(response, elapsed)
    settle(server, client, stage_env["TABLE_NAME"])
    logged = [json.loads(line) for line in capfd.readouterr().out.splitlines() if "vod event not applied" in line]
    assert [(line["level"], line["fileId"]) for line in logged] == [("ERROR", "f-stall")]
    # The redelivery (VOD's own, or PULL's) attributes it exactly once.
    assert api.post(path, headers={"Content-Type": "application/json"}, body=event).json_body["outcome"] == "attributed"
    assert [v["fileId"] for v in api.get("/videos", headers=alice).json_body["videos"]] == ["f-stall"]


def test_a_pulled_event_is_not_confirmed_while_storage_is_frozen_and_its_redelivery_applies(
    stalling: tuple[DynamoDBServer, Any],
    pull_vod: Handle,
    api_factory: ApiFactory,
    token_for: TokenFactory,
    stage_env: dict[str, str],
) -> None:
    server, client = stalling
    api, token = api_factory(), token_for("alice")
    upload_id = upload_through(pull_vod, as_user(api, token))
    with server.frozen():
        report, elapsed = timed(lambda: container.services().pull_consumer.run(CONSUMER_SECONDS))
    # Each delivery gave up within its deadline and was left unconfirmed: VOD keeps it and delivers it again.
    assert report.pulled >= 1 and report.failed == report.pulled and report.outcomes == {}, report
    assert elapsed < CONSUMER_SECONDS + ANSWER_WITHIN_SECONDS
    settle(server, client, stage_env["TABLE_NAME"])
    assert attributed_file(api, token, upload_id) is None
    redelivered = container.services().pull_consumer.run(CONSUMER_SECONDS)
    assert redelivered.outcomes == {"attributed": 1}, redelivered
    assert attributed_file(api, token, upload_id) is not None
    assert container.services().pull_consumer.run(CONSUMER_SECONDS).pulled == 0  # confirmed at last
