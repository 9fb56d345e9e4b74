"""The `vodup` command in real subprocesses against the whole local stack: Ctrl-C pauses, `kill -9` loses only the
parts in flight, a re-run resumes the same upload session sending only the missing parts; errors are one line."""

from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.conftest import ROOT, TokenFactory, call, wait_for_video, with_policy
from tests.test_vodup import MiB, fetch, md5_of
from tests.waiting import wait_until
from vodlocal import Handle
from vodlocal.testing import LocalServer

HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-connection", "transfer-encoding"})


class PartGate:
    """An HTTP proxy in front of vodlocal (what `--emulator` points at) that forwards everything, except that
    UploadParts beyond `allowed` are held: the client is then stuck mid-upload, with a known set of parts stored.
    `release()` forwards the held ones; `close()` drops them (their client is dead)."""

    def __init__(self, upstream: str) -> None:
        self.upstream = urlsplit(upstream)
        self.allowed = 1 << 30
        self.forwarded = 0
        self.held = 0
        self.state = "hold"
        self.cond = threading.Condition()
        gate = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_any(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if self.command == "PUT" and "partNumber=" in self.path and not gate.admit():
                    self.close_connection = True
                    return
                status, headers, payload = gate.forward(self.command, self.path, body, dict(self.headers))
                self.send_response(status)
                for name, value in headers:
                    if name.lower() not in HOP_BY_HOP | {"content-length"}:
                        self.send_header(name, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def do_GET(self) -> None:
                self.do_any()

            def do_HEAD(self) -> None:
                self.do_any()

            def do_PUT(self) -> None:
                self.do_any()

            def do_POST(self) -> None:
                self.do_any()

            def do_DELETE(self) -> None:
                self.do_any()

            def log_message(self, *_: object) -> None:
                pass

        self.server = LocalServer(Handler)
        self.url = self.server.url

    def admit(self) -> bool:
        """Whether this UploadPart goes on (now, or once released); False once the gate is closed."""
        with self.cond:
            if self.forwarded >= self.allowed:
                self.held += 1
                self.cond.notify_all()
                self.cond.wait_for(lambda: self.state != "hold")
                if self.state == "closed":
                    return False
            self.forwarded += 1
            return True

    def hold_after(self, parts: int) -> None:
        with self.cond:
            self.allowed, self.held, self.state = self.forwarded + parts, 0, "hold"

    def wait_held(self, timeout: float = 30) -> None:
        with self.cond:
            assert self.cond.wait_for(lambda: self.held > 0, timeout), "no UploadPart reached the gate"

    def release(self, state: str = "open") -> None:
        with self.cond:
            self.state = state
            self.cond.notify_all()

    def forward(self, method: str, target: str, body: bytes, headers: dict[str, str]) -> tuple[int, Any, bytes]:
        connection = http.client.HTTPConnection(self.upstream.hostname or "127.0.0.1", self.upstream.port, timeout=30)
        try:
            connection.request(method, target, body=body, headers=headers)
            response = connection.getresponse()
            return response.status, response.getheaders(), response.read()
        finally:
            connection.close()

    def close(self) -> None:
        self.release("closed")
        self.server.stop()


@pytest.fixture
def gate(vodlocal: Handle) -> Iterator[PartGate]:
    proxy = PartGate(vodlocal.url)
    yield proxy
    proxy.close()


def vodup_env(api: str, token: str, emulator: str, state_dir: Path) -> dict[str, str]:
    return {
        "PATH": os.environ.get("PATH", ""),
        "PYTHONPATH": str(ROOT),  # this checkout's vodup, whichever one the console script was installed from
        "VODUP_API": api,
        "VODUP_TOKEN": token,
        "VODUP_EMULATOR": emulator,
        "VODUP_STATE_DIR": str(state_dir),
    }


def vodup(*args: str) -> list[str]:
    """The console script `make install` put next to this interpreter."""
    return [str(Path(sys.executable).with_name("vodup")), *args]


def start(*args: str, env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(  # noqa: S603 - our own command
        vodup(*args), cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def run(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603 - our own command
        vodup(*args), cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False
    )


def stored_parts(state_dir: Path) -> dict[str, Any]:
    [state_file] = state_dir.glob("*.json")
    state: dict[str, Any] = json.loads(state_file.read_text())
    return state


def wait_recorded(state_dir: Path, parts: int, timeout: float = 30) -> None:
    def recorded() -> bool:
        return len(stored_parts(state_dir)["transfers"]["video"]["parts"]) >= parts

    wait_until(recorded, "the stored parts were never recorded", timeout)


def test_ctrl_c_pauses_kill_9_loses_only_parts_in_flight_and_a_rerun_resumes_the_same_session(
    chalice_local: str, vodlocal: Handle, gate: PartGate, token_for: TokenFactory, tmp_path: Path
) -> None:
    total_parts = 12
    source = os.urandom(total_parts * MiB - 100)
    (tmp_path / "long.mp4").write_bytes(source)
    alice, state_dir = token_for("alice"), tmp_path / "state"
    args = ("upload", str(tmp_path / "long.mp4"), "--title", "long", "--part-size", "1", "--parallel", "2", "--json")
    through_gate = vodup_env(chalice_local, alice, gate.url, state_dir)

    # 1. Ctrl-C while parts are in flight: they finish, are recorded, and the command says how to resume.
    gate.hold_after(3)
    first = start(*args, env=through_gate)
    gate.wait_held()
    first.send_signal(signal.SIGINT)
    gate.release()
    _, err = first.communicate(timeout=60)
    assert first.returncode == 130, err
    assert err.splitlines()[-1].startswith("vodup: paused at ") and "run the same command again" in err
    paused = len(stored_parts(state_dir)["transfers"]["video"]["parts"])
    assert paused == gate.forwarded >= 4

    # 2. kill -9 with two more parts stored and two held in flight: only those are lost.
    gate.hold_after(2)
    second = start(*args, env=through_gate)
    gate.wait_held()
    wait_recorded(state_dir, paused + 2)
    second.kill()
    second.wait(timeout=10)
    state = stored_parts(state_dir)
    assert len(state["transfers"]["video"]["parts"]) == gate.forwarded == paused + 2

    # 3. The same command again resumes: the same intent and session, only the missing parts.
    sent_before = len(vodlocal.requests("UploadPart"))
    third = run(*args, env=vodup_env(chalice_local, alice, vodlocal.url, state_dir))
    assert third.returncode == 0, third.stderr
    resuming = f"resuming upload {state['signer_context']}: {paused + 2:.1f} MiB of {len(source) / MiB:.1f} MiB"
    assert resuming in third.stderr and "B/s" in third.stderr  # the progress bar, with its rate
    assert len(vodlocal.requests("UploadPart")) - sent_before == total_parts - paused - 2
    numbers = [r["partNumber"] for r in vodlocal.requests("UploadPart")]
    assert sorted(numbers) == list(range(1, total_parts + 1)), "a part was sent twice"
    assert len(vodlocal.requests("InitiateMultipartUpload")) == 1
    assert len(vodlocal.requests("ApplyUploadUGC")) == 3  # the new session, then one re-apply per resume
    result = json.loads(third.stdout)
    assert set(result) == {"fileId", "mediaUrl", "coverUrl", "uploadId", "attribution"}
    assert result["uploadId"] == state["signer_context"] and result["coverUrl"] is None
    assert result["attribution"] in ("attributed", "duplicate")  # reported done; VOD's push races the report
    video = wait_for_video(chalice_local, alice, result["fileId"])
    assert video["title"] == "long" and md5_of(fetch(video["mediaUrl"])) == md5_of(source)
    assert not list(state_dir.iterdir())

    listed = run("videos", "--json", env=vodup_env(chalice_local, alice, vodlocal.url, state_dir))
    assert [v["fileId"] for v in json.loads(listed.stdout)] == [result["fileId"]]
    listed = run("videos", env=vodup_env(chalice_local, alice, vodlocal.url, state_dir))
    assert listed.stdout.split("\t")[:2] == [result["fileId"], "long"]
    listed = run("videos", "--json", env=vodup_env(chalice_local, token_for("bob"), vodlocal.url, state_dir))
    assert json.loads(listed.stdout) == []


def test_vodup_cancel_aborts_the_interrupted_upload_and_takes_its_intent_back(
    chalice_local: str, vodlocal: Handle, gate: PartGate, token_for: TokenFactory, tmp_path: Path
) -> None:
    (tmp_path / "oops.mp4").write_bytes(os.urandom(6 * MiB))
    alice, state_dir = token_for("alice"), tmp_path / "state"
    through_gate = vodup_env(chalice_local, alice, gate.url, state_dir)
    gate.hold_after(2)
    paused = start("upload", str(tmp_path / "oops.mp4"), "--part-size", "1", "--parallel", "1", env=through_gate)
    gate.wait_held()
    paused.send_signal(signal.SIGINT)
    gate.release()
    _, err = paused.communicate(timeout=60)
    assert paused.returncode == 130 and "vodup cancel" in err, err
    upload_id = stored_parts(state_dir)["signer_context"]
    assert call("GET", f"{chalice_local}/uploads/{upload_id}", token=alice)[1]["status"] == "open"

    env = vodup_env(chalice_local, alice, vodlocal.url, state_dir)
    cancelled = run("cancel", str(tmp_path / "oops.mp4"), "--json", env=env)
    assert cancelled.returncode == 0, cancelled.stderr
    assert json.loads(cancelled.stdout) == {"uploadId": upload_id, "status": "cancelled"}
    assert len(vodlocal.requests("AbortMultipartUpload")) == 1  # COS frees the stored parts
    assert not list(state_dir.iterdir())
    status, upload = call("GET", f"{chalice_local}/uploads/{upload_id}", token=alice)
    assert (status, upload["status"]) == (200, "cancelled")
    refused = call("POST", f"{chalice_local}/uploads/{upload_id}/signature", token=alice)
    assert (refused[0], refused[1]["reason"]) == (409, "cancelled")

    nothing_left = run("cancel", str(tmp_path / "oops.mp4"), env=env)
    assert nothing_left.returncode == 1 and "no interrupted upload" in nothing_left.stderr, nothing_left.stderr
    again = run("cancel", f"--upload-id={upload_id}", env=env)  # idempotent
    assert (again.returncode, again.stdout) == (0, f"cancelled upload {upload_id}\n"), again.stderr
    # One id in 64 begins with "-", which argparse takes for an option unless it is written --upload-id=ID.
    unknown = run("cancel", "--upload-id=-" + "A" * 21, env=env)
    assert unknown.returncode == 1 and len(unknown.stderr.splitlines()) == 1, unknown.stderr
    assert "404" in unknown.stderr, unknown.stderr

    (tmp_path / "done.mp4").write_bytes(b"finished")
    finished = json.loads(run("upload", str(tmp_path / "done.mp4"), "--json", env=env).stdout)
    too_late = run("cancel", f"--upload-id={finished['uploadId']}", env=env)
    assert (too_late.returncode, too_late.stdout) == (1, ""), too_late
    assert len(too_late.stderr.splitlines()) == 1, too_late.stderr
    assert "409" in too_late.stderr and f"already completed with file {finished['fileId']}" in too_late.stderr


@pytest.fixture
def one_intent_per_hour(stage_env: dict[str, str]) -> None:
    with_policy(stage_env, maxIntentsPerHour=1)


def test_a_zero_byte_file_then_bad_input_is_one_line_and_a_non_zero_exit(
    one_intent_per_hour: None, chalice_local: str, vodlocal: Handle, token_for: TokenFactory, tmp_path: Path
) -> None:
    (tmp_path / "empty.mp4").write_bytes(b"")
    alice = token_for("alice")
    env = vodup_env(chalice_local, alice, vodlocal.url, tmp_path / "state")
    empty = run("upload", str(tmp_path / "empty.mp4"), "--json", env=env)
    assert empty.returncode == 0, empty.stderr
    video = wait_for_video(chalice_local, alice, json.loads(empty.stdout)["fileId"])
    assert video["size"] == 0 and fetch(video["mediaUrl"]) == b"" and video["md5"] == md5_of(b"")
    assert len(vodlocal.requests("PutObject")) == 1 and not vodlocal.requests("UploadPart")

    bad_token = vodup_env(chalice_local, "not-a-token", vodlocal.url, tmp_path / "state")
    no_api = {k: v for k, v in env.items() if k != "VODUP_API"}
    cases = {
        # the second intent of the hour, over the policy's one
        "limit reached": (("upload", str(tmp_path / "empty.mp4")), env, 1),
        "401 unauthorized": (("upload", str(tmp_path / "empty.mp4")), bad_token, 1),
        "token was refused": (("videos",), bad_token, 1),
        "does not exist": (("upload", str(tmp_path / "missing.mp4")), env, 1),
        "cover file": (("upload", str(tmp_path / "empty.mp4"), "--cover", str(tmp_path)), env, 1),
        "--api and --token": (("videos",), no_api, 2),
        "invalid int value": (("upload", "x.mp4", "--parallel", "many"), env, 2),
        "part_size must be at least": (("upload", str(tmp_path / "empty.mp4"), "--part-size", "0"), env, 1),
    }
    for expected, (args, case_env, status) in cases.items():
        out = run(*args, env=case_env)
        assert (out.returncode, out.stdout) == (status, ""), (expected, out)
        assert len(out.stderr.splitlines()) == 1 and expected in out.stderr, (expected, out.stderr)
    assert call("GET", f"{chalice_local}/videos", token=alice)[1]["videos"] == [video]

    # `vodup delete`: someone else's video or a bad id is one line; the owner's, deleted (twice: the same answer).
    bobs = vodup_env(chalice_local, token_for("bob"), vodlocal.url, tmp_path / "state")
    for expected, (args, case_env) in {
        "not found, or not yours": (("delete", video["fileId"]), bobs),
        "refusing to use fileId": (("delete", "../videos"), env),
    }.items():
        out = run(*args, env=case_env)
        assert (out.returncode, out.stdout, len(out.stderr.splitlines())) == (1, "", 1), (expected, out)
        assert expected in out.stderr, out.stderr
    assert vodlocal.app.media.get(video["fileId"]) is not None
    for _ in range(2):
        deleted = run("delete", video["fileId"], "--json", env=env)
        assert (deleted.returncode, json.loads(deleted.stdout)) == (0, {"fileId": video["fileId"], "deleted": True})
    assert vodlocal.app.media.get(video["fileId"]) is None
    assert call("GET", f"{chalice_local}/videos", token=alice)[1]["videos"] == []


class HeldHandler:
    """Holds the `nth` call of one of vodlocal's handlers (a method of its UGC or COS service): `before` it runs,
    or `after` it ran (VOD or COS did the work; the answer is not sent yet). The other calls go through. A test
    kills the client while the call is held, then releases it: a server finishing a request whose client died."""

    def __init__(self, service: object, method: str, when: str, nth: int = 1) -> None:
        self.service, self.method, self.when, self.nth = service, method, when, nth
        self.original = getattr(service, method)
        self.calls = 0
        self.held, self.released = threading.Event(), threading.Event()
        self.lock = threading.Lock()
        setattr(service, method, self.handle)

    def handle(self, *args: Any) -> Any:
        with self.lock:
            self.calls += 1
            mine = self.calls == self.nth
        if mine and self.when == "before":
            self.hold()
        result = self.original(*args)
        if mine and self.when == "after":
            self.hold()
        return result

    def hold(self) -> None:
        self.held.set()
        assert self.released.wait(60), "the held call was never released"

    def close(self) -> None:
        self.released.set()
        delattr(self.service, self.method)  # the class's method again


# The phase a client is killed in, and where vodlocal holds that phase's request meanwhile.
PHASES = {
    "apply": ("ugc", "apply", "after", 1),  # VOD opened the session; its answer never reached the client
    "parts": ("cos", "upload_part", "before", 2),  # one part stored, the next in flight
    "complete": ("cos", "_assemble", "before", 1),  # COS joining the parts when the client dies
    "commit": ("ugc", "commit", "after", 1),  # VOD committed (and told our API); the answer was lost
}


@pytest.mark.parametrize("phase", list(PHASES))
def test_kill_9_in_any_phase_then_the_same_command_finishes_the_upload_once(
    phase: str, chalice_local: str, vodlocal: Handle, token_for: TokenFactory, tmp_path: Path
) -> None:
    service, method, when, nth = PHASES[phase]
    source = os.urandom(3 * MiB - 100)
    (tmp_path / "clip.mp4").write_bytes(source)
    alice = token_for("alice")
    env = vodup_env(chalice_local, alice, vodlocal.url, tmp_path / "state")
    args = ("upload", str(tmp_path / "clip.mp4"), "--title", phase, "--part-size", "1", "--parallel", "1", "--json")
    gate = HeldHandler(getattr(vodlocal.app, service), method, when, nth)
    try:
        first = start(*args, env=env)
        assert gate.held.wait(60), f"vodup never reached the {phase}"
        first.kill()
        first.wait(timeout=10)
        if phase == "complete":
            # The resumed run's Complete arrives while the dead run's still joins the parts: it waits for it.
            resumed = start(*args, env=env)
            [upload] = vodlocal.app.store.query("SELECT upload_id FROM uploads")
            locks = vodlocal.app.cos.upload_locks
            wait_until(lambda: locks.users(upload["upload_id"]) == 2, "the second Complete never reached the upload")
            gate.released.set()
            out, err = resumed.communicate(timeout=60)
            rerun = subprocess.CompletedProcess(resumed.args, resumed.returncode, out, err)
        else:
            gate.released.set()
            rerun = run(*args, env=env)
    finally:
        gate.close()
    assert first.returncode == -signal.SIGKILL
    assert rerun.returncode == 0 and "Traceback" not in rerun.stderr, rerun.stderr
    file_id = json.loads(rerun.stdout)["fileId"]
    video = wait_for_video(chalice_local, alice, file_id)
    assert video["title"] == phase and video["md5"] == md5_of(source) == md5_of(fetch(video["mediaUrl"]))
    # Attributed once: one file at VOD, one video for its owner, and nothing answered with a server error.
    assert [row["file_id"] for row in vodlocal.app.store.query("SELECT file_id FROM media")] == [file_id]
    assert [v["fileId"] for v in call("GET", f"{chalice_local}/videos", token=alice)[1]["videos"]] == [file_id]
    assert all(r["status"] < 500 for r in vodlocal.requests()), vodlocal.requests()
    assert not list((tmp_path / "state").glob("*.json"))
    if phase == "complete":  # no part sent twice; the resumed Complete got COS's answer to a completed upload
        assert len(vodlocal.requests("UploadPart")) == 3 and len(vodlocal.requests("InitiateMultipartUpload")) == 1
        assert sorted(r["status"] for r in vodlocal.requests("CompleteMultipartUpload")) == [200, 404]
    if phase == "commit":  # nothing was sent again but the Commit (or nothing at all)
        assert len(vodlocal.requests("CompleteMultipartUpload")) == 1 and len(vodlocal.requests("UploadPart")) == 3


class NotCosProxy(PartGate):
    """The proxy, answering every CompleteMultipartUpload with a JSON error (what vodlocal once sent for a
    crash): no `<Code>` for the COS SDK to read."""

    def forward(self, method: str, target: str, body: bytes, headers: dict[str, str]) -> tuple[int, Any, bytes]:
        if method == "POST" and "uploadId=" in target:
            return 400, [("Content-Type", "application/json")], b'{"error": "internal error"}'
        return super().forward(method, target, body, headers)


def test_a_cos_answer_that_is_not_cos_xml_is_one_line_and_the_same_command_then_finishes(
    chalice_local: str, vodlocal: Handle, token_for: TokenFactory, tmp_path: Path
) -> None:
    source = os.urandom(2 * MiB)
    (tmp_path / "clip.mp4").write_bytes(source)
    alice = token_for("alice")
    args = ("upload", str(tmp_path / "clip.mp4"), "--part-size", "1", "--json")
    proxy = NotCosProxy(vodlocal.url)
    try:
        refused = run(*args, env=vodup_env(chalice_local, alice, proxy.url, tmp_path / "state"))
    finally:
        proxy.close()
    assert (refused.returncode, refused.stdout) == (1, ""), refused.stderr
    [line] = refused.stderr.splitlines()[-1:]
    assert line == "vodup: COS CompleteMultipartUpload (video): 400: an answer that is not COS's XML error"
    assert "Traceback" not in refused.stderr
    finished = run(*args, env=vodup_env(chalice_local, alice, vodlocal.url, tmp_path / "state"))
    assert finished.returncode == 0, finished.stderr
    video = wait_for_video(chalice_local, alice, json.loads(finished.stdout)["fileId"])
    assert video["md5"] == md5_of(source) and len(vodlocal.requests("UploadPart")) == 2
