"""`POST /uploads/{id}/complete`: the owner reports the FileId its upload SDK returned and the upload is
attributed at once. VOD is vodlocal, asked through Tencent's SDK (DescribeMediaInfos); the events come
PULLed (the consumer) or PUSHed (the callback of a served copy of the app), in either order."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from chalicelib import container, source_context, vod_signature
from tests.conftest import ApiFactory, KeyRotation, TokenFactory, bearer, call, free_port, vodlocal_for, with_policy
from tests.test_pull_consumer import CONSUMER_SECONDS, as_user, commit_through
from tests.vodlocal.conftest import apply_and_store, ugc
from tests.waiting import pulled
from vodlocal import Handle, start


def complete(api: Any, token: str, upload_id: str, file_id: str) -> Any:
    return api.post(f"/uploads/{upload_id}/complete", headers=bearer(token), body=json.dumps({"fileId": file_id}))


Items = Callable[[], list[dict[str, Any]]]


@pytest.fixture
def items(dynamodb: Any, table_name: str) -> Items:
    """The table's items, sorted: a snapshot to compare before and after."""

    def scan() -> list[dict[str, Any]]:
        found = dynamodb.scan(TableName=table_name)["Items"]
        return sorted(found, key=lambda item: (item["pk"]["S"], item["sk"]["S"]))

    return scan


def new_intent(api: Any, token: str, env: dict[str, str]) -> tuple[str, str]:
    """A new intent of the token's user: its uploadId and the sourceContext its signatures carry."""
    created = api.post("/uploads", headers=bearer(token), body=b"{}").json_body
    context = vod_signature.verify(created["signature"], env["VOD_SECRET_KEY"]).params.options.sourceContext
    assert context is not None
    return str(created["uploadId"]), context


def kinds(items: list[dict[str, Any]]) -> list[str]:
    """The video and review records: one video per attribution, and no review of an attributed upload."""
    return [item["pk"]["S"] for item in items if item["pk"]["S"].startswith(("VIDEO#", "REVIEW#"))]


def commit_signed(vod: Handle, env: dict[str, str], options: vod_signature.SignatureOptions) -> str:
    """An upload committed with a signature of the stage's key pair made with `options` (not our API's)."""
    params = vod_signature.new_params(env["VOD_SECRET_ID"], 600, options)
    signature = vod_signature.sign(params, env["VOD_SECRET_KEY"])
    data = apply_and_store(vod, signature, b"crafted")
    commit = ugc(vod, "CommitUploadUGC", {"signature": signature, "vodSessionKey": data["vodSessionKey"]})
    assert commit["code"] == 0, commit
    file_id: str = commit["data"]["fileId"]
    return file_id


# -- PULL: the events wait in VOD's queue until the consumer runs --------------------------------------------


def test_the_owner_completes_at_once_and_the_pulled_event_is_then_a_duplicate(
    pull_vod: Handle, api_factory: ApiFactory, token_for: TokenFactory, items: Items
) -> None:
    api, alice = api_factory(), token_for("alice")
    upload_id, file_id = commit_through(pull_vod, as_user(api, alice))

    answer = complete(api, alice, upload_id, file_id)
    assert answer.status_code == 200, answer.body
    body = answer.json_body
    assert (body["outcome"], body["status"], body["fileId"], body["video"]["fileId"]) == (
        "attributed",
        "completed",
        file_id,
        file_id,
    )
    assert body["video"]["size"] == len(b"pulled-video") and body["video"]["mediaUrl"].startswith(pull_vod.url)
    shown = api.get(f"/uploads/{upload_id}", headers=bearer(alice)).json_body
    assert shown["video"] == body["video"]
    after_complete = items()

    report = container.services().pull_consumer.run(CONSUMER_SECONDS)
    assert report.outcomes == {"duplicate": 1}, report
    assert items() == after_complete
    assert kinds(after_complete) == [f"VIDEO#{file_id}"]
    again = complete(api, alice, upload_id, file_id)
    assert (again.status_code, again.json_body["outcome"]) == (200, "duplicate")


def test_after_the_pulled_event_complete_is_a_duplicate(
    pull_vod: Handle, api_factory: ApiFactory, token_for: TokenFactory, items: Items
) -> None:
    api, alice = api_factory(), token_for("alice")
    upload_id, file_id = commit_through(pull_vod, as_user(api, alice))
    assert pulled({"attributed": 1}) == {"attributed": 1}
    before = items()

    answer = complete(api, alice, upload_id, file_id)
    assert answer.status_code == 200, answer.body
    assert (answer.json_body["outcome"], answer.json_body["video"]["fileId"]) == ("duplicate", file_id)
    assert items() == before
    assert kinds(before) == [f"VIDEO#{file_id}"]


def test_only_the_owner_may_complete(
    pull_vod: Handle, api_factory: ApiFactory, token_for: TokenFactory, items: Items
) -> None:
    api, alice = api_factory(), token_for("alice")
    upload_id, file_id = commit_through(pull_vod, as_user(api, alice))
    before = items()
    for refused in (
        complete(api, token_for("bob"), upload_id, file_id),
        complete(api, alice, "A" * 22, file_id),
        api.post(f"/uploads/{upload_id}/complete", body=json.dumps({"fileId": file_id})),
    ):
        assert refused.status_code in (401, 404), refused.body
        assert set(refused.json_body) == {"error", "message"}
    assert complete(api, token_for("bob"), upload_id, file_id).json_body["error"] == "not_found"
    assert items() == before


def test_a_file_of_another_upload_or_user_or_none_is_refused_and_changes_nothing(
    pull_vod: Handle,
    api_factory: ApiFactory,
    stage_env: dict[str, str],
    token_for: TokenFactory,
    items: Items,
) -> None:
    api, alice, bob = api_factory(), token_for("alice"), token_for("bob")
    upload_id, own_file = commit_through(pull_vod, as_user(api, alice))
    _, other_intents_file = commit_through(pull_vod, as_user(api, alice))
    _, bobs_file = commit_through(pull_vod, as_user(api, bob))
    no_context = commit_signed(pull_vod, stage_env, vod_signature.SignatureOptions())
    forged_context = source_context.encode(upload_id, b"not-our-key")
    forged = commit_signed(pull_vod, stage_env, vod_signature.SignatureOptions(sourceContext=forged_context))
    before = items()

    for file_id, reason in (
        (other_intents_file, "another_upload"),
        (bobs_file, "another_upload"),
        (no_context, "no_source_context"),
        (forged, "foreign_source_context"),
        ("5285890799999999999", "unknown_file"),
    ):
        answer = complete(api, alice, upload_id, file_id)
        assert answer.status_code == 422, (reason, answer.body)
        assert answer.json_body["error"] == "file_refused" and answer.json_body["reason"] == reason, answer.body
        assert answer.json_body["message"]
    assert items() == before
    assert api.get(f"/uploads/{upload_id}", headers=bearer(alice)).json_body["status"] == "open"
    assert complete(api, alice, upload_id, own_file).json_body["outcome"] == "attributed"


def test_a_file_of_the_intents_own_context_in_another_application_is_unknown(
    pull_vod: Handle,
    api_factory: ApiFactory,
    stage_env: dict[str, str],
    token_for: TokenFactory,
    items: Items,
) -> None:
    with_policy(stage_env, vodSubAppId=1500000009)
    api, alice = api_factory(), token_for("alice")
    upload_id, context = new_intent(api, alice, stage_env)
    # The intent's sourceContext, but uploaded to the primary application rather than the tier's sub-app.
    elsewhere = commit_signed(pull_vod, stage_env, vod_signature.SignatureOptions(sourceContext=context))
    before = items()
    answer = complete(api, alice, upload_id, elsewhere)
    assert (answer.status_code, answer.json_body.get("reason")) == (422, "unknown_file"), answer.body
    assert items() == before


def test_a_second_file_of_a_completed_intent_is_a_conflict_kept_for_review(
    pull_vod: Handle,
    api_factory: ApiFactory,
    stage_env: dict[str, str],
    token_for: TokenFactory,
    items: Items,
) -> None:
    """The intent's own context on a second file (a signature of the intent used twice): as the event would,
    the report is refused and the file kept for review; the first file stays the upload's."""
    api, alice = api_factory(), token_for("alice")
    upload_id, context = new_intent(api, alice, stage_env)
    first = commit_signed(pull_vod, stage_env, vod_signature.SignatureOptions(sourceContext=context))
    second = commit_signed(pull_vod, stage_env, vod_signature.SignatureOptions(sourceContext=context))
    assert complete(api, alice, upload_id, first).json_body["outcome"] == "attributed"
    answer = complete(api, alice, upload_id, second)
    assert (answer.status_code, answer.json_body["error"]) == (409, "conflict"), answer.body
    assert kinds(items()) == [f"REVIEW#{second}", f"VIDEO#{first}"]
    assert api.get(f"/uploads/{upload_id}", headers=bearer(alice)).json_body["fileId"] == first


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (b"", "body"),
        (b"{}", "fileId"),
        (b'{"fileId": "52858907/../1"}', "fileId"),
        (b'{"fileId": 5285890784246869930}', "fileId"),
        (json.dumps({"fileId": "1" * 65}).encode(), "fileId"),
        (b'{"fileId": "5285890784246869930", "uploadId": "x"}', "uploadId"),
    ],
    ids=["empty", "missing", "path", "number", "too-long", "extra-field"],
)
def test_a_malformed_body_is_400_naming_the_field(api: Any, token_for: TokenFactory, body: bytes, field: str) -> None:
    alice = token_for("alice")
    upload_id = api.post("/uploads", headers=bearer(alice), body=b"{}").json_body["uploadId"]
    answer = api.post(f"/uploads/{upload_id}/complete", headers=bearer(alice), body=body)
    assert answer.status_code == 400, answer.body
    assert (answer.json_body["error"], answer.json_body["field"]) == ("invalid_request", field)


# -- VOD not answering -----------------------------------------------------------------------------------------


class BrokenVod:
    """An API 3.0 endpoint that answers 502 (`status`) or holds every request for `hold` seconds."""

    def __init__(self, status: int = 502, hold: float = 0.0) -> None:
        release = self.release = threading.Event()

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if hold:
                    release.wait(hold)
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def stop(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.mark.parametrize("fault", ["refused", "5xx", "slow"])
def test_vod_not_answering_is_a_503_with_retry_after_and_changes_nothing(
    pull_vod: Handle,
    api_factory: ApiFactory,
    stage_env: dict[str, str],
    token_for: TokenFactory,
    items: Items,
    fault: str,
) -> None:
    api, alice = api_factory(), token_for("alice")
    upload_id, file_id = commit_through(pull_vod, as_user(api, alice))
    broken = None if fault == "refused" else BrokenVod(hold=30.0 if fault == "slow" else 0.0)
    stage_env["VOD_API_ENDPOINT"] = broken.url if broken else f"http://127.0.0.1:{free_port()}"
    api = api_factory()
    before = items()
    try:
        started = time.monotonic()
        answer = complete(api, alice, upload_id, file_id)
        took = time.monotonic() - started
    finally:
        if broken:
            broken.stop()
    assert answer.status_code == 503, answer.body
    assert answer.headers["Retry-After"] == "2" and answer.json_body["error"] == "service_unavailable"
    assert took < float(stage_env.get("REQUEST_DEADLINE_SECONDS", "3.5")) + 1.0, took
    assert items() == before


def test_complete_uses_a_rotated_vod_key_pair(
    pull_vod: Handle, key_rotation: KeyRotation, api_factory: ApiFactory, token_for: TokenFactory
) -> None:
    """The same warm app completes before and after the operator rotates VOD's key pair: DescribeMediaInfos is
    signed with the pair the secret holds now, not with the one the first complete was made with."""
    api, alice = api_factory(), token_for("alice")
    upload_id, file_id = commit_through(pull_vod, as_user(api, alice))
    assert complete(api, alice, upload_id, file_id).json_body["outcome"] == "attributed"

    key_rotation.rotate()
    upload_id, file_id = commit_through(pull_vod, as_user(api, alice))  # signed with the new pair
    answer = complete(api, alice, upload_id, file_id)
    assert (answer.status_code, answer.json_body.get("outcome")) == (200, "attributed"), answer.body


# -- PUSH: the event comes to the callback of a served copy of the app ---------------------------------------


@pytest.fixture
def push_vod(chalice_local: str, stage_env: dict[str, str], tmp_path: Path, vod_port: int) -> Iterator[Handle]:
    """vodlocal PUSHing to the served API, holding each event 5 s before its push (a reorder group of two that
    never fills: a slow VOD), so that the client can report first."""
    data_dir = tmp_path / "vodlocal"
    with start(
        vodlocal_for(chalice_local, stage_env, data_dir, port=vod_port, reorder_window=2, reorder_hold=5.0)
    ) as h:
        yield h


def http_post(api: str, token: str) -> Any:
    def post(path: str, body: bytes) -> dict[str, Any]:
        status, answer = call("POST", f"{api}{path}", body or b"{}", token)
        assert status in (200, 201), answer
        return dict(answer)

    return post


def pushed(vod: Handle, timeout: float = 15.0) -> list[dict[str, Any]]:
    """vodlocal's PUSH attempts, once one got a reply."""
    ends = time.monotonic() + timeout
    while time.monotonic() < ends:
        replied = [record for record in vod.app.bus.deliveries if "status" in record]
        if replied:
            return replied
        time.sleep(0.05)
    pytest.fail("vodlocal pushed no event")


def test_push_complete_first_then_the_event_is_a_duplicate_and_event_first_then_complete(
    chalice_local: str, push_vod: Handle, token_for: TokenFactory, items: Items
) -> None:
    api, vod = chalice_local, push_vod
    alice = token_for("alice")
    upload_id, file_id = commit_through(vod, http_post(api, alice))
    status, body = call("POST", f"{api}/uploads/{upload_id}/complete", {"fileId": file_id}, alice)
    assert (status, body["outcome"], body["video"]["fileId"]) == (200, "attributed", file_id), body
    assert not vod.app.bus.deliveries, "the event was pushed before the client reported: no proof of the order"
    after_complete = items()

    assert [record["status"] for record in pushed(vod)] == [200]
    assert items() == after_complete  # the event was a duplicate: nothing written
    assert kinds(after_complete) == [f"VIDEO#{file_id}"]

    # The other order: the pushed event attributes the second upload, and the report is then a duplicate.
    second_upload, second_file = commit_through(vod, http_post(api, alice))
    ends = time.monotonic() + 15
    while call("GET", f"{api}/uploads/{second_upload}", token=alice)[1]["status"] != "completed":
        assert time.monotonic() < ends, "the pushed event never attributed the second upload"
        time.sleep(0.1)
    before = items()
    status, body = call("POST", f"{api}/uploads/{second_upload}/complete", {"fileId": second_file}, alice)
    assert (status, body["outcome"], body["video"]["fileId"]) == (200, "duplicate", second_file), body
    assert items() == before
    assert kinds(before) == sorted([f"VIDEO#{file_id}", f"VIDEO#{second_file}"])
