"""`make dev` itself, run through make in its own process group (as a terminal runs it), on free ports so that a
developer's own `make dev` can stay up: Web SDK uploads with no API restart, the API's listen backlog, no secret
on any command line, and little CPU when idle."""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import termios
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from devstack.run import RESTART_MESSAGE, local_token
from devstack.token import local_stage_env
from tests.conftest import ROOT
from vodlocal.testing import run_harness

NODE = shutil.which("node")
MiB = 1 << 20
COMPONENTS = {
    "api": "-m devstack.api",
    "vodlocal": "-m vodlocal",
    "dynamodb": "-m devstack.dynamodb",
    "events": "-m devstack.events",
}


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for probe in sockets:
            probe.bind(("127.0.0.1", 0))
        return [int(probe.getsockname()[1]) for probe in sockets]
    finally:
        for probe in sockets:
            probe.close()


def listening(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


def _stat(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return raw[raw.rindex(")") + 2 :].split()  # fields from the 3rd (state) on


def alive(pid: int, cmdline: str) -> bool:
    """Running (not a zombie) and still the same program, so a recycled pid does not count."""
    fields = _stat(pid)
    return fields is not None and fields[0] != "Z" and cmdline_of(pid) == cmdline


def cmdline_of(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


class MakeDev:
    """`make dev` in its own session and process group; output to `log` (or to a pseudo-terminal)."""

    def __init__(self, workdir: Path, terminal: bool = False) -> None:
        ports = free_ports(6)
        self.api_port, self.vod_port, self.dynamodb_port, self.web_port, self.vod_tls_port, self.events_port = ports
        self.workdir = workdir
        self.log_path = workdir / "make-dev.log"
        self.terminal = terminal
        self.env = {
            **os.environ,
            "DEVSTACK_API_PORT": str(self.api_port),
            "DEVSTACK_VOD_PORT": str(self.vod_port),
            "DEVSTACK_DYNAMODB_PORT": str(self.dynamodb_port),
            "DEVSTACK_WEB_PORT": str(self.web_port),
            "DEVSTACK_VOD_TLS_PORT": str(self.vod_tls_port),
            "DEVSTACK_EVENTS_PORT": str(self.events_port),
            "DEVSTACK_VODLOCAL_DIR": str(workdir / "vodlocal"),
            "DEVSTACK_TLS_DIR": str(workdir / "tls"),
        }
        self.process: subprocess.Popen[bytes] | None = None
        self.seen: dict[int, str] = {}  # every process of the stack seen while it ran: pid -> command line
        self._master: int | None = None

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    @property
    def ports(self) -> list[int]:
        return [self.api_port, self.vod_port, self.dynamodb_port, self.web_port, self.vod_tls_port, self.events_port]

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def start(self) -> MakeDev:
        if self.terminal:  # a pseudo-terminal as the controlling terminal: Ctrl-C is a real terminal's Ctrl-C
            self._master, slave = os.openpty()
            self.process = subprocess.Popen(
                ["make", "dev"],  # noqa: S607
                cwd=ROOT,
                env=self.env,
                stdin=slave,
                stdout=slave,
                stderr=slave,
                start_new_session=True,
                preexec_fn=lambda: fcntl.ioctl(0, termios.TIOCSCTTY, 0),
            )
            os.close(slave)
            threading.Thread(target=self._copy_terminal, daemon=True).start()
        else:
            with self.log_path.open("wb") as log:
                self.process = subprocess.Popen(
                    ["make", "dev"],  # noqa: S607
                    cwd=ROOT,
                    env=self.env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
        return self

    def _copy_terminal(self) -> None:
        assert self._master is not None
        with self.log_path.open("ab") as log:
            while True:
                try:
                    chunk = os.read(self._master, 65536)
                except OSError:
                    return
                if not chunk:
                    return
                log.write(chunk)
                log.flush()

    def ctrl_c(self) -> None:
        assert self._master is not None
        os.write(self._master, b"\x03")

    def wait_until(self, text: str, timeout: float = 120) -> None:
        assert self.process is not None
        deadline = time.monotonic() + timeout
        while text not in self.log():
            self.record()
            if self.process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"make dev never printed {text!r} (exit {self.process.returncode}):\n{self.log()[-3000:]}")
            time.sleep(0.1)
        self.record()

    def wait_up(self) -> MakeDev:
        self.wait_until("Local stack is up")
        return self

    def descendants(self) -> dict[int, str]:
        assert self.process is not None
        children: dict[int, list[int]] = {}
        for entry in os.listdir("/proc"):
            if entry.isdigit() and (fields := _stat(int(entry))) is not None:
                children.setdefault(int(fields[1]), []).append(int(entry))
        found, todo = {}, [self.process.pid]
        while todo:
            pid = todo.pop()
            found[pid] = cmdline_of(pid)
            todo.extend(children.get(pid, []))
        return found

    def record(self) -> None:
        self.seen.update({pid: cmd for pid, cmd in self.descendants().items() if cmd})

    def pid_of(self, component: str) -> int:
        pids = [pid for pid, cmd in self.descendants().items() if COMPONENTS[component] in cmd]
        assert len(pids) == 1, (component, self.descendants())
        return pids[0]

    def run_pid(self) -> int:
        pids = [pid for pid, cmd in self.descendants().items() if "-m devstack.run" in cmd]
        assert len(pids) == 1, self.descendants()
        return pids[0]

    def signal_group(self, signum: int) -> None:
        assert self.process is not None
        os.killpg(self.process.pid, signum)

    def wait(self, timeout: float = 30) -> int:
        assert self.process is not None
        return self.process.wait(timeout=timeout)

    def survivors(self) -> dict[int, str]:
        """Processes of this stack still running: seen while it ran, or anything serving one of its ports."""
        ours = {pid: cmd for pid, cmd in self.seen.items() if alive(pid, cmd)}
        flags = [f" --port {port}" for port in self.ports]
        for entry in os.listdir("/proc"):
            if entry.isdigit() and any(flag in f" {cmdline_of(int(entry))} " for flag in flags):
                cmd = cmdline_of(int(entry))
                if alive(int(entry), cmd):
                    ours[int(entry)] = cmd
        return ours

    def cleanup(self) -> None:
        """Whatever the test did: nothing of this stack keeps running after it."""
        if self.process is not None and self.process.poll() is None:
            self.signal_group(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                pass
        for pid, cmd in self.survivors().items():
            if cmd:
                os.kill(pid, signal.SIGKILL)
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)
        if self._master is not None:
            os.close(self._master)
            self._master = None


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MakeDev]:
    dev = MakeDev(tmp_path_factory.mktemp("make-dev"))
    try:
        yield dev.start().wait_up()
    finally:
        dev.cleanup()


def test_the_stack_is_dynamodb_vodlocal_and_the_api(stack: MakeDev) -> None:
    for component in COMPONENTS:
        stack.pid_of(component)
    assert all(listening(port) for port in stack.ports)
    with urllib.request.urlopen(f"{stack.api}/health", timeout=5) as response:
        assert json.load(response) == {"status": "ok"}


def test_the_upload_page_is_served_and_allowed_to_call_the_api(stack: MakeDev) -> None:
    web = f"http://127.0.0.1:{stack.web_port}"
    with urllib.request.urlopen(f"{web}/", timeout=5) as response:
        assert b'data-testid="upload"' in response.read()
    with urllib.request.urlopen(f"{web}/config.json", timeout=5) as response:
        assert json.load(response)["api"] == stack.api
    with urllib.request.urlopen(f"{web}/vendor/vod-js-sdk-v6.js", timeout=5) as response:
        assert response.status == 200
    preflight = urllib.request.Request(
        f"{stack.api}/uploads",
        method="OPTIONS",
        headers={
            "Origin": web,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization",
        },
    )
    with urllib.request.urlopen(preflight, timeout=5) as response:
        assert response.headers["Access-Control-Allow-Origin"] == web
    sign_in = urllib.request.Request(f"{web}/local/sign-in", data=b'{"user": "carol"}', method="POST")
    with urllib.request.urlopen(sign_in, timeout=5) as response:
        token = json.load(response)["token"]
    with urllib.request.urlopen(
        urllib.request.Request(f"{stack.api}/videos", headers={"Authorization": f"Bearer {token}"}), timeout=5
    ) as response:
        assert json.load(response) == {"videos": [], "nextCursor": None}


def test_no_secret_on_any_command_line(stack: MakeDev) -> None:
    env = local_stage_env()
    secrets = [env[name] for name in ("VOD_SECRET_KEY", "VOD_SIGN_KEY", "VOD_CALLBACK_TOKEN", "CONTEXT_TAG_KEY")]
    vodlocal = stack.pid_of("vodlocal")
    command_lines = {pid: Path(f"/proc/{pid}/cmdline").read_bytes() for pid in stack.descendants()}
    assert vodlocal in command_lines
    for pid, cmdline in command_lines.items():
        assert not [secret for secret in secrets if secret.encode() in cmdline], (pid, cmdline)
    # ... and vodlocal has them all the same: it verifies the API's signatures and signs its callbacks
    # (the Web SDK uploads below need both).
    vodlocal_env = Path(f"/proc/{vodlocal}/environ").read_bytes().split(b"\0")
    assert f"VODLOCAL_SIGN_KEY={env['VOD_SIGN_KEY']}".encode() in vodlocal_env


def test_the_api_listens_with_a_deep_backlog_and_takes_a_64_way_burst(stack: MakeDev) -> None:
    ss = shutil.which("ss")
    if ss is not None:  # a listening socket's Send-Q is its backlog
        out = subprocess.run(  # noqa: S603
            [ss, "-Hltn", f"sport = :{stack.api_port}"], capture_output=True, text=True, check=True
        ).stdout.split()
        assert int(out[2]) >= 128, out  # socketserver's default: 5

    def health(_: int) -> int | str:
        try:
            with urllib.request.urlopen(f"{stack.api}/health", timeout=30) as response:
                return int(response.status)
        except OSError as exc:  # e.g. ConnectionResetError when the accept queue overflows
            return repr(exc)

    for _ in range(3):
        with ThreadPoolExecutor(64) as pool:
            statuses = list(pool.map(health, range(64)))
        assert statuses == [200] * 64


def make(target: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """`make -s <target>` as a user runs it beside the stack `env` points at."""
    return subprocess.run(  # noqa: S603 - a make target of this repository
        ["make", "-s", target],  # noqa: S607
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_make_sweep_sweeps_the_stack_on_the_same_ports_and_fails_without_one(stack: MakeDev) -> None:
    swept = make("sweep", stack.env)
    assert swept.returncode == 0, swept.stdout[-3000:] + swept.stderr[-3000:]
    report = json.loads(swept.stdout.strip().splitlines()[-1])
    assert (report["failed"], report["finished"]) == (0, True), report
    # With no DynamoDB on its port, it fails and names the endpoint it tried (not some other stack's).
    nowhere = {**stack.env, "DEVSTACK_DYNAMODB_PORT": str(free_ports(1)[0])}
    failed = make("sweep", nowhere)
    assert failed.returncode != 0, failed.stdout[-3000:]
    assert f"failed against DynamoDB http://127.0.0.1:{nowhere['DEVSTACK_DYNAMODB_PORT']}" in failed.stderr


@pytest.mark.skipif(NODE is None, reason="node is not installed (CI installs it)")
def web_sdk_uploads(stack: MakeDev, tmp_path: Path, count: int) -> None:
    """What `make demo` does, `count` times in a row; each upload must end up in alice's videos."""
    assert NODE is not None
    token = local_token("alice")
    clip = tmp_path / "clip.mp4"
    file_ids: list[str] = []
    for n in range(count):
        clip.write_bytes(os.urandom(3 * MiB))
        out: dict[str, Any] = run_harness(
            NODE, f"http://127.0.0.1:{stack.vod_port}", f"{stack.api}/", token, FILE=clip, CHUNK_SIZE=MiB
        )
        assert out.get("ok"), (n, out, stack.log()[-3000:])
        file_ids.append(out["result"]["fileId"])
    deadline = time.monotonic() + 30
    listed: set[str] = set()
    while time.monotonic() < deadline and not set(file_ids) <= listed:
        request = urllib.request.Request(f"{stack.api}/videos?limit=100", headers={"Authorization": f"Bearer {token}"})
        with urllib.request.urlopen(request, timeout=10) as response:
            listed = {video["fileId"] for video in json.load(response)["videos"]}
        time.sleep(0.2)
    assert set(file_ids) <= listed, sorted(set(file_ids) - listed)


def test_ten_web_sdk_uploads_are_all_attributed_with_no_api_restart(stack: MakeDev, tmp_path: Path) -> None:
    api_pid = stack.pid_of("api")
    web_sdk_uploads(stack, tmp_path, 10)
    assert stack.pid_of("api") == api_pid
    assert len(re.findall(RESTART_MESSAGE, stack.log())) == 0


@pytest.mark.skipif(NODE is None, reason="node is not installed (CI installs it)")
def test_make_demo_shows_its_upload_and_says_in_one_line_why_alice_cannot_upload(stack: MakeDev) -> None:
    shown = make("demo", stack.env)
    assert shown.returncode == 0, shown.stdout[-3000:] + shown.stderr[-3000:]
    uploaded = re.search(r"uploaded: fileId (\d+)", shown.stdout)
    assert uploaded is not None, shown.stdout
    assert json.loads(shown.stdout.split("the uploaded video:\n", 1)[1])["fileId"] == uploaded[1]
    # alice's open slots all taken (the last test of this stack to upload as alice): the demo's upload is
    # refused, and it says why in words rather than printing the harness's result.
    token = local_token("alice")
    for _ in range(6):
        request = urllib.request.Request(
            f"{stack.api}/uploads",
            data=b"{}",
            method="POST",
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        )
        try:
            urllib.request.urlopen(request, timeout=10).close()
        except urllib.error.HTTPError as refused:
            assert refused.code == 429
            break
    else:
        pytest.fail("alice was never refused a new intent")
    failed = make("demo", stack.env)
    assert failed.returncode != 0
    assert "upload failed: signing service uploads: HTTP 429" in failed.stderr, failed.stderr
    assert "6 h upload window" in failed.stderr and "{'ok'" not in failed.stderr, failed.stderr


def test_make_dev_event_mode_pull_attributes_web_sdk_uploads_through_the_consumer(tmp_path: Path) -> None:
    dev = MakeDev(tmp_path)
    dev.env["EVENT_MODE"] = "pull"
    try:
        dev.start().wait_up()
        assert "queues events; the PULL consumer" in dev.log()
        consumer = [pid for pid, cmd in dev.descendants().items() if "-m devstack.pull" in cmd]
        assert len(consumer) == 1
        web_sdk_uploads(dev, tmp_path, 3)
        assert "POST /vod/events" not in dev.log()  # attributed, and never pushed: pulled
        dev.signal_group(signal.SIGTERM)
        dev.wait()
        assert dev.survivors() == {}
    finally:
        dev.cleanup()


def test_an_outbox_row_reaches_the_events_sink_and_make_devs_output(stack: MakeDev) -> None:
    from devstack.table import local_client
    from devstack.token import local_stage_env
    from tests.test_events_delivery import envelope, outbox_put, wait_for_envelope

    table = local_stage_env()["TABLE_NAME"]
    put = outbox_put(table, "upload.attributed", "alice", "up-make-dev", "5285890800000042", title="clip")
    local_client(f"http://127.0.0.1:{stack.dynamodb_port}").transact_write_items(TransactItems=[put])
    sink = f"http://127.0.0.1:{stack.events_port}"
    assert wait_for_envelope(sink, envelope(put)).count(envelope(put)) == 1
    stack.wait_until(f"upload.attributed {envelope(put)['id']} owner=alice uploadId=up-make-dev")
