"""vodlocal as the dev stack runs it: secrets only through its environment, and PUSH retries that pause long
enough for a restarting API to take them."""

from __future__ import annotations

import itertools
import json
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.waiting import wait_until
from vodlocal import Config, Handle, start
from vodlocal.config import from_args
from vodlocal.events import file_deleted


@pytest.mark.parametrize("flag", ["--secret", "--sign-key", "--sign"])
def test_secret_flags_are_refused(flag: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        from_args([flag, "AKIDx:secret-value"], {})
    assert exited.value.code == 2
    assert "VODLOCAL_SECRETS" in capsys.readouterr().err


def test_secrets_and_sign_key_come_from_the_environment() -> None:
    config = from_args([], {"VODLOCAL_SECRETS": "id1:k1,id2:k2", "VODLOCAL_SIGN_KEY": "sk"})
    assert dict(config.secrets) == {"id1": "k1", "id2": "k2"} and config.sign_key == "sk"
    unset = from_args([], {})
    assert (dict(unset.secrets), unset.sign_key) == ({}, None)


def test_push_backoff_flag_and_environment() -> None:
    assert from_args([], {}).push_backoff == (1.0, 2.0)
    assert from_args([], {"VODLOCAL_PUSH_BACKOFF": "0.5"}).push_backoff == (0.5,)
    assert from_args(["--push-backoff", "0,0.25"], {"VODLOCAL_PUSH_BACKOFF": "3"}).push_backoff == (0.0, 0.25)
    with pytest.raises(SystemExit):
        from_args(["--push-backoff", "-1"], {})


class Receiver:
    """An HTTP callback on a port that refuses connections until `listen()` (an API that is restarting)."""

    def __init__(self) -> None:
        self._placeholder = socket.socket()
        self._placeholder.bind(("127.0.0.1", 0))  # bound, never listening: connections are refused
        self.port = int(self._placeholder.getsockname()[1])
        self.url = f"http://127.0.0.1:{self.port}/vod/events/token"
        self.bodies: list[dict[str, Any]] = []
        self.received = threading.Event()
        self._server: ThreadingHTTPServer | None = None

    def listen(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                receiver.bodies.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()
                receiver.received.set()

        self._placeholder.close()
        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def close(self) -> None:
        self._placeholder.close()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    receiver = Receiver()
    yield receiver
    receiver.close()


def emulator(tmp_path: Path, url: str, backoff: tuple[float, ...]) -> Handle:
    """vodlocal as `make dev` runs it: retrying a refused connection too (devstack/run.py)."""
    return start(
        Config(port=0, data_dir=tmp_path / "vodlocal", callback_url=url, push_backoff=backoff, push_retry_on="network")
    )


def first_attempt_logged(handle: Handle) -> None:
    wait_until(lambda: handle.app.bus.deliveries, "no PUSH attempt", timeout=5)


def test_push_retries_pause_after_a_refused_connection(tmp_path: Path, receiver: Receiver) -> None:
    with emulator(tmp_path, receiver.url, (0.3, 0.6)) as handle:
        handle.app.bus.emit(file_deleted("5285890700000000001"))
        deadline = time.monotonic() + 5
        while len(handle.app.bus.deliveries) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        deliveries = list(handle.app.bus.deliveries)
    assert [d["attempt"] for d in deliveries] == [0, 1, 2] and all("error" in d for d in deliveries)
    gaps = [later["t"] - earlier["t"] for earlier, later in itertools.pairwise(deliveries)]
    assert gaps[0] >= 0.3 - 0.02 and gaps[1] >= 0.6 - 0.02, gaps  # before the fix: all three within ~1 ms


def test_a_restarting_callback_takes_the_retry(tmp_path: Path, receiver: Receiver) -> None:
    with emulator(tmp_path, receiver.url, (0.6, 1.2)) as handle:
        handle.app.bus.emit(file_deleted("5285890700000000002"))
        first_attempt_logged(handle)  # refused; the API comes back during the pause
        receiver.listen()
        assert receiver.received.wait(5), handle.app.bus.deliveries
        assert receiver.bodies[0]["FileDeleteEvent"]["FileIdSet"] == ["5285890700000000002"]
        deadline = time.monotonic() + 5
        while len(handle.app.bus.deliveries) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)  # the reply is recorded just after the receiver has it
        assert [("error" in d, d["attempt"]) for d in handle.app.bus.deliveries] == [(True, 0), (False, 1)]


def test_close_cuts_a_retry_pause_short_and_keeps_the_event_for_the_next_start(
    tmp_path: Path, receiver: Receiver
) -> None:
    handle = emulator(tmp_path, receiver.url, (30.0,))
    handle.app.bus.emit(file_deleted("5285890700000000003"))
    first_attempt_logged(handle)  # refused: the 30 s pause is under way
    started = time.monotonic()
    handle.stop()
    assert time.monotonic() - started < 2  # not 30 s
    receiver.listen()
    with emulator(tmp_path, receiver.url, (0.1,)):
        assert receiver.received.wait(5)  # left undelivered, so sent again after the restart
