"""Regression tests for what a hostile client found (issue 7): each fails on the code before its fix.

Through the Chalice test client against the local DynamoDB endpoint, like the other API tests.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from typing import Any

import pytest

from chalicelib.items import upload_key
from tests import vod_payloads as vod
from tests.conftest import Stack, TokenFactory, bearer, patient_services
from tests.test_api_uploads import post

# A JWT whose header names RS256 while the local stage's key is an EC key (the crypto layer raised
# TypeError: 500 and a traceback before).
RSA_HEADER_FOR_AN_EC_KEY = "eyJhbGciOiAiUlMyNTYifQ.e30.AAAA"


@pytest.fixture
def stack(api: Any, stage_env: dict[str, str], token_for: TokenFactory, dynamodb: Any, table_name: str) -> Stack:
    return Stack(api, stage_env, token_for, dynamodb, table_name)


def strict_json(text: str) -> Any:
    """What a browser's JSON.parse accepts: no NaN or Infinity."""

    def refuse(name: str) -> Any:
        raise ValueError(f"{name} is not JSON")

    return json.loads(text, parse_constant=refuse)


@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", "/videos"), ("GET", "/videos/f-1"), ("POST", "/uploads"), ("GET", "/uploads/x" * 1),
     ("POST", "/signature")],
)  # fmt: skip
def test_a_token_the_key_cannot_verify_is_401_on_every_route(api: Any, method: str, path: str) -> None:
    headers = {"Authorization": f"Bearer {RSA_HEADER_FOR_AN_EC_KEY}", "Content-Type": "application/json"}
    response = api.request(method, path, headers=headers, body=b"")
    assert response.status_code == 401, response.body
    assert response.json_body["error"] == "unauthorized"
    assert "Traceback" not in response.body.decode()


def test_deeply_nested_metadata_is_refused_at_the_door(stack: Stack) -> None:
    for depth, field in ((960, "body"), (30, "metadata.deep" + "[0]" * 8)):
        body = b'{"metadata": {"deep": ' + b"[" * depth + b'"leaf"' + b"]" * depth + b"}}"
        response = post(stack.api, "/uploads", stack.token_for("alice"), body)
        assert response.status_code == 400, response.body
        assert response.json_body["field"] == field
        assert "deeper than" in response.json_body["message"] or "nests too deeply" in response.json_body["message"]
    shallow = {"metadata": {"a": {"b": {"c": [1, 2, {"d": True}]}}}}
    assert post(stack.api, "/uploads", stack.token_for("alice"), shallow).status_code == 201


def test_an_overflowing_number_is_refused_naming_the_field(stack: Stack) -> None:
    response = post(stack.api, "/uploads", stack.token_for("alice"), b'{"metadata": {"big": 1e400}}')
    assert response.status_code == 400, response.body
    assert response.json_body["field"] == "metadata.big"
    assert "finite" in response.json_body["message"]


def test_hostile_metadata_stored_before_the_bounds_cannot_block_attribution_or_reads(stack: Stack) -> None:
    """Intents written by the old code may hold anything; the callback must still attribute and every
    read must still be valid JSON."""
    deep_id, deep_context = stack.create_upload(body={"title": "deep"})
    inf_id, inf_context = stack.create_upload(body={"title": "inf"})
    deep = "[" * 960 + "]" * 960
    for upload_id, stored in ((deep_id, '{"deep":' + deep + "}"), (inf_id, '{"big":Infinity}')):
        stack.dynamodb.update_item(
            TableName=stack.table,
            Key=upload_key(upload_id),
            UpdateExpression="SET metadata = :m",
            ExpressionAttributeValues={":m": {"S": stored}},
        )
    for file_id, context in (("f-deep", deep_context), ("f-inf", inf_context)):
        response = stack.deliver(vod.new_file_upload(file_id, context))
        assert (response.status_code, response.json_body["outcome"]) == (200, "attributed"), response.body
    alice = bearer(stack.token_for("alice"))
    for path in (f"/uploads/{deep_id}", f"/uploads/{inf_id}", "/videos", "/videos/f-inf", "/videos/f-deep"):
        response = stack.api.get(path, headers=alice)
        assert response.status_code == 200, (path, response.body)
        strict_json(response.body.decode())
    assert stack.api.get("/videos/f-inf", headers=alice).json_body["metadata"] is None


def test_non_finite_vod_output_details_are_not_stored(stack: Stack) -> None:
    event = vod.procedure_state_changed("f-odd-detail", "t", "FINISH", [(10, "SUCCESS")])
    output = event["ProcedureStateChangeEvent"]["MediaProcessResultSet"][0]["TranscodeTask"]["Output"]
    output["Duration"] = float("inf")
    body = json.dumps(vod.signed(event, stack.env["VOD_SIGN_KEY"])).replace("Infinity", "1e400").encode()
    assert stack.deliver(body).json_body["outcome"] == "updated"
    item = stack.dynamodb.get_item(TableName=stack.table, Key={"pk": {"S": "VIDEO#f-odd-detail"}, "sk": {"S": "VIDEO"}})
    snapshot = item["Item"]["processing"]["M"]["t"]["M"]["snapshot"]["S"]
    assert "Duration" not in strict_json(snapshot)["tasks"][0].get("detail", {})


@pytest.mark.serial  # threads racing: after the parallel pass, alone (Makefile, `unit`)
def test_concurrent_copies_of_one_event_attribute_it_once(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    upload_id, context = stack.create_upload()
    body = json.dumps(vod.signed(vod.new_file_upload("f-copies", context), stack.env["VOD_SIGN_KEY"])).encode()
    outcomes: Counter[str] = Counter()
    lock = threading.Lock()
    copies = 32
    barrier = threading.Barrier(copies)
    events = patient_services(stack.env, monkeypatch).events  # shared by all threads
    token = stack.env["VOD_CALLBACK_TOKEN"]

    def deliver() -> None:
        barrier.wait()
        outcome = events.receive(token, body).outcome
        with lock:
            outcomes[outcome] += 1

    threads = [threading.Thread(target=deliver) for _ in range(copies)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert outcomes == Counter(attributed=1, duplicate=copies - 1)
    first_video = stack.dynamodb.get_item(
        TableName=stack.table, Key={"pk": {"S": "VIDEO#f-copies"}, "sk": {"S": "VIDEO"}}
    )
    time.sleep(1.1)  # a rewrite would now store a later receivedAt / completedAt
    assert stack.deliver(body).json_body["outcome"] == "duplicate"
    again = stack.dynamodb.get_item(TableName=stack.table, Key={"pk": {"S": "VIDEO#f-copies"}, "sk": {"S": "VIDEO"}})
    assert again["Item"] == first_video["Item"]
    intent = stack.dynamodb.get_item(TableName=stack.table, Key=upload_key(upload_id))["Item"]
    assert intent["status"]["S"] == "completed" and intent["fileId"]["S"] == "f-copies"


def test_callback_t_has_an_upper_bound(stack: Stack) -> None:
    _, context = stack.create_upload()
    event = vod.new_file_upload("f-far", context)
    now = int(time.time())
    for far in (now + 10**30, now + 2 * 3600):
        response = stack.deliver(json.dumps(vod.signed(event, stack.env["VOD_SIGN_KEY"], far)).encode())
        assert response.status_code == 401, response.body
    assert stack.deliver(vod.signed(event, stack.env["VOD_SIGN_KEY"], now + 600)).json_body["outcome"] == "attributed"


def test_every_error_has_one_shape_including_the_frameworks(api: Any, token_for: TokenFactory) -> None:
    alice = bearer(token_for("alice"))
    not_allowed = api.request("DELETE", "/uploads", headers=alice, body=b"")
    assert not_allowed.status_code == 405
    assert not_allowed.json_body == {"error": "method_not_allowed", "message": "Unsupported method: DELETE"}
    xml = {**alice, "Content-Type": "application/xml"}
    unsupported = api.post("/uploads", headers=xml, body=b"<upload/>")
    assert unsupported.status_code == 415
    assert unsupported.json_body["error"] == "unsupported_media_type"
    assert set(unsupported.json_body) == {"error", "message"}


def test_authentication_comes_before_content_negotiation(api: Any, token_for: TokenFactory) -> None:
    anonymous = api.post("/uploads", headers={"Content-Type": "application/xml"}, body=b"<upload/>")
    assert anonymous.status_code == 401
    # fetch(url, {method: "POST", body: JSON.stringify(...)}) sends text/plain;charset=UTF-8
    text_plain = {**bearer(token_for("alice")), "Content-Type": "text/plain;charset=UTF-8"}
    created = api.post("/uploads", headers=text_plain, body=json.dumps({"title": "from fetch"}).encode())
    assert created.status_code == 201, created.body
    assert created.json_body["upload"]["title"] == "from fetch"
