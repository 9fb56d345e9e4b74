"""vodup distrusts its API and its disk. A fake API (a real HTTP server on 127.0.0.1) answers what a broken or
hostile server could: a huge body, a slow drip, a cursor that repeats, bodies of the wrong shape, an uploadId
made to rewrite the next URL. Each is one line on stderr and a non-zero exit, within the deadline, and nothing
is asked of the API after a bad answer. Then the state directory: private, never written through a link, and a
clear error when it is not a directory."""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest

from tests.conftest import ROOT
from vodlocal.testing import LocalServer, reply_json
from vodup import ApiClient, ApiError, ApiSigner, StateError
from vodup.state import FileState, LocalFile, StateStore, UploadState

MiB = 1 << 20
DEADLINE = 2.0  # short, so the slow servers below cost seconds; the default is 30 s
Answer = Callable[[BaseHTTPRequestHandler], None]


class FakeApi:
    """Answers each request with the function set for its method and path (query left out) and records every
    request line; anything else is a 404 JSON error."""

    def __init__(self) -> None:
        self.routes: dict[tuple[str, str], Answer] = {}
        self.seen: list[tuple[str, str]] = []
        self.stopping = threading.Event()
        api = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def answer(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                api.seen.append((self.command, self.path))
                route = api.routes.get((self.command, self.path.split("?")[0]))
                try:
                    if route is None:
                        reply_json(self, 404, {"error": "not_found", "message": "no such route"})
                    else:
                        route(self)
                except OSError:
                    pass  # the client hung up, as it should on a hostile answer
                self.close_connection = True

            def do_GET(self) -> None:
                self.answer()

            def do_POST(self) -> None:
                self.answer()

            def do_DELETE(self) -> None:
                self.answer()

            def log_message(self, *_: object) -> None:
                pass

        self.server = LocalServer(Handler)
        self.url = self.server.url

    def drip(self, handler: BaseHTTPRequestHandler, data: bytes) -> None:
        """``data`` one byte every second, until the client hangs up (or the test ends)."""
        for byte in data:
            handler.wfile.write(bytes([byte]))
            handler.wfile.flush()
            if self.stopping.wait(1.0):
                return

    def stop(self) -> None:
        self.stopping.set()
        self.server.stop()


@pytest.fixture
def fake_api() -> Iterator[FakeApi]:
    api = FakeApi()
    yield api
    api.stop()


def raw_json(status: int, body: bytes) -> Answer:
    def send(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(status)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)

    return send


def vodup(api: FakeApi, *args: str, **env: str) -> tuple[subprocess.CompletedProcess[str], float]:
    """The command, run from this checkout, against the fake API (which also stands in for VOD, so nothing leaves
    the machine), and how long it took."""
    environment = {
        "PATH": os.environ.get("PATH", ""),
        "PYTHONPATH": str(ROOT),
        "VODUP_API": api.url,
        "VODUP_TOKEN": "secret-token",
        "VODUP_EMULATOR": api.url,
        "VODUP_DEADLINE": str(DEADLINE),
        **env,
    }
    started = time.monotonic()
    done = subprocess.run(  # noqa: S603 - our own command
        [sys.executable, "-m", "vodup", *args],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return done, time.monotonic() - started


def assert_one_line_error(done: subprocess.CompletedProcess[str], expected: str) -> None:
    assert done.returncode == 1, done
    assert len(done.stderr.splitlines()) == 1 and done.stderr.startswith("vodup: "), done.stderr
    assert expected in done.stderr, done.stderr


def test_an_answer_over_the_size_bound_is_not_read(fake_api: FakeApi) -> None:
    # Valid JSON, 9 MiB, with no Content-Length (sent until the connection closes): the bound is on what is read.
    def huge(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(200)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Connection", "close")
        handler.end_headers()
        handler.wfile.write(b'{"videos": [], "nextCursor": null, "pad": "')
        for _ in range(9 * 16):
            handler.wfile.write(b"x" * (MiB // 16))
        handler.wfile.write(b'"}')

    fake_api.routes["GET", "/videos"] = huge
    done, _ = vodup(fake_api, "videos")
    assert_one_line_error(done, f"sent an answer over {8 * MiB} bytes")
    assert done.stdout == ""


@pytest.mark.parametrize("where", ["body", "headers"])
def test_a_slow_drip_fails_within_the_deadline(fake_api: FakeApi, where: str) -> None:
    # One byte a second never lets a read time out; the answer would take minutes.
    head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 200\r\n\r\n"
    body = b'{"videos": [], "nextCursor": null, "pad": "' + b" " * 150 + b'"}'

    def slow(handler: BaseHTTPRequestHandler) -> None:
        if where == "body":
            handler.wfile.write(head)
            fake_api.drip(handler, body)
        else:
            fake_api.drip(handler, head + body)

    fake_api.routes["GET", "/videos"] = slow
    done, took = vodup(fake_api, "videos")
    assert_one_line_error(done, f"gave no complete answer within {DEADLINE:g} s")
    # The interpreter's start is in `took` too; the drip alone would take over 200 s.
    assert took < DEADLINE + 20


def test_a_repeated_cursor_ends_the_listing(fake_api: FakeApi) -> None:
    page = {"videos": [{"fileId": "528589078427353", "title": "t", "size": 1, "mediaUrl": "http://m/f.mp4"}]}
    fake_api.routes["GET", "/videos"] = lambda h: reply_json(h, 200, {**page, "nextCursor": "c2FtZQ"})
    done, _ = vodup(fake_api, "videos")
    assert_one_line_error(done, "repeated an earlier page's cursor")
    assert [path for _, path in fake_api.seen] == ["/videos?limit=100", "/videos?limit=100&cursor=c2FtZQ"]
    assert done.stdout.startswith("528589078427353\tt\t1 B\thttp://m/f.mp4\n")  # the pages before, as they came


def test_the_number_of_pages_is_bounded(fake_api: FakeApi) -> None:
    pages = iter(range(1_000_000))
    fake_api.routes["GET", "/videos"] = lambda h: reply_json(h, 200, {"videos": [], "nextCursor": f"p{next(pages)}"})
    with pytest.raises(ApiError, match="still more after 3 pages"):
        list(ApiClient(fake_api.url, "t", max_pages=3).videos())
    assert len(fake_api.seen) == 3


@pytest.mark.parametrize("bound", [{"deadline": 0}, {"deadline": float("nan")}, {"deadline": float("inf")},
                                   {"max_answer_bytes": 0}, {"max_pages": -1}])  # fmt: skip
def test_a_client_bound_that_is_not_a_positive_finite_number_is_refused(bound: dict[str, float]) -> None:
    # Before, a NaN deadline slipped past `<= 0` and an infinite one past every check: each call then failed
    # with the socket's ValueError or OverflowError, from deep in the exchange, rather than at construction.
    with pytest.raises(ValueError, match="must be positive"):
        ApiClient("http://127.0.0.1:9", "t", **bound)  # type: ignore[arg-type]


QUOTA_REFUSAL = json.dumps(
    {
        "error": "quota_exceeded", "limit": "stored_bytes", "maxStoredBytes": 1500, "bytesStored": 900,
        "bytesReserved": 0, "fileSize": 1000,
        "message": "a file of 1000 bytes does not fit in the quota of 1500 bytes: 900 stored and 0 declared by "
        "open uploads",
    }
).encode()  # fmt: skip


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        (raw_json(201, b"{}"), "unexpected answer: uploadId: Field required"),
        (raw_json(201, b"[1,2]"), "unexpected answer: the body: Input should be a valid dictionary"),
        (raw_json(201, b'{"uploadId": 7, "signature": "c2ln"}'), "uploadId: Input should be a valid string"),
        (raw_json(201, b'{"uploadId": "abc", "signature": ["c2ln"]}'), "signature: Input should be a valid string"),
        (raw_json(201, b"<html>ok</html>"), "answered 201 without JSON"),
        (raw_json(201, b"[" * 100_000), "answered 201 without JSON"),
        (raw_json(500, b'{"error": "boom", "message": "line one\\nline two\\u001b[31m"}'), "500 boom: line one line"),
        (raw_json(429, b'{"error": "too_many", "limit": {"x": 1}, "retryAfter": "soon"}'), "retry after None s"),
        (raw_json(429, QUOTA_REFUSAL), "429 quota_exceeded: quota reached: a file of 1000 bytes does not fit in"),
        (lambda h: h.wfile.write(b"NOT HTTP\r\n\r\n"), "did not answer"),
    ],
    ids=[
        "empty-object",
        "array",
        "int-id",
        "list-signature",
        "html",
        "deep-nesting",
        "multi-line",
        "429-types",
        "429-quota",
        "junk",
    ],
)
def test_a_malformed_answer_to_post_uploads_is_one_line(
    fake_api: FakeApi, tmp_path: Path, answer: Answer, expected: str
) -> None:
    (tmp_path / "clip.mp4").write_bytes(b"x" * 1000)
    fake_api.routes["POST", "/uploads"] = answer
    done, _ = vodup(fake_api, "upload", str(tmp_path / "clip.mp4"), "--state-dir", str(tmp_path / "state"))
    assert_one_line_error(done, expected)


def test_an_upload_id_made_to_rewrite_the_next_url_is_refused_before_any_other_request(
    fake_api: FakeApi, tmp_path: Path
) -> None:
    (tmp_path / "clip.mp4").write_bytes(b"x" * 1000)
    hostile = {"uploadId": "../videos?limit=1#", "signature": "c2lnbmF0dXJl"}
    fake_api.routes["POST", "/uploads"] = lambda h: reply_json(h, 201, hostile)
    done, _ = vodup(fake_api, "upload", str(tmp_path / "clip.mp4"), "--state-dir", str(tmp_path / "state"))
    assert_one_line_error(done, "unexpected answer: uploadId: String should match pattern")
    # Neither VOD nor another route of the API (with the token) was asked anything after that answer.
    assert fake_api.seen == [("POST", "/uploads")]


def test_a_renewal_is_asked_for_the_quoted_checked_id_only(fake_api: FakeApi) -> None:
    signer = ApiSigner(ApiClient(fake_api.url, "t"))
    with pytest.raises(ApiError, match=re.escape("refusing to use uploadId '../videos?limit=1#'")):
        signer.resume("../videos?limit=1#")
    fake_api.routes["POST", "/uploads/TsexyznXASq48mK-vMik2A/signature"] = lambda h: reply_json(
        h, 200, {"uploadId": "another-upload", "signature": "c2ln"}
    )
    signer.resume("TsexyznXASq48mK-vMik2A")
    with pytest.raises(ApiError, match="answered a signature for another upload"):
        signer()
    assert fake_api.seen == [("POST", "/uploads/TsexyznXASq48mK-vMik2A/signature")]


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        ({"uploadId": "another-upload", "status": "cancelled"}, "answered for another upload"),
        ({"uploadId": "TsexyznXASq48mK-vMik2A", "status": "open"}, "unexpected answer: status"),
    ],
    ids=["another-upload", "not-cancelled"],
)
def test_a_cancel_believes_only_an_answer_that_its_upload_is_cancelled(
    fake_api: FakeApi, answer: dict[str, str], expected: str
) -> None:
    fake_api.routes["DELETE", "/uploads/TsexyznXASq48mK-vMik2A"] = lambda h: reply_json(h, 200, answer)
    done, _ = vodup(fake_api, "cancel", "--upload-id", "TsexyznXASq48mK-vMik2A")
    assert_one_line_error(done, expected)
    hostile, _ = vodup(fake_api, "cancel", "--upload-id", "../videos?limit=1#")
    assert_one_line_error(hostile, "refusing to use uploadId")
    assert fake_api.seen == [("DELETE", "/uploads/TsexyznXASq48mK-vMik2A")]


UPLOAD_ID = "TsexyznXASq48mK-vMik2A"
VOD = "http://vod2.qcloud.com/v3/index.php"  # what the command asks its emulator (the fake) for, as a proxy
GOOD_APPLY = {
    "vodSessionKey": "session-key",
    "storageBucket": "bucket",
    "storageAppId": 1500000001,
    "storageRegionV5": "ap-guangzhou",
    "timestamp": 1795538487,
    "tempCertificate": {"secretId": "id", "secretKey": "key", "token": "token", "expiredTime": 1795539387},
    "video": {"storagePath": "/video/clip.mp4"},
}


@pytest.mark.parametrize(
    ("applied", "expected"),
    [
        ({"vodSessionKey": "session-key"}, "storageBucket: Field required"),
        ({**GOOD_APPLY, "storageRegionV5": "evil.example/#"}, "storageRegionV5: String should match pattern"),
        ({**GOOD_APPLY, "storageAppId": "1500000001"}, "storageAppId: Input should be a valid integer"),
        ({**GOOD_APPLY, "video": None}, "no storage path for the video"),
    ],
    ids=["missing", "region-into-the-host", "string-app-id", "no-video-path"],
)
def test_a_malformed_vod_answer_is_one_line_and_no_byte_is_sent(
    fake_api: FakeApi, tmp_path: Path, applied: dict[str, object], expected: str
) -> None:
    (tmp_path / "clip.mp4").write_bytes(b"x" * 1000)
    fake_api.routes["POST", "/uploads"] = lambda h: reply_json(h, 201, {"uploadId": UPLOAD_ID, "signature": "c2ln"})
    fake_api.routes["POST", f"/uploads/{UPLOAD_ID}/signature"] = lambda h: reply_json(h, 200, {"signature": "c2ln"})

    def vod(handler: BaseHTTPRequestHandler) -> None:
        prepare = handler.path.endswith("Action=PrepareUploadUGC")
        reply_json(handler, 200, {"code": 0, "data": {"cosRegionList": []} if prepare else applied})

    fake_api.routes["POST", VOD] = vod
    done, _ = vodup(fake_api, "upload", str(tmp_path / "clip.mp4"), "--state-dir", str(tmp_path / "state"))
    assert_one_line_error(done, f"VOD ApplyUploadUGC failed with code -1: unexpected answer: {expected}")
    assert [path for _, path in fake_api.seen][-1] == f"{VOD}?Action=ApplyUploadUGC"  # nothing went to COS


@pytest.mark.parametrize("layout", ["file", "under-a-file"])
def test_a_state_dir_that_is_not_a_directory_is_one_line_before_any_request(
    fake_api: FakeApi, tmp_path: Path, layout: str
) -> None:
    (tmp_path / "clip.mp4").write_bytes(b"x" * 1000)
    (tmp_path / "plain-file").write_text("not a directory")
    state_dir = tmp_path / "plain-file" / ("" if layout == "file" else "vodup")
    done, _ = vodup(fake_api, "upload", str(tmp_path / "clip.mp4"), VODUP_STATE_DIR=str(state_dir))
    expected = "is not a directory" if layout == "file" else "cannot be created: Not a directory"
    assert_one_line_error(done, f"the state directory {str(state_dir).rstrip('/')!r} {expected}")
    assert fake_api.seen == []


def upload_state(tmp_path: Path) -> UploadState:
    (tmp_path / "clip.mp4").write_bytes(b"x" * 1000)
    files = {"video": LocalFile.of(tmp_path / "clip.mp4")}
    return UploadState(files, "session-key-secret", "TsexyznXASq48mK-vMik2A", transfers={"video": FileState()})


def test_a_state_file_naming_a_hostile_upload_id_is_not_resumed(fake_api: FakeApi, tmp_path: Path) -> None:
    state = upload_state(tmp_path)
    state.signer_context = "../videos?limit=1#"  # the state file edited, or planted
    store = StateStore(tmp_path / "state")
    store.open()
    store.save(state)
    fake_api.routes["POST", "/uploads"] = raw_json(201, b"{}")
    done, _ = vodup(fake_api, "upload", str(tmp_path / "clip.mp4"), "--state-dir", str(tmp_path / "state"))
    assert_one_line_error(done, "unexpected answer: uploadId: Field required")
    # The upload started over, on a new intent; the stored id never went into a URL, and the state is gone.
    assert fake_api.seen == [("POST", "/uploads")]
    assert not list((tmp_path / "state").iterdir())


def test_cancelling_a_state_file_naming_a_hostile_upload_id_asks_the_api_nothing(
    fake_api: FakeApi, tmp_path: Path
) -> None:
    state = upload_state(tmp_path)
    state.signer_context = "../videos?limit=1#"
    store = StateStore(tmp_path / "state")
    store.open()
    store.save(state)
    done, _ = vodup(fake_api, "cancel", str(tmp_path / "clip.mp4"), "--state-dir", str(tmp_path / "state"))
    assert done.returncode == 0, done.stderr
    assert done.stdout == "forgot the interrupted upload of clip.mp4 (it was signed for no upload of the API)\n"
    assert fake_api.seen == [] and not list((tmp_path / "state").iterdir())


def test_the_state_is_private_and_read_back_whole(tmp_path: Path) -> None:
    directory = tmp_path / "state"
    directory.mkdir(mode=0o755)  # as an older vodup left it
    directory.chmod(0o755)
    store, state = StateStore(directory), upload_state(tmp_path)
    store.open()
    store.save(state)
    [written] = directory.iterdir()
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    assert stat.S_IMODE(written.stat().st_mode) == 0o600
    assert store.load(state.files) == state

    # A state file of the wrong shape (edited, truncated, from elsewhere) is not resumed, and is dropped.
    written.write_text(json.dumps({**state.to_json(), "transfers": {"video": {"parts": [1]}}}))
    assert store.load(state.files) is None and not written.exists()


def test_the_state_is_never_written_through_a_planted_link(tmp_path: Path) -> None:
    directory, victim = tmp_path / "state", tmp_path / "victim"
    victim.write_text("precious")
    store, state = StateStore(directory), upload_state(tmp_path)
    store.open()
    target = store.path_for(state.files)
    # A link where the temporary file used to be (a fixed name), and one in place of the state file itself.
    target.with_suffix(".tmp").symlink_to(victim)
    target.symlink_to(victim)
    assert store.load(state.files) is None  # the link is not read through (and is removed)
    target.symlink_to(victim)
    store.save(state)
    assert victim.read_text() == "precious"
    assert not target.is_symlink() and stat.S_IMODE(target.stat().st_mode) == 0o600
    assert store.load(state.files) == state
    assert sorted(p.name for p in directory.iterdir()) == sorted([target.name, target.with_suffix(".tmp").name])


def test_a_full_disk_is_a_state_error_not_a_traceback(tmp_path: Path) -> None:
    store, state = StateStore(tmp_path / "state"), upload_state(tmp_path)
    store.open()
    target = store.path_for(state.files)
    target.mkdir()  # something in the state file's place that a rename cannot replace
    with pytest.raises(StateError, match="the resume state cannot be written"):
        store.save(state)
    assert [p.name for p in (tmp_path / "state").iterdir()] == [target.name]  # no temporary file left behind
