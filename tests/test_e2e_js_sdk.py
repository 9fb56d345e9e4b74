"""End to end with the real client: the official vod-js-sdk-v6 (Node, e2e/js/harness.js) gets its
signatures from our signing service (`chalice local`) over HTTP, uploads through vodlocal, vodlocal
pushes NewFileUpload to our callback, and `GET /videos` shows the video to its owner only."""

from __future__ import annotations

import hashlib
import os
import shutil
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import TokenFactory, call, wait_for_video
from vodlocal import Handle
from vodlocal.testing import run_harness

NODE = shutil.which("node")
pytestmark = pytest.mark.skipif(NODE is None, reason="node is not installed (CI installs it)")
MiB = 1 << 20


def md5_of(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


class Client:
    def __init__(self, api: str, emulator: str, token: str, workdir: Path) -> None:
        self.api, self.emulator, self.token, self.workdir = api, emulator, token, workdir

    def upload(self, **env: Any) -> dict[str, Any]:
        assert NODE is not None
        return run_harness(NODE, self.emulator, f"{self.api}/", self.token, **env)

    def wait_for_video(self, file_id: str) -> dict[str, Any]:
        return wait_for_video(self.api, self.token, file_id)


@pytest.fixture
def alice(chalice_local: str, vodlocal: Handle, token_for: TokenFactory, tmp_path: Path) -> Client:
    return Client(chalice_local, vodlocal.url, token_for("alice"), tmp_path)


def fetch(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=10) as response:
        return bytes(response.read())


def assert_attributed_to_alice_only(alice: Client, out: dict[str, Any], source: bytes, token_for: TokenFactory) -> None:
    assert out["ok"], out
    file_id = out["result"]["fileId"]
    video = alice.wait_for_video(file_id)
    assert video["uploadId"] == out["uploadId"]
    assert video["md5"] == md5_of(source) and video["size"] == len(source)
    assert md5_of(fetch(video["mediaUrl"])) == md5_of(source)
    status, upload = call("GET", f"{alice.api}/uploads/{out['uploadId']}", token=alice.token)
    assert status == 200 and upload["status"] == "completed" and upload["fileId"] == file_id
    assert call("GET", f"{alice.api}/videos", token=token_for("bob")) == (200, {"videos": [], "nextCursor": None})
    assert call("GET", f"{alice.api}/videos/{file_id}", token=token_for("bob"))[0] == 404
    # One-time signatures: a fresh one from our API for every VOD call the SDK made.
    assert out["signatureCalls"] >= 3 and out["distinctSignatures"] == out["signatureCalls"]


def test_video_only(alice: Client, token_for: TokenFactory, tmp_path: Path) -> None:
    source = os.urandom(3 * MiB + 12345)
    (tmp_path / "clip.mp4").write_bytes(source)
    out = alice.upload(FILE=tmp_path / "clip.mp4", CHUNK_SIZE=MiB)
    assert_attributed_to_alice_only(alice, out, source, token_for)


def test_video_with_cover(alice: Client, token_for: TokenFactory, tmp_path: Path) -> None:
    source, cover = os.urandom(MiB + 1), os.urandom(20_000)
    (tmp_path / "clip.mp4").write_bytes(source)
    (tmp_path / "cover.jpg").write_bytes(cover)
    out = alice.upload(FILE=tmp_path / "clip.mp4", COVER=tmp_path / "cover.jpg")
    assert_attributed_to_alice_only(alice, out, source, token_for)
    video = alice.wait_for_video(out["result"]["fileId"])
    assert md5_of(fetch(video["coverUrl"])) == md5_of(cover)


def test_zero_byte_file(alice: Client, token_for: TokenFactory, tmp_path: Path) -> None:
    (tmp_path / "empty.mp4").write_bytes(b"")
    out = alice.upload(FILE=tmp_path / "empty.mp4")
    assert_attributed_to_alice_only(alice, out, b"", token_for)


def test_cancel_then_resume_in_a_new_process(
    alice: Client, vodlocal: Handle, token_for: TokenFactory, tmp_path: Path
) -> None:
    source = os.urandom(5 * MiB)
    (tmp_path / "long.mp4").write_bytes(source)
    common = {"FILE": tmp_path / "long.mp4", "CHUNK_SIZE": MiB, "PARALLEL": 1, "LS_FILE": tmp_path / "ls.json"}
    first = alice.upload(**common, CANCEL_AFTER_PARTS=2)
    assert first.get("cancelled"), first
    parts_before = len(vodlocal.requests("UploadPart"))
    second = alice.upload(**common, UPLOAD_ID=first["uploadId"])
    assert_attributed_to_alice_only(alice, second, source, token_for)
    assert second["uploadId"] == first["uploadId"]
    resent = len(vodlocal.requests("UploadPart")) - parts_before
    assert resent <= 5 - 2, f"{resent} parts re-sent, only the missing ones should be"
