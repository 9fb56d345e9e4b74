"""Never lose an upload: 200 uploads through vodlocal in PULL mode while DynamoDB, behind a fault proxy
(tests/fault_proxy.py), is unreachable, throttled, slow past the client's timeout, or loses answers to
writes it applied, on every third request. Every upload ends up attributed to its owner exactly once.

The consumer is also stopped while all 200 are made, and starts on a full queue; a lost confirm is
covered by tests/test_pull_consumer.py.

What was lost is counted from vodlocal's side, not from the test's own list: the uploads vodlocal committed
(its media records, each with the sourceContext that names its upload) against the videos the API lists."""

from __future__ import annotations

import itertools
import json
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from chalicelib import container
from tests.conftest import ApiFactory, TokenFactory, bearer, start_pull_vodlocal, with_policy
from tests.fault_proxy import FaultProxy, Plan
from tests.test_outbox import outbox, types
from tests.test_pull_consumer import Post, as_user, upload_through
from tests.vodlocal.conftest import wait_until_pushed
from vodlocal import Config, Handle, start

UPLOADS = 200
USERS = 10
FAULTS = ("unreachable", "throttled", "slow", "answer_lost")
DEADLINE_SECONDS = 240
CONFIRM_WINDOW_SECONDS = 10.0  # VOD's is 30 s: shorter, so that a redelivery comes sooner


def every_third_request() -> Plan:
    """Every third request meets the next fault of FAULTS, in turn."""
    kinds = itertools.cycle(FAULTS)

    def plan(number: int, _operation: str) -> str | None:
        return next(kinds) if number % 3 == 0 else None

    return plan


def committed_uploads(vod: Handle) -> dict[str, str]:
    """FileId -> upload id of every upload vodlocal committed, from its own media records (the upload id is the
    middle part of the `v1.<uploadId>.<tag>` sourceContext the signature carried)."""
    rows = vod.app.store.query("SELECT file_id, data FROM media")
    return {row["file_id"]: json.loads(row["data"])["source_context"].split(".")[1] for row in rows}


@dataclass(frozen=True)
class Tally:
    """The API's videos (every user's list) against what vodlocal committed."""

    committed: dict[str, str]  # fileId -> uploadId, vodlocal's
    listed: list[tuple[str, str, str]]  # (owner, fileId, uploadId), the API's

    @property
    def lost(self) -> set[str]:
        return set(self.committed) - {file_id for _, file_id, _ in self.listed}

    @property
    def listed_twice(self) -> list[str]:
        return [file_id for file_id, n in Counter(file_id for _, file_id, _ in self.listed).items() if n > 1]

    def misattributed(self, owners: dict[str, str]) -> list[tuple[str, str, str]]:
        """Listed under another user than the upload's, or with another upload than vodlocal committed."""
        return [
            (owner, file_id, upload_id)
            for owner, file_id, upload_id in self.listed
            if owners.get(upload_id) != owner or self.committed.get(file_id) != upload_id
        ]

    def figures(self) -> dict[str, int]:
        return {"committed": len(self.committed), "listed": len(self.listed), "lost": len(self.lost)}


def tally(vod: Handle, list_videos: Callable[[str], list[dict[str, Any]]], users: Iterable[str]) -> Tally:
    listed = [(user, video["fileId"], video["uploadId"]) for user in users for video in list_videos(user)]
    return Tally(committed_uploads(vod), listed)


@pytest.fixture
def pull_vod(stage_env: dict[str, str], tmp_path: Path) -> Iterator[Handle]:
    handle = start_pull_vodlocal(stage_env, tmp_path / "vodlocal", CONFIRM_WINDOW_SECONDS)
    with_policy(stage_env, maxOpenIntents=UPLOADS, maxIntentsPerHour=UPLOADS, maxSignaturesPerIntent=5)
    yield handle
    handle.stop()


def test_200_pulled_uploads_under_dynamodb_faults_are_each_attributed_once_and_none_is_lost(
    pull_vod: Handle,
    api_factory: ApiFactory,
    token_for: TokenFactory,
    stage_env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    dynamodb: Any,
) -> None:
    api = api_factory()
    tokens = {f"user{n}": token_for(f"user{n}") for n in range(USERS)}
    owners = [f"user{n % USERS}" for n in range(UPLOADS)]
    made = {upload_through(pull_vod, as_user(api, tokens[owner]), b"v%d" % n): owner for n, owner in enumerate(owners)}
    assert len(made) == UPLOADS

    # The consumer starts on a full queue, its DynamoDB behind the fault proxy.
    proxy = FaultProxy(stage_env["DYNAMODB_ENDPOINT_URL"], every_third_request(), slow_seconds=1.5)
    for name, value in {**stage_env, "DYNAMODB_ENDPOINT_URL": proxy.url}.items():
        monkeypatch.setenv(name, value)
    container.reset()
    started = time.monotonic()
    outcomes: Counter[str] = Counter()
    runs = 0
    try:
        # Until VOD holds nothing unconfirmed: an event whose write went through but whose answer was lost on
        # every retry is redelivered and then counts as a duplicate, not as attributed.
        while pull_vod.app.bus.pending_count() and time.monotonic() - started < DEADLINE_SECONDS:
            report = container.services().pull_consumer.run(8.0)
            outcomes.update(report.outcomes)
            runs += 1
    finally:
        proxy.stop()
        monkeypatch.setenv("DYNAMODB_ENDPOINT_URL", stage_env["DYNAMODB_ENDPOINT_URL"])
        container.reset()
    elapsed = time.monotonic() - started

    counted = tally(
        pull_vod, lambda user: api.get("/videos?limit=100", headers=bearer(tokens[user])).json_body["videos"], tokens
    )
    # Each attribution committed its event with it: one per video, none for a write that did not commit.
    events = outbox(dynamodb, stage_env["TABLE_NAME"])
    figures = {
        "uploads": UPLOADS, **counted.figures(), "consumerRuns": runs, "seconds": round(elapsed, 1),
        "outcomes": dict(outcomes), "faults": dict(proxy.faults), "dynamodbRequests": proxy.requests,
        "events": len(events), "distinctEventIds": len({event["id"] for event in events}),
    }  # fmt: skip
    print(f"PULL under faults: {json.dumps(figures)}")
    attributions = sorted((event["owner"], event["fileId"], event["uploadId"]) for event in events)
    assert types(events) == {"upload.attributed": UPLOADS} and attributions == sorted(counted.listed), figures
    assert figures["distinctEventIds"] == UPLOADS, figures
    assert sorted(counted.committed.values()) == sorted(made), figures  # vodlocal committed each upload once
    assert counted.lost == set(), figures
    assert counted.listed_twice == [] and counted.misattributed(made) == [], figures
    assert outcomes["attributed"] <= UPLOADS <= outcomes["attributed"] + outcomes["duplicate"], figures
    assert set(proxy.faults) == set(FAULTS), figures
    assert (
        container.services().storage.vod_events.dead_letters() == []
        and container.services().storage.reviews.pending() == []
    )


# -- the same run in PUSH mode: what VOD's documented PUSH loses ------------------------------------------

READ_OUTAGE_EVERY = 40  # GetItems: during the uploads, only the callback reads (its intent)
READ_OUTAGE_LENGTH = 4  # the repository's attempts at one call: the callback that meets them answers 503


def with_read_outages(plan: Plan) -> Plan:
    """`plan`, and every READ_OUTAGE_EVERY-th GetItem starts READ_OUTAGE_LENGTH throttled GetItems in a row. PUSH
    is serial, so they meet one callback's read of its intent (or its last tries): it answers 503, which VOD never
    retries. Each outage therefore loses at least one upload."""
    reads = itertools.count(1)
    refusing = 0

    def planned(number: int, operation: str) -> str | None:
        nonlocal refusing
        if operation == "GetItem" and next(reads) % READ_OUTAGE_EVERY == 0:
            refusing = READ_OUTAGE_LENGTH
        if operation == "GetItem" and refusing:
            refusing -= 1
            return "throttled"
        return plan(number, operation)

    return planned


@pytest.fixture
def faulty_dynamodb(stage_env: dict[str, str]) -> Iterator[FaultProxy]:
    """The app's DynamoDB behind the fault proxy, from the start (the chalice_local fixture reads stage_env)."""
    proxy = FaultProxy(stage_env["DYNAMODB_ENDPOINT_URL"], with_read_outages(every_third_request()), slow_seconds=1.5)
    real_endpoint = stage_env["DYNAMODB_ENDPOINT_URL"]
    with_policy(stage_env, maxOpenIntents=UPLOADS, maxIntentsPerHour=UPLOADS, maxSignaturesPerIntent=5)
    stage_env["DYNAMODB_ENDPOINT_URL"] = proxy.url
    yield proxy
    proxy.stop()
    stage_env["DYNAMODB_ENDPOINT_URL"] = real_endpoint


@dataclass(frozen=True)
class PushPrediction:
    """VOD's PUSH rules (vod-protocol.md §3.1, vodlocal/README.md "Event delivery") applied to vodlocal's delivery
    log: the first reply of any status delivers an event; a 5xx or a refused connection is not retried, a timeout
    twice. An upload whose NewFileUpload got no 2xx is lost, unless its completion reached DynamoDB though the app
    never saw the answer (the app then answered 503, not knowing it had applied)."""

    not_accepted: set[str]  # FileIds whose NewFileUpload no attempt got a 2xx for
    applied_unanswered: set[str]  # of those, the ones whose completion transaction DynamoDB got, unanswered

    @property
    def lost(self) -> set[str]:
        return self.not_accepted - self.applied_unanswered


def push_prediction(vod: Handle, proxy: FaultProxy) -> PushPrediction:
    rows = vod.app.store.query("SELECT seq, body FROM events WHERE event_type = 'NewFileUpload'")
    pushed = {row["seq"]: json.loads(row["body"])["FileUploadEvent"]["FileId"] for row in rows}
    attempts: dict[int, list[dict[str, Any]]] = {}
    for delivery in vod.app.bus.deliveries:
        attempts.setdefault(delivery["seq"], []).append(delivery)
    for seq, tries in attempts.items():  # as documented: at most 3 sends, a retry only after a timeout
        assert len(tries) <= 3 and all(t.get("timeout") for t in tries[:-1]), (seq, tries)
    accepted = {seq for seq, tries in attempts.items() if 200 <= tries[-1].get("status", 0) < 300}
    not_accepted = {file_id for seq, file_id in pushed.items() if seq not in accepted}
    landed = [body for operation, body in proxy.unanswered if operation == "TransactWriteItems"]
    return PushPrediction(not_accepted, {f for f in not_accepted if any(f.encode() in body for body in landed)})


def call_until_answered(method: str, url: str, token: str, body: bytes | None = None) -> dict[str, Any]:
    """What a client does with a 503 and its Retry-After: try again (at once here, to keep the run short)."""
    for _ in range(20):
        request = urllib.request.Request(url, data=body, method=method, headers=bearer(token))
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                answer: dict[str, Any] = json.load(response)
                return answer
        except urllib.error.HTTPError as error:
            if error.code != 503:
                raise
    raise AssertionError(f"{method} {url} kept answering 503")


def test_the_same_run_in_push_mode_loses_exactly_what_vods_push_rules_predict(
    faulty_dynamodb: FaultProxy, chalice_local: str, stage_env: dict[str, str], token_for: TokenFactory, tmp_path: Path
) -> None:
    vod = start(
        Config(
            port=0,
            data_dir=tmp_path / "vodlocal-push",
            secrets={stage_env["VOD_SECRET_ID"]: stage_env["VOD_SECRET_KEY"]},
            callback_url=f"{chalice_local}/vod/events/{stage_env['VOD_CALLBACK_TOKEN']}",
            sign_key=stage_env["VOD_SIGN_KEY"],
        )
    )
    tokens = {f"user{n}": token_for(f"user{n}") for n in range(USERS)}
    made: dict[str, str] = {}
    try:
        for n in range(UPLOADS):
            owner = f"user{n % USERS}"
            made[upload_through(vod, over_http(chalice_local, tokens[owner]), b"p%d" % n)] = owner
        wait_until_pushed(vod, timeout=DEADLINE_SECONDS)  # every event delivered or given up, retries included
        predicted = push_prediction(vod, faulty_dynamodb)
        faulty_dynamodb.plan = lambda _number, _operation: None  # read the outcome without faults
        counted = tally(
            vod, lambda user: call_until_answered("GET", f"{chalice_local}/videos?limit=100", tokens[user])["videos"],
            tokens,
        )  # fmt: skip
        replies = Counter(
            str(d["status"]) if "status" in d else "timeout" if d["timeout"] else "refused"
            for d in vod.app.bus.deliveries
        )
    finally:
        vod.stop()
    figures = {
        "uploads": UPLOADS, **counted.figures(), "predicted": len(predicted.lost),
        "notAccepted": len(predicted.not_accepted), "appliedUnanswered": len(predicted.applied_unanswered),
        "replies": dict(replies), "faults": dict(faulty_dynamodb.faults),
    }  # fmt: skip
    print(f"PUSH under faults: {json.dumps(figures)}")
    assert sorted(counted.committed.values()) == sorted(made), figures
    assert counted.lost == predicted.lost, {**figures, "lostNotPredicted": sorted(counted.lost - predicted.lost),
                                            "predictedNotLost": sorted(predicted.lost - counted.lost)}  # fmt: skip
    assert len(counted.lost) >= UPLOADS // READ_OUTAGE_EVERY, figures  # each read outage loses one at least
    assert counted.listed_twice == [] and counted.misattributed(made) == [], figures  # never twice, even in PUSH


def over_http(api_url: str, token: str) -> Post:
    return lambda path, body: call_until_answered("POST", f"{api_url}{path}", token, body)
