"""Event delivery as VOD documents it (``../shared/docs/vod-protocol.md`` §3.1 PUSH, §3.2 PULL), and the emulator's
fault-injection knobs (duplicates, reordering) in both modes: over real HTTP to a callback, and through the official
tencentcloud-sdk-python-vod for PullEvents, ConfirmEvents and DescribeEventsState."""

from __future__ import annotations

import itertools
import json
import sqlite3
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from tencentcloud.common.exception.tencent_cloud_sdk_exception import TencentCloudSDKException
from tencentcloud.vod.v20180717 import models, vod_client

from tests.signing_stub import SigningStub
from tests.vodlocal.conftest import CallbackReceiver, refusing_url, upload, wait_until_pushed
from tests.vodlocal.test_api3 import client, confirm, pull, pulled_until_a_control_is_due_again
from vodlocal import Config, Handle, start
from vodlocal.config import EVENT_RETENTION, from_args
from vodlocal.events import file_deleted


def emit(emulator: Handle, *file_ids: str) -> None:
    for file_id in file_ids:
        emulator.app.bus.emit(file_deleted(file_id))


def pushed_ids(callbacks: CallbackReceiver) -> list[str]:
    return [e["FileDeleteEvent"]["FileIdSet"][0] for e in callbacks.of_type("FileDeleted")]


def pulled_ids(events: list[models.EventContent]) -> list[str]:
    return [e.FileDeleteEvent.FileIdSet[0] for e in events]


def events_to_pull(vod: vod_client.VodClient) -> int:
    count: int = vod.DescribeEventsState(models.DescribeEventsStateRequest()).CountOfEventsToPull
    return count


def pull_config(emu_config: Config, **changes: Any) -> Config:
    return replace(emu_config, **{"mode": "PULL", "callback_url": None, "pull_wait": 0.3, **changes})


# --- configuration ------------------------------------------------------------------------------------
def test_the_defaults_are_the_documented_delivery_and_inject_no_fault() -> None:
    for config in (Config(), from_args([], {})):
        assert (config.push_timeout, config.push_retries, config.push_retry_on) == (5.0, 2, "timeout")  # §3.1
        assert (config.confirm_window, config.pull_wait, config.event_retention) == (30.0, 5.0, 4 * 86_400)  # §3.2
        assert (config.duplicate_deliveries, config.reorder_window) == (1, 1)
    assert EVENT_RETENTION == 345_600


def test_delivery_and_fault_flags_and_environment() -> None:
    env = {
        "VODLOCAL_REORDER_WINDOW": "4",
        "VODLOCAL_REORDER_HOLD": "0.2",
        "VODLOCAL_DUPLICATE_DELIVERIES": "2",
        "VODLOCAL_EVENT_RETENTION": "60",
        "VODLOCAL_PULL_WAIT": "1",
        "VODLOCAL_PUSH_TIMEOUT": "0.5",
        "VODLOCAL_PUSH_RETRIES": "1",
        "VODLOCAL_PUSH_RETRY_ON": "network",
    }
    config = from_args([], env)
    assert (config.reorder_window, config.reorder_hold, config.duplicate_deliveries) == (4, 0.2, 2)
    assert (config.event_retention, config.pull_wait) == (60.0, 1.0)
    assert (config.push_timeout, config.push_retries, config.push_retry_on) == (0.5, 1, "network")
    flags = ["--reorder-window", "2", "--reorder-hold", "0", "--event-retention", "5", "--push-retry-on", "timeout"]
    config = from_args(flags, env)  # the flag wins
    assert (config.reorder_window, config.reorder_hold, config.event_retention, config.push_retry_on) == (
        2,
        0.0,
        5.0,
        "timeout",
    )


@pytest.mark.parametrize(
    ("argv", "env"),
    [
        (["--reorder-window", "0"], {}),
        (["--reorder-hold", "-1"], {}),
        (["--event-retention", "0"], {}),
        (["--push-timeout", "0"], {}),
        (["--push-retries", "-1"], {}),
        (["--push-retry-on", "always"], {}),
        ([], {"VODLOCAL_PUSH_RETRY_ON": "always"}),
    ],
)
def test_bad_delivery_settings_are_refused(argv: list[str], env: dict[str, str]) -> None:
    with pytest.raises(SystemExit):
        from_args(argv, env)


# --- PUSH (§3.1) ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("status", [500, 404, 302])
def test_push_takes_any_reply_as_delivered_and_does_not_retry_it(
    emu_config: Config, callbacks: CallbackReceiver, status: int
) -> None:
    callbacks.status = status  # "VOD ignores the response status and body"
    with start(emu_config) as emulator:
        emit(emulator, "5285890700000000101")
        wait_until_pushed(emulator)  # a retry would have gone out before the event is done with
        deliveries = list(emulator.app.bus.deliveries)
    assert [(d["attempt"], d["status"]) for d in deliveries] == [(0, status)]
    assert pushed_ids(callbacks) == ["5285890700000000101"]


def test_push_retries_a_timeout_twice_at_once_then_drops_the_event(emu_config: Config, silent_url: str) -> None:
    # "HTTP callback timeout 5 s; on timeout VOD retries twice (≤3 sends)", here with a 0.3 s timeout. The backoff
    # (0.2 s from the attempt's start) has passed when the attempt times out, so each retry follows at once.
    config = replace(emu_config, callback_url=silent_url, push_timeout=0.3, push_backoff=(0.2,))
    with start(config) as emulator:
        seq = emulator.app.bus.emit(file_deleted("5285890700000000102"))
        wait_until_pushed(emulator)  # given up: no fourth attempt can follow
        deliveries = list(emulator.app.bus.deliveries)
        row = emulator.app.store.one("SELECT confirmed, pull FROM events WHERE seq = ?", (seq,))
    assert [(d["attempt"], d["timeout"]) for d in deliveries] == [(0, True), (1, True), (2, True)]
    gaps = [later["t"] - earlier["t"] for earlier, later in itertools.pairwise(deliveries)]
    assert all(0.28 <= gap < 0.45 for gap in gaps), gaps
    assert row is not None and (row["confirmed"], row["pull"]) == (1, 0)  # given up: nothing left to deliver


def test_push_does_not_retry_a_refused_connection(emu_config: Config) -> None:
    with start(replace(emu_config, callback_url=refusing_url())) as emulator:
        emit(emulator, "5285890700000000103")
        wait_until_pushed(emulator)  # given up, where the 0.05 s and 0.1 s backoffs would have retried
        deliveries = list(emulator.app.bus.deliveries)
    assert [(d["attempt"], d["timeout"]) for d in deliveries] == [(0, False)]
    assert "ConnectionRefusedError" in deliveries[0]["error"]


def test_push_retry_on_network_also_retries_a_refused_connection(emu_config: Config) -> None:
    with start(replace(emu_config, callback_url=refusing_url(), push_retry_on="network")) as emulator:
        emit(emulator, "5285890700000000104")
        wait_until_pushed(emulator)
        deliveries = list(emulator.app.bus.deliveries)
    assert [(d["attempt"], d["timeout"]) for d in deliveries] == [(0, False), (1, False), (2, False)]


def test_push_reorder_window_reverses_the_events_ready_together(
    emu_config: Config, callbacks: CallbackReceiver
) -> None:
    with start(replace(emu_config, reorder_window=3, reorder_hold=0.3)) as emulator:
        emit(emulator, *(f"id-{n}" for n in range(5)))
        callbacks.wait(lambda evs: len(evs) >= 5)
        assert pushed_ids(callbacks) == ["id-2", "id-1", "id-0", "id-4", "id-3"]
        started = time.monotonic()
        emit(emulator, "alone")  # waits out the hold for company, then goes alone
        callbacks.wait(lambda evs: len(evs) >= 6)
        assert 0.25 <= time.monotonic() - started < 2
        wait_until_pushed(emulator)
    assert pushed_ids(callbacks) == ["id-2", "id-1", "id-0", "id-4", "id-3", "alone"]  # each once


def test_push_duplicates_and_reordering_of_real_uploads(
    emu_config: Config, signing: SigningStub, callbacks: CallbackReceiver
) -> None:
    with start(replace(emu_config, duplicate_deliveries=2, reorder_window=2, reorder_hold=2.0)) as emulator:
        first = upload(emulator, signing, b"first")["commit"]["fileId"]
        second = upload(emulator, signing, b"second")["commit"]["fileId"]
        events = callbacks.wait(lambda evs: len(evs) >= 4)
    assert [e["FileUploadEvent"]["FileId"] for e in events] == [second, second, first, first]


# --- PULL (§3.2) ---------------------------------------------------------------------------------------
def test_a_confirm_after_the_window_is_the_documented_parameter_error_and_the_event_comes_back(
    emu_config: Config,
) -> None:
    with start(pull_config(emu_config, confirm_window=0.5)) as emulator:
        vod = client(emulator)
        emit(emulator, "late")
        first = pull(vod)
        assert pulled_ids(first) == ["late"]
        time.sleep(0.6)
        # "Confirming after 30 s fails with a parameter error (4000)": here after 0.5 s, before any new pull.
        with pytest.raises(TencentCloudSDKException) as late:
            confirm(vod, [first[0].EventHandle])
        assert late.value.code == "InvalidParameterValue"
        assert "(4000)" in late.value.message and "past its 0.5 s confirm window" in late.value.message
        assert late.value.requestId
        again = pull(vod)  # delivered again, with a new handle
        assert pulled_ids(again) == ["late"] and again[0].EventHandle != first[0].EventHandle
        confirm(vod, [again[0].EventHandle])
        with pytest.raises(TencentCloudSDKException) as twice:
            confirm(vod, [again[0].EventHandle])
        assert twice.value.code == "InvalidParameterValue" and "already confirmed" in twice.value.message
        assert pulled_until_a_control_is_due_again(emulator, vod) == []


def test_confirm_events_is_all_or_none(emu_config: Config) -> None:
    with start(pull_config(emu_config, confirm_window=5.0)) as emulator:
        vod = client(emulator)
        emit(emulator, "a", "b")
        batch = pull(vod)
        assert pulled_ids(batch) == ["a", "b"]
        with pytest.raises(TencentCloudSDKException) as bad:
            confirm(vod, [batch[0].EventHandle, "never-issued"])
        assert bad.value.code == "InvalidParameterValue" and "never-issued is unknown" in bad.value.message
        confirm(vod, [e.EventHandle for e in batch])  # the rejected request confirmed nothing
        assert events_to_pull(vod) == 0


def test_unconfirmed_events_expire_after_the_retention(emu_config: Config) -> None:
    # "Un-pulled events are kept up to 4 days", here 1 s, counted from the event's creation.
    with start(pull_config(emu_config, confirm_window=10.0, event_retention=1.0)) as emulator:
        vod = client(emulator)
        emit(emulator, "pulled")
        in_flight = pull(vod)
        emit(emulator, "never-pulled")
        assert events_to_pull(vod) == 2
        time.sleep(1.1)
        emit(emulator, "fresh")
        assert events_to_pull(vod) == 1
        with pytest.raises(TencentCloudSDKException) as gone:  # still within its confirm window, but expired
            confirm(vod, [in_flight[0].EventHandle])
        assert gone.value.code == "InvalidParameterValue" and "unknown" in gone.value.message
        assert pulled_ids(pull(vod)) == ["fresh"]


def test_pull_duplicates_come_in_a_later_batch_each_with_its_own_handle(emu_config: Config) -> None:
    with start(pull_config(emu_config, duplicate_deliveries=2, confirm_window=0.5)) as emulator:
        vod = client(emulator)
        emit(emulator, "dup")
        first, second = pull(vod), pull(vod)
        assert pulled_ids(first) == pulled_ids(second) == ["dup"]
        assert first[0].EventHandle != second[0].EventHandle
        bodies = [json.loads(batch[0].to_json_string()) for batch in (first, second)]
        for body in bodies:
            body.pop("EventHandle")
        assert bodies[0] == bodies[1]  # the same event, to the last field
        confirm(vod, [first[0].EventHandle])  # confirms that copy only
        assert events_to_pull(vod) == 1
        time.sleep(0.6)
        third = pull(vod)  # the unconfirmed copy is delivered again; no further copy is made
        assert pulled_ids(third) == ["dup"]
        assert third[0].EventHandle not in {first[0].EventHandle, second[0].EventHandle}
        confirm(vod, [third[0].EventHandle])
        assert pulled_until_a_control_is_due_again(emulator, vod) == []


def test_pull_reorder_window_reverses_the_events_due_together(emu_config: Config) -> None:
    with start(pull_config(emu_config, reorder_window=3, reorder_hold=0.3, pull_wait=1.0)) as emulator:
        vod = client(emulator)
        emit(emulator, *(f"id-{n}" for n in range(5)))
        batch = pull(vod)
        assert pulled_ids(batch) == ["id-2", "id-1", "id-0", "id-4", "id-3"]
        confirm(vod, [e.EventHandle for e in batch])
        emit(emulator, "alone")
        started = time.monotonic()
        assert pulled_ids(pull(vod)) == ["alone"]  # held for company, then handed out alone
        assert 0.2 <= time.monotonic() - started < 1.0


def test_pull_duplicates_and_reordering_of_real_uploads(emu_config: Config, signing: SigningStub) -> None:
    config = pull_config(emu_config, duplicate_deliveries=2, reorder_window=2, reorder_hold=2.0, pull_wait=3.0)
    with start(config) as emulator:
        vod = client(emulator)
        first = upload(emulator, signing, b"first")["commit"]["fileId"]
        second = upload(emulator, signing, b"second")["commit"]["fileId"]
        seen: list[str] = []
        while len(seen) < 4:
            batch = pull(vod)
            assert batch, seen
            confirm(vod, [e.EventHandle for e in batch])
            seen += [e.FileUploadEvent.FileId for e in batch]
    # Reversed; each copy is queued as its original is handed out (second's, then first's), and reversed in turn.
    assert seen == [second, first, first, second]


def test_a_data_directory_from_before_the_copy_column_still_works(emu_config: Config, tmp_path: Path) -> None:
    data = tmp_path / "older"
    data.mkdir()
    with sqlite3.connect(data / "state.sqlite3") as db:
        db.execute(
            "CREATE TABLE events (seq INTEGER PRIMARY KEY AUTOINCREMENT, event_type TEXT NOT NULL, body TEXT NOT NULL,"
            " created REAL NOT NULL, pull INTEGER NOT NULL, handle TEXT, inflight_until REAL,"
            " confirmed INTEGER NOT NULL DEFAULT 0)"
        )
        db.execute(
            "INSERT INTO events (event_type, body, created, pull) VALUES ('FileDeleted', ?, ?, 1)",
            (file_deleted("kept").to_json_string(), time.time()),
        )
    db.close()
    with start(pull_config(emu_config, data_dir=data, duplicate_deliveries=2)) as emulator:
        vod = client(emulator)
        assert pulled_ids(pull(vod)) == ["kept"]
        assert pulled_ids(pull(vod)) == ["kept"]  # its copy
