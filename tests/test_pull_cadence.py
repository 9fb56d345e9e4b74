"""What the PULL consumer's schedule costs and buys: an idle run ends after one empty pull, and a burst of
queued uploads is drained within the runs docs/events.md promises. Runs go through the scheduled handler, as
its Lambda's would, with the stage's timeout, against vodlocal holding an empty PullEvents as long as VOD
(5 s) and confirming within VOD's window (30 s)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import app
from chalicelib import container
from devstack.pull import RunContext, scheduled_event
from tests.conftest import ApiFactory, TokenFactory, start_pull_vodlocal, with_policy
from tests.test_pull_consumer import as_user, upload_through
from vodlocal import Handle

VOD_PULL_HOLD_SECONDS = 5.0
VOD_CONFIRM_WINDOW_SECONDS = 30.0
BURST = 500
# docs/events.md, "The PULL consumer's schedule": each run applies until the queue is empty or its deadline, so a burst
# takes as many runs as its apply time needs, about 2 on Lambda. Moto on a shared 2-core machine applies an
# event in about 0.3 s, several times Lambda's: the bound only catches runs that stop early.
BURST_RUNS_HERE = 6


@pytest.fixture
def vod_queue(stage_env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Handle]:
    handle = start_pull_vodlocal(
        stage_env, tmp_path / "vodlocal", VOD_CONFIRM_WINDOW_SECONDS, pull_wait=VOD_PULL_HOLD_SECONDS
    )
    with_policy(stage_env, procedures=[], maxOpenIntents=BURST, maxIntentsPerHour=BURST)
    for name, value in stage_env.items():  # the consumer runs outside any request: as in its own Lambda
        monkeypatch.setenv(name, value)
    container.reset()
    yield handle
    handle.stop()


def scheduled_run() -> dict[str, Any]:
    """One run of the consumer as the schedule starts it, with the whole of the function's timeout."""
    run: dict[str, Any] = app.app.handler_map["pull_vod_events"](scheduled_event(), RunContext(app.PULL_RUN_SECONDS))
    return run


def test_an_empty_queue_ends_the_run_after_one_empty_pull(vod_queue: Handle) -> None:
    run = scheduled_run()  # one long-poll, not the minute: what an idle stage pays for a run (docs/cost.md)
    assert (run["pulls"], run["pulled"]) == (1, 0), run
    assert len(vod_queue.requests("PullEvents")) == 1


def test_a_burst_of_500_queued_uploads_is_drained_by_runs_that_each_apply_until_empty_or_deadline(
    vod_queue: Handle, api_factory: ApiFactory, token_for: TokenFactory
) -> None:
    post = as_user(api_factory(), token_for("alice"))
    for n in range(BURST):
        upload_through(vod_queue, post, b"burst-%d" % n)
    runs: list[dict[str, Any]] = []
    while not runs or (runs[-1]["ended"] == "deadline" and len(runs) < BURST_RUNS_HERE):
        runs.append(scheduled_run())
    # Every run but the last used its whole time; the last found the queue empty.
    assert [run["ended"] for run in runs] == ["deadline"] * (len(runs) - 1) + ["empty"], runs
    assert sum(run.get("attributed", 0) for run in runs) == BURST, runs
    assert sum(run["pulled"] for run in runs) == BURST  # each confirmed in time: none delivered twice
    # The queue is empty now: the next run (a minute later in Lambda) ends after one empty pull.
    assert scheduled_run()["pulls"] == 1
    assert len(vod_queue.requests("PullEvents")) == sum(run["pulls"] for run in runs) + 1
