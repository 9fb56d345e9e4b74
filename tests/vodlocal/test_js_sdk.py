"""The official vod-js-sdk-v6 1.8.0, unmodified, uploading through vodlocal (Node 20 + shims)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import requests

from chalicelib import callback_auth
from tests.vodlocal.conftest import (
    SIGN_KEY,
    CallbackReceiver,
    SigningStub,
    make_file,
    md5_file,
    run_harness,
)
from vodlocal import Config, Handle, start

MiB = 1 << 20


def stored_md5(url: str) -> str:
    resp = requests.get(url, timeout=30)
    assert resp.status_code == 200, resp.text
    return hashlib.md5(resp.content, usedforsecurity=False).hexdigest()


def upload_event(callbacks: CallbackReceiver, file_id: str) -> dict[str, Any]:
    events = callbacks.wait(
        lambda evs: any(
            e.get("EventType") == "NewFileUpload" and e["FileUploadEvent"]["FileId"] == file_id for e in evs
        )
    )
    event = next(
        e for e in events if e.get("EventType") == "NewFileUpload" and e["FileUploadEvent"]["FileId"] == file_id
    )
    assert event["Sign"] == callback_auth.sign(SIGN_KEY, event["T"])
    return event


def assert_success(
    out: dict[str, Any], signing: SigningStub, callbacks: CallbackReceiver, source: Path, cover: Path | None = None
) -> dict[str, Any]:
    assert out["ok"], out
    result = out["result"]
    file_id = result["fileId"]
    assert stored_md5(result["video"]["url"]) == md5_file(source)
    event = upload_event(callbacks, file_id)["FileUploadEvent"]
    info = event["MediaBasicInfo"]
    assert info["SourceInfo"] == {
        "SourceType": "Upload",
        "SourceContext": out["uploadId"],
        "LiveRecordInfo": None,
        "TrtcRecordInfo": None,
        "WebPageRecordInfo": None,
    }
    assert event["MetaData"]["Md5"] == md5_file(source)
    assert event["MetaData"]["Size"] == source.stat().st_size
    assert info["MediaUrl"] == result["video"]["url"]
    if cover is not None:
        assert stored_md5(result["cover"]["url"]) == md5_file(cover)
        assert info["CoverUrl"] == result["cover"]["url"]
    # One-time signatures: the SDK asked for a fresh one on every VOD call, each accepted exactly once.
    assert out["signatureCalls"] >= 3
    assert out["distinctSignatures"] == out["signatureCalls"]
    return event


def test_video_only_multipart(
    emulator: Handle, signing: SigningStub, callbacks: CallbackReceiver, tmp_path: Path
) -> None:
    source = make_file(tmp_path / "clip.mp4", 5 * MiB + 12345)
    out = run_harness(emulator, signing, FILE=source, CHUNK_SIZE=MiB)
    assert_success(out, signing, callbacks, source)
    ops = [r["op"] for r in emulator.requests() if r["host"].endswith(".myqcloud.com")]
    assert ops[0] == "ListMultipartUploads" and ops.count("UploadPart") == 6, ops
    assert ops[-1] == "CompleteMultipartUpload"
    actions = [r["op"] for r in emulator.requests() if r["host"] == "vod2.qcloud.com"]
    assert actions == ["PrepareUploadUGC", "ApplyUploadUGC", "CommitUploadUGC"]


def test_video_and_cover(emulator: Handle, signing: SigningStub, callbacks: CallbackReceiver, tmp_path: Path) -> None:
    source = make_file(tmp_path / "talk.mp4", 3 * MiB)
    cover = make_file(tmp_path / "poster.jpg", 70_000)
    out = run_harness(emulator, signing, FILE=source, COVER=cover, CHUNK_SIZE=MiB)
    assert_success(out, signing, callbacks, source, cover)


def test_zero_byte_file_uses_put_object(
    emulator: Handle, signing: SigningStub, callbacks: CallbackReceiver, tmp_path: Path
) -> None:
    source = make_file(tmp_path / "empty.mp4", 0)
    out = run_harness(emulator, signing, FILE=source)
    event = assert_success(out, signing, callbacks, source)
    assert event["MetaData"]["Size"] == 0
    assert [r["op"] for r in emulator.requests() if r["host"].endswith(".myqcloud.com")] == ["PutObject"]


def test_cover_replacement_keeps_file_id(
    emulator: Handle, signing: SigningStub, callbacks: CallbackReceiver, tmp_path: Path
) -> None:
    source = make_file(tmp_path / "a.mp4", MiB)
    first = run_harness(emulator, signing, FILE=source)
    assert first["ok"], first
    cover = make_file(tmp_path / "new-cover.png", 5000)
    # The file's own intent signs the replacement: a cover is replaced only with the file's sourceContext.
    out = run_harness(emulator, signing, FILE_ID=first["result"]["fileId"], COVER=cover, UPLOAD_ID=first["uploadId"])
    assert out["ok"], out
    assert out["result"]["fileId"] == first["result"]["fileId"]
    assert stored_md5(out["result"]["cover"]["url"]) == md5_file(cover)


def _parts(requests_log: list[dict[str, Any]]) -> set[int]:
    return {int(r["partNumber"]) for r in requests_log if r.get("op") == "UploadPart" and r["status"] == 200}


def _cancel_then_resume(
    start_emulator: Callable[[], Handle],
    restart_between: bool,
    signing: SigningStub,
    callbacks: CallbackReceiver,
    tmp_path: Path,
) -> None:
    source = make_file(tmp_path / "long.mp4", 6 * MiB + 777)
    ls_file = tmp_path / "localStorage.json"
    emulator = start_emulator()
    first = run_harness(
        emulator, signing, FILE=source, CHUNK_SIZE=MiB, PARALLEL=1, CANCEL_AFTER_PARTS=3, LS_FILE=ls_file
    )
    assert first.get("cancelled"), first
    before = _parts(emulator.requests())
    assert 3 <= len(before) < 7
    saved = json.loads(ls_file.read_text())
    assert any(k.startswith("webugc_") for k in saved), saved
    if restart_between:
        emulator = start_emulator()
        seen = len(emulator.requests())
    else:
        seen = len(emulator.requests())
    second = run_harness(
        emulator, signing, FILE=source, CHUNK_SIZE=MiB, PARALLEL=1, LS_FILE=ls_file, UPLOAD_ID=first["uploadId"]
    )
    assert second["ok"], second
    log = emulator.requests()[seen:]
    resent = _parts(log)
    assert resent == set(range(1, 8)) - before, (before, resent)
    ops = [r["op"] for r in log]
    assert "ListParts" in ops and "InitiateMultipartUpload" not in ops, ops
    applies = [r for r in log if r.get("op") == "ApplyUploadUGC"]
    assert applies and second["vodSessionKey"] == saved[next(k for k in saved if k.startswith("webugc_"))]
    assert_success(second, signing, callbacks, source)


def test_cancel_then_resume_in_new_process(
    emulator: Handle, signing: SigningStub, callbacks: CallbackReceiver, tmp_path: Path
) -> None:
    _cancel_then_resume(lambda: emulator, False, signing, callbacks, tmp_path)


def test_resume_after_emulator_restart(
    restartable: Callable[[], Handle], signing: SigningStub, callbacks: CallbackReceiver, tmp_path: Path
) -> None:
    _cancel_then_resume(restartable, True, signing, callbacks, tmp_path)


def test_reused_one_time_signature_is_rejected_under_the_strict_rule(
    emu_config: Config, signing: SigningStub, tmp_path: Path
) -> None:
    source = make_file(tmp_path / "dup.mp4", 1000)
    with start(replace(emu_config, one_time_signatures="strict")) as emulator:
        out = run_harness(emulator, signing, FILE=source, REUSE_SIGNATURE=1, RACE=0)
        assert not out["ok"]
        assert out["error"]["message"] == "duplicate vod signature", out
        # First use (Apply) succeeds; every Commit attempt then replays the consumed signature.
        assert [r.get("code") for r in emulator.requests() if r.get("op") == "ApplyUploadUGC"] == [None]
        assert [r.get("code") for r in emulator.requests() if r.get("op") == "CommitUploadUGC"] == [10004] * 4


def test_expired_signature_surfaces_code_10010(emulator: Handle, signing: SigningStub, tmp_path: Path) -> None:
    signing.clock_offset = -7200
    signing.validity = 3600
    source = make_file(tmp_path / "late.mp4", 1000)
    out = run_harness(emulator, signing, FILE=source, RACE=0)
    assert not out["ok"]
    assert out["error"]["code"] == 10010, out
    assert [r.get("code") for r in emulator.requests() if r.get("op") == "ApplyUploadUGC"] == [10010] * 4


def test_credentials_refresh_mid_upload(
    emu_config: Config, signing: SigningStub, callbacks: CallbackReceiver, tmp_path: Path
) -> None:
    source = make_file(tmp_path / "slow.mp4", 4 * MiB)
    with start(replace(emu_config, cert_ttl=3)) as emulator:
        out = run_harness(emulator, signing, FILE=source, CHUNK_SIZE=MiB, PARALLEL=1, PART_DELAY_MS=900, RACE=0)
        assert_success(out, signing, callbacks, source)
        applies = emulator.requests("ApplyUploadUGC")
        assert len(applies) >= 2, applies  # the SDK re-applied with its vodSessionKey for fresh credentials
        assert len({r["secretId"] for r in applies}) == 1 and all(r.get("code") is None for r in applies)
