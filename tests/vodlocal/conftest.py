"""Fixtures for the vodlocal tests: the emulator (in-process), a signing service speaking the project's
``POST /uploads`` + ``POST /uploads/{id}/signature`` contract, a PUSH callback receiver, and helpers to run
the official JS SDK harness and the official Python SDKs against the emulator."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import pytest
import requests
from qcloud_cos import CosConfig, CosS3Client

from tests.signing_stub import SigningStub
from tests.waiting import wait_until
from vodlocal import Config, Handle, start, testing
from vodlocal.testing import HARNESS, LocalServer, reply_json

SECRET_ID = "AKIDvodlocalTEST0000000000000000001"
SECRET_KEY = "vodlocal-test-secret-key-0001"
AUTH_TOKEN = "test-bearer-token"
MiB = 1 << 20


def md5_file(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(MiB), b""):
            digest.update(chunk)
    return digest.hexdigest()


def make_file(path: Path, size: int) -> Path:
    path.write_bytes(os.urandom(size))
    return path


# --- PUSH receiver -------------------------------------------------------------------------------------
class CallbackReceiver:
    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.arrived = 0  # requests whose body has been read, counted before any `delay`
        self.delay = 0.0
        self.status = 200  # of every reply: VOD ignores it
        self.cond = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
                with receiver.cond:
                    receiver.arrived += 1
                if receiver.delay:
                    time.sleep(receiver.delay)
                with receiver.cond:
                    receiver.events.append(body)
                    receiver.cond.notify_all()
                reply_json(self, receiver.status, {"code": 0})

        self._local = LocalServer(Handler)
        self.url = self._local.url + "/vod/events/test-token"

    def wait(self, predicate: Callable[[list[dict[str, Any]]], bool], timeout: float = 15) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        with self.cond:
            while not predicate(self.events):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(f"timed out waiting for events; got {json.dumps(self.events)[:2000]}")
                self.cond.wait(remaining)
            return list(self.events)

    def of_type(self, event_type: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e.get("EventType") == event_type]

    def stop(self) -> None:
        self._local.stop()


def unsettled_pushes(emulator: Handle) -> int:
    """PUSH events vodlocal has neither delivered nor given up yet. A PUSH row's `confirmed` is set once its
    worker is done with it, every attempt and copy logged in `bus.deliveries`."""
    row = emulator.app.store.one("SELECT count(*) AS n FROM events WHERE pull = 0 AND confirmed = 0")
    return int(row["n"]) if row else 0


def wait_until_pushed(emulator: Handle, timeout: float = 10) -> None:
    """Until every PUSH event emitted so far is delivered or given up: after this no retry or copy of any of
    them can come, so an absent or single delivery is final (not merely not yet)."""
    wait_until(lambda: not unsettled_pushes(emulator), "PUSH events still undelivered", timeout, poll=0.02)


def refusing_url() -> str:
    """A callback URL on a port nothing listens on: every connection is refused at once."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}/vod/events/refused"


@pytest.fixture
def silent_url() -> Iterator[str]:
    """A callback URL whose server accepts connections (the kernel does) and never answers: every attempt times out."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(64)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}/vod/events/silent"


@pytest.fixture
def signing() -> Iterator[SigningStub]:
    stub = SigningStub(SECRET_ID, SECRET_KEY, AUTH_TOKEN).start()
    yield stub
    stub.stop()


@pytest.fixture
def callbacks() -> Iterator[CallbackReceiver]:
    receiver = CallbackReceiver()
    yield receiver
    receiver.stop()


SIGN_KEY = "TestSignKey0123456789"


@pytest.fixture
def emu_config(tmp_path: Path, callbacks: CallbackReceiver) -> Config:
    return Config(
        port=0,
        data_dir=tmp_path / "vodlocal",
        secrets={SECRET_ID: SECRET_KEY},
        callback_url=callbacks.url,
        sign_key=SIGN_KEY,
        procedure_delay=0.2,
        pull_wait=0.5,
        push_backoff=(0.05, 0.1),  # PUSH retry pauses (1 s, 2 s by default), short to keep the suite fast
    )


@pytest.fixture
def emulator(emu_config: Config) -> Iterator[Handle]:
    handle = start(emu_config)
    yield handle
    handle.stop()


@pytest.fixture
def restartable(emu_config: Config) -> Iterator[Callable[[], Handle]]:
    """Start (or restart) the emulator on the same data directory; stops the last one at teardown."""
    handles: list[Handle] = []

    def restart() -> Handle:
        if handles:
            handles[-1].stop()
        handles.append(start(replace(emu_config)))
        return handles[-1]

    yield restart
    if handles:
        handles[-1].stop()


# --- the JS SDK harness --------------------------------------------------------------------------------
def _node() -> str:
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed: the vod-js-sdk-v6 end-to-end tests need Node 20+")
    if not (HARNESS.parent / "node_modules" / "vod-js-sdk-v6").is_dir():
        pytest.fail("e2e/js/node_modules is missing: run `npm ci --prefix e2e/js` first")
    return node


def run_harness(
    emulator: Handle, signing: SigningStub, timeout: float = 120, **env: str | int | Path
) -> dict[str, Any]:
    return testing.run_harness(_node(), emulator.url, signing.url, AUTH_TOKEN, timeout, **env)


# --- the Python SDKs -----------------------------------------------------------------------------------
def cos_client(emulator: Handle, region: str, secret_id: str, secret_key: str, token: str | None = None) -> CosS3Client:
    """qcloud_cos sends the real virtual-hosted URL; the emulator is its HTTP proxy, so Host stays real."""
    config = CosConfig(
        Region=region,
        SecretId=secret_id,
        SecretKey=secret_key,
        Token=token,
        Scheme="http",
        Proxies={"http": emulator.url},
        Timeout=30,
    )
    return CosS3Client(config, retry=1)


def ugc(emulator: Handle, action: str, body: dict[str, Any], host: str = "vod2.qcloud.com") -> dict[str, Any]:
    resp = requests.post(
        f"{emulator.url}/v3/index.php", params={"Action": action}, json=body, headers={"Host": host}, timeout=10
    )
    assert resp.status_code == 200
    payload: dict[str, Any] = resp.json()
    return payload


def apply_body(signature: str, size: int, name: str = "clip", ext: str = "mp4") -> dict[str, Any]:
    return {"signature": signature, "videoName": name, "videoType": ext, "videoSize": size, "uploadFromWeb": True}


def apply_and_store(emulator: Handle, signature: str, payload: bytes) -> dict[str, Any]:
    """ApplyUploadUGC for a video of `payload`, then the video put to COS with the session's credentials; the
    Apply's data (its vodSessionKey is what Commit needs)."""
    apply = ugc(emulator, "ApplyUploadUGC", apply_body(signature, len(payload)))
    assert apply["code"] == 0, apply
    data: dict[str, Any] = apply["data"]
    cert = data["tempCertificate"]
    client = cos_client(emulator, data["storageRegionV5"], cert["secretId"], cert["secretKey"], cert["token"])
    client.put_object(
        Bucket=f"{data['storageBucket']}-{data['storageAppId']}", Key=data["video"]["storagePath"][1:], Body=payload
    )
    return data


def upload(emulator: Handle, signing: SigningStub, payload: bytes = b"video-bytes") -> dict[str, Any]:
    """A new intent's upload, committed with a second signature of that intent (as the Web SDK does)."""
    intent = signing.new_upload()
    data = apply_and_store(emulator, signing.sign(intent)["signature"], payload)
    commit = ugc(
        emulator,
        "CommitUploadUGC",
        {"signature": signing.sign(intent)["signature"], "vodSessionKey": data["vodSessionKey"]},
    )
    assert commit["code"] == 0, commit
    return {"intent": intent, "apply": data, "commit": commit["data"]}
