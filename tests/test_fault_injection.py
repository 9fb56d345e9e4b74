"""Never lose an upload: 200 uploads through vodlocal in PULL mode while DynamoDB, behind a fault proxy
(tests/fault_proxy.py), is unreachable, throttled, slow past the client's timeout, or loses answers to
writes it applied, on every third request. Every upload ends up attributed to its owner exactly once.

The consumer is also stopped while all 200 are made, and starts on a full queue; a lost confirm is
covered by tests/test_pull_consumer.py."""

from __future__ import annotations

import itertools
import json
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from chalicelib import container
from tests.conftest import ApiFactory, TokenFactory, bearer, start_pull_vodlocal, with_policy
from tests.fault_proxy import FaultProxy, Plan
from tests.test_pull_consumer import Post, as_user, upload_through
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

    by_owner: dict[str, list[str]] = {}
    for user, token in tokens.items():
        videos = api.get("/videos?limit=100", headers=bearer(token)).json_body["videos"]
        by_owner[user] = [video["uploadId"] for video in videos]
    attributed_once = sum(1 for upload_id, owner in made.items() if by_owner[owner].count(upload_id) == 1)
    lost = UPLOADS - attributed_once
    figures = {
        "uploads": UPLOADS, "attributedOnce": attributed_once, "lost": lost, "consumerRuns": runs,
        "seconds": round(elapsed, 1), "outcomes": dict(outcomes), "faults": dict(proxy.faults),
        "dynamodbRequests": proxy.requests,
    }  # fmt: skip
    print(f"PULL under faults: {json.dumps(figures)}")
    assert lost == 0, figures
    assert all(len(uploads) == len(set(uploads)) for uploads in by_owner.values()), figures
    assert sum(len(uploads) for uploads in by_owner.values()) == UPLOADS
    assert outcomes["attributed"] <= UPLOADS <= outcomes["attributed"] + outcomes["duplicate"], figures
    assert set(proxy.faults) == set(FAULTS), figures
    assert container.services().repository.dead_letters() == [] and container.services().repository.reviews() == []


# -- the same run in PUSH mode: what VOD's documented PUSH loses ------------------------------------------


@pytest.fixture
def faulty_dynamodb(stage_env: dict[str, str]) -> Iterator[FaultProxy]:
    """The app's DynamoDB behind the fault proxy, from the start (the chalice_local fixture reads stage_env)."""
    proxy = FaultProxy(stage_env["DYNAMODB_ENDPOINT_URL"], every_third_request(), slow_seconds=1.5)
    real_endpoint = stage_env["DYNAMODB_ENDPOINT_URL"]
    with_policy(stage_env, maxOpenIntents=UPLOADS, maxIntentsPerHour=UPLOADS, maxSignaturesPerIntent=5)
    stage_env["DYNAMODB_ENDPOINT_URL"] = proxy.url
    yield proxy
    proxy.stop()
    stage_env["DYNAMODB_ENDPOINT_URL"] = real_endpoint


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


def test_the_same_run_in_push_mode_reports_what_it_loses(
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
        time.sleep(20)  # VOD's pushes, and its retries after a timeout, are over by now
    finally:
        vod.stop()
    faulty_dynamodb.plan = lambda _number, _operation: None  # read the outcome without faults
    by_owner = {
        user: [v["uploadId"] for v in call_until_answered("GET", f"{chalice_local}/videos?limit=100", token)["videos"]]
        for user, token in tokens.items()
    }
    attributed_once = sum(1 for upload_id, owner in made.items() if by_owner[owner].count(upload_id) == 1)
    figures = {"uploads": UPLOADS, "attributedOnce": attributed_once, "lost": UPLOADS - attributed_once}
    print(f"PUSH under faults: {json.dumps({**figures, 'faults': dict(faulty_dynamodb.faults)})}")
    assert all(len(uploads) == len(set(uploads)) for uploads in by_owner.values())  # never twice, even in PUSH
    assert figures["attributedOnce"] + figures["lost"] == UPLOADS


def over_http(api_url: str, token: str) -> Post:
    return lambda path, body: call_until_answered("POST", f"{api_url}{path}", token, body)
