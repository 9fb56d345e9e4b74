"""Never lose an upload: 200 uploads through vodlocal in PULL mode while DynamoDB, behind a fault proxy
(tests/fault_proxy.py), is unreachable, throttled, slow past the client's timeout, or loses answers to
writes it applied, on every third request. Every upload ends up attributed to its owner exactly once.

The consumer is also stopped while all 200 are made, and starts on a full queue; a lost confirm is
covered by tests/test_pull_consumer.py."""

from __future__ import annotations

import itertools
import json
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from chalicelib import container
from tests.conftest import ApiFactory, TokenFactory, bearer, with_policy
from tests.fault_proxy import FaultProxy, Plan
from tests.test_pull_consumer import upload_through
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
def pull_vod(stage_env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Handle]:
    handle = start(
        Config(
            port=0,
            data_dir=tmp_path / "vodlocal",
            secrets={stage_env["VOD_SECRET_ID"]: stage_env["VOD_SECRET_KEY"]},
            mode="PULL",
            pull_wait=0.3,
            confirm_window=CONFIRM_WINDOW_SECONDS,
        )
    )
    with_policy(stage_env, maxOpenIntents=UPLOADS, maxIntentsPerHour=UPLOADS, maxSignaturesPerIntent=5)
    stage_env.update(
        EVENT_MODE="pull", VOD_API_ENDPOINT=handle.url, PULL_CONFIRM_WINDOW_SECONDS=str(CONFIRM_WINDOW_SECONDS)
    )
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
    made = {
        upload_through(pull_vod, api, tokens[f"user{n % USERS}"], b"v%d" % n): f"user{n % USERS}"
        for n in range(UPLOADS)
    }
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
        while outcomes["attributed"] < UPLOADS and time.monotonic() - started < DEADLINE_SECONDS:
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
    assert outcomes["attributed"] == UPLOADS and set(proxy.faults) == set(FAULTS), figures
    assert container.services().repository.dead_letters() == [] and container.services().repository.reviews() == []
