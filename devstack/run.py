"""`make dev`: DynamoDB (8002), vodlocal (8001, and HTTPS on 8004), the API (8000, the `local` stage), the
reference upload page (8003) and the domain events' sink (8005, fed from the table's stream by
devstack/events.py as the outbox pipe feeds the bus), wired together.

Ports are fixed so that the README's curl examples work as written; `DEVSTACK_API_PORT`, `DEVSTACK_VOD_PORT`,
`DEVSTACK_DYNAMODB_PORT`, `DEVSTACK_WEB_PORT`, `DEVSTACK_VOD_TLS_PORT`, `DEVSTACK_EVENTS_PORT`,
`DEVSTACK_VODLOCAL_DIR` and `DEVSTACK_TLS_DIR` move a second stack (the tests) out of the way of one.

The API is `devstack.api` (the app served as `chalice local --no-autoreload` serves it). This process
restarts it when the app's code or config changes, and only then: it polls the mtimes of `WATCHED`, a few
dozen files, once a second. Data writes (vodlocal's state, the local key, anything under `.local/`) never
restart it.

Stopping: the first SIGINT or SIGTERM starts an orderly shutdown that later signals do not interrupt (make
forwards a SIGTERM sent to its group, so this process often gets two at once). Every child is sent SIGTERM,
waited for, and killed after `STOP_TIMEOUT`. A signal at least `FORCE_AFTER` seconds after the first (a user
pressing Ctrl-C again) forces: the children are killed at once, and still waited for.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import Any

from devstack.health import NotHealthy, wait_until_healthy
from devstack.table import ensure_table, local_client
from devstack.token import local_signing_key, local_stage_env
from devstack.web import LocalPage, WebServer

ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"


def _port(name: str, default: int) -> int:
    value = os.environ.get(name, "")
    return int(value) if value else default


API_PORT = _port("DEVSTACK_API_PORT", 8000)
VOD_PORT = _port("DEVSTACK_VOD_PORT", 8001)
DYNAMODB_PORT = _port("DEVSTACK_DYNAMODB_PORT", 8002)
WEB_PORT = _port("DEVSTACK_WEB_PORT", 8003)
# vodlocal's HTTPS, for a browser sent there under the SDK's real host names (`make browse`, devstack/browser.py).
VOD_TLS_PORT = _port("DEVSTACK_VOD_TLS_PORT", 8004)
EVENTS_PORT = _port("DEVSTACK_EVENTS_PORT", 8005)
VODLOCAL_DIR = Path(os.environ.get("DEVSTACK_VODLOCAL_DIR") or ROOT / ".local" / "vodlocal")
# The generated CA and certificate: kept, so that a browser set up with their hash stays set up.
TLS_DIR = Path(os.environ.get("DEVSTACK_TLS_DIR") or ROOT / ".local" / "tls")
STAGE = "local"
# Where the events reader is in the table's stream; per sink port, so that two stacks keep their own.
EVENTS_CHECKPOINT = ROOT / ".local" / "events" / f"checkpoint-{EVENTS_PORT}.json"
# `make dev EVENT_MODE=pull`: vodlocal queues VOD's events and the PULL consumer (devstack/pull.py) applies them.
EVENT_MODE = os.environ.get("EVENT_MODE") or "push"

# What the API's code and config are, relative to the project: a change to any of these restarts it.
WATCHED = ("app.py", "chalicelib/**/*", ".chalice/*.json", "requirements.txt")
WATCH_INTERVAL = 1.0
STOP_TIMEOUT = 5.0
FORCE_AFTER = 1.0
RESTART_MESSAGE = "restarting the API"
# SIGHUP too: closing the terminal must not leave the children (each in its own session) running.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class Stopped(Exception):
    """A stop was requested while the stack was starting."""


class Shutdown:
    """SIGINT/SIGTERM handler that never raises: the first signal requests a stop, a later one (at least
    FORCE_AFTER s later, so not make's forwarded copy) forces it. The main loop polls the flags."""

    def __init__(self) -> None:
        self.requested = False
        self.forced = False
        self._first: float | None = None

    def install(self) -> dict[int, Any]:
        # Explicitly: a job started in the background inherits SIGINT ignored, and Ctrl-C must still stop it.
        return {signum: signal.signal(signum, self) for signum in STOP_SIGNALS}

    def __call__(self, _signum: int, _frame: FrameType | None) -> None:
        # No I/O here: a handler runs between two bytecodes of the main thread, which may be mid-print.
        now = time.monotonic()
        if self._first is None:
            self._first = now
            self.requested = True
        elif now - self._first >= FORCE_AFTER:
            self.forced = True

    def check(self) -> None:
        if self.requested:
            raise Stopped


class CodeWatcher:
    """mtime/size/inode snapshot of the files matching `patterns` under `root` (`__pycache__` excluded)."""

    def __init__(self, root: Path, patterns: tuple[str, ...] = WATCHED) -> None:
        self.root = root
        self.patterns = patterns
        self._last = self.snapshot()

    def snapshot(self) -> dict[str, tuple[int, int, int]]:
        files: dict[str, tuple[int, int, int]] = {}
        for pattern in self.patterns:
            for path in self.root.glob(pattern):
                if "__pycache__" in path.parts or path.suffix == ".pyc":
                    continue
                try:
                    info = path.stat()
                except OSError:
                    continue  # deleted in between: it shows up as a change next time
                if not stat.S_ISDIR(info.st_mode):
                    files[path.relative_to(self.root).as_posix()] = (info.st_mtime_ns, info.st_size, info.st_ino)
        return files

    def changes(self) -> list[str]:
        """Files added, removed or modified since the last call."""
        current = self.snapshot()
        changed = sorted(
            name for name in current.keys() | self._last.keys() if current.get(name) != self._last.get(name)
        )
        self._last = current
        return changed


def _port_free(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex((HOST, port)) != 0


def _wait_for(url: str, process: subprocess.Popen[bytes], shutdown: Shutdown) -> None:
    try:
        wait_until_healthy(url, process, interrupt=shutdown.check)
    except NotHealthy as error:
        raise SystemExit(str(error)) from None  # make dev ends with the reason, not a traceback


def _spawn(args: list[str], env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    # Own session each: a terminal's Ctrl-C and make's forwarded SIGTERM reach only this process, which then
    # stops the children itself and waits for them, instead of each dying on its own.
    return subprocess.Popen(args, cwd=ROOT, env=env, start_new_session=True)  # noqa: S603 - our own commands


def _stop(processes: list[subprocess.Popen[bytes]], shutdown: Shutdown | None = None) -> None:
    """SIGTERM each, wait for all; SIGKILL whatever is left after STOP_TIMEOUT (at once when forced)."""
    live = [process for process in processes if process.poll() is None]
    for process in live:
        _signal(process, signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT
    killed = False
    while live:
        live = [process for process in live if process.poll() is None]
        if live and not killed and (time.monotonic() > deadline or (shutdown is not None and shutdown.forced)):
            for process in live:
                _signal(process, signal.SIGKILL)
            killed = True
        time.sleep(0.05)


def _signal(process: subprocess.Popen[bytes], signum: int) -> None:
    if process.poll() is None:  # not reaped yet: its pid (and process group) is still ours
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signum)


class ApiServer:
    """`devstack.api` as a child process; `poll()` restarts it when a watched file of `project_dir` changes."""

    def __init__(
        self,
        project_dir: Path = ROOT,
        stage: str = STAGE,
        port: int = API_PORT,
        overrides: dict[str, str] | None = None,
        watch: bool = True,
    ) -> None:
        self.project_dir, self.stage, self.port = project_dir, stage, port
        self.overrides = overrides or {}
        self.watcher = CodeWatcher(project_dir) if watch else None
        self.process: subprocess.Popen[bytes] | None = None
        self.restarts = 0
        self._next_check = time.monotonic() + WATCH_INTERVAL
        self._reported_exit = False

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def command(self) -> list[str]:
        args = [sys.executable, "-m", "devstack.api", "--project-dir", str(self.project_dir), "--stage", self.stage,
                "--host", HOST, "--port", str(self.port)]  # fmt: skip
        for name, value in self.overrides.items():
            args += ["--override", f"{name}={value}"]
        return args

    def start(self, shutdown: Shutdown) -> None:
        self.process = _spawn(self.command())
        self._reported_exit = False
        _wait_for(f"{self.url}/health", self.process, shutdown)

    def stop(self, shutdown: Shutdown | None = None) -> None:
        if self.process is not None:
            _stop([self.process], shutdown)

    def poll(self, shutdown: Shutdown) -> None:
        """Call often (the main loop does, every 0.2 s): checks the watched files every WATCH_INTERVAL s."""
        if self.process is not None and self.process.poll() is not None and not self._reported_exit:
            self._reported_exit = True
            self._say(f"the API exited with {self.process.returncode}; it restarts when its code changes")
        if self.watcher is None or time.monotonic() < self._next_check:
            return
        self._next_check = time.monotonic() + WATCH_INTERVAL
        changed = self.watcher.changes()
        if not changed:
            return
        time.sleep(0.3)  # an editor or a `git checkout` writes several files: take them in one restart
        changed = sorted({*changed, *self.watcher.changes()})
        shown = ", ".join(changed[:3]) + (f" and {len(changed) - 3} more" if len(changed) > 3 else "")
        self._say(f"{shown} changed: {RESTART_MESSAGE}")
        self.restarts += 1
        self.stop(shutdown)
        try:
            self.start(shutdown)
        except SystemExit as exc:
            self._reported_exit = True
            self._say(f"the API did not start ({exc}); it restarts when its code changes")
            return
        self._say(f"API restarted (pid {self.process.pid if self.process else '?'})")

    def _say(self, message: str) -> None:
        _say(f"devstack: {message}")


def _say(message: str) -> None:
    with contextlib.suppress(OSError):  # the terminal may be gone (SIGHUP): stopping the children matters more
        print(message, flush=True)


def vodlocal_command() -> list[str]:
    """vodlocal's command line: no secret on it (it is visible in ps); they go in `vodlocal_environment`."""
    return [
        sys.executable, "-m", "vodlocal",
        "--host", HOST, "--port", str(VOD_PORT),
        "--data-dir", str(VODLOCAL_DIR),
        "--tls-port", str(VOD_TLS_PORT), "--tls-dir", str(TLS_DIR),
    ]  # fmt: skip


def vodlocal_environment(env: dict[str, str]) -> dict[str, str]:
    """The stage's key pair and SignKey, and the callback URL (its token is a secret too), for vodlocal."""
    return {
        **os.environ,
        "VODLOCAL_SECRETS": f"{env['VOD_SECRET_ID']}:{env['VOD_SECRET_KEY']}",
        "VODLOCAL_SIGN_KEY": env["VOD_SIGN_KEY"],
        "VODLOCAL_CALLBACK_URL": f"http://{HOST}:{API_PORT}/vod/events/{env['VOD_CALLBACK_TOKEN']}",
        "VODLOCAL_MODE": EVENT_MODE.upper(),
        # Unlike VOD, which retries only a timeout: the dev loop restarts the API on every code change, and
        # an upload made meanwhile must not lose its event to a refused connection.
        "VODLOCAL_PUSH_RETRY_ON": "network",
    }


def events_command(table: str) -> list[str]:
    """The events reader and its sink (devstack/events.py), on this stack's DynamoDB and events port."""
    return [
        sys.executable, "-m", "devstack.events",
        "--port", str(EVENTS_PORT),
        "--dynamodb-endpoint", f"http://{HOST}:{DYNAMODB_PORT}",
        "--table", table, "--stage", STAGE,
        "--checkpoint", str(EVENTS_CHECKPOINT),
    ]  # fmt: skip


def configure_events(env: dict[str, str]) -> None:
    """Set vodlocal's event config through its API, as the deploy sets VOD's: the mode, the callback URL and
    SignKey. Its data directory keeps the config of an earlier start, which flags alone do not change."""
    from deploy import vod_notify

    vod = vod_notify.client(
        env["VOD_SECRET_ID"], env["VOD_SECRET_KEY"], {"VOD_API_ENDPOINT": f"http://{HOST}:{VOD_PORT}"}
    )
    api_url = f"http://{HOST}:{API_PORT}/"
    vod_notify.configure(vod, vod_notify.wanted(api_url, env["VOD_CALLBACK_TOKEN"], EVENT_MODE), env["VOD_SIGN_KEY"])


def stack_overrides(env: dict[str, str]) -> dict[str, str]:
    """What this stack's app processes (the API, the PULL consumer, `make sweep`) change in the local stage's
    environment `env`: this stack's DynamoDB, vodlocal and page (the `DEVSTACK_*_PORT`s), and `EVENT_MODE`."""
    endpoint = f"http://{HOST}:{DYNAMODB_PORT}"
    overrides = {} if env.get("DYNAMODB_ENDPOINT_URL") == endpoint else {"DYNAMODB_ENDPOINT_URL": endpoint}
    return overrides | {
        "EVENT_MODE": EVENT_MODE,
        "VOD_API_ENDPOINT": f"http://{HOST}:{VOD_PORT}",
        "CORS_ALLOWED_ORIGINS": ",".join(web_origins()),
    }


class Stack:
    """DynamoDB and its table, vodlocal, the API and the upload page, on their ports."""

    def __init__(self, env: dict[str, str], autoreload: bool = True) -> None:
        self.env = env
        self.dynamodb: subprocess.Popen[bytes] | None = None
        self.vodlocal: subprocess.Popen[bytes] | None = None
        self.consumer: subprocess.Popen[bytes] | None = None
        self.events: subprocess.Popen[bytes] | None = None
        if EVENT_MODE not in ("push", "pull"):
            raise SystemExit(f"EVENT_MODE must be push or pull, not {EVENT_MODE!r}")
        self.overrides = stack_overrides(env)
        self.web: WebServer | None = None
        self.api = ApiServer(ROOT, STAGE, API_PORT, self.overrides, watch=autoreload)

    @property
    def processes(self) -> list[subprocess.Popen[bytes]]:
        return [
            p for p in (self.dynamodb, self.vodlocal, self.consumer, self.events, self.api.process) if p is not None
        ]

    def start(self, shutdown: Shutdown) -> None:
        ports = (API_PORT, VOD_PORT, DYNAMODB_PORT, WEB_PORT, VOD_TLS_PORT, EVENTS_PORT)
        busy = [port for port in ports if not _port_free(port)]
        if busy:
            raise SystemExit(f"ports {busy} on {HOST} are in use: stop whatever holds them (an earlier make dev?)")
        shutdown.check()
        self.dynamodb = _spawn([sys.executable, "-m", "devstack.dynamodb", "--port", str(DYNAMODB_PORT)])
        _wait_for(f"http://{HOST}:{DYNAMODB_PORT}/", self.dynamodb, shutdown)
        ensure_table(local_client(f"http://{HOST}:{DYNAMODB_PORT}"), self.env["TABLE_NAME"])
        shutdown.check()
        self.events = _spawn(events_command(self.env["TABLE_NAME"]))
        _wait_for(f"http://{HOST}:{EVENTS_PORT}/health", self.events, shutdown)
        shutdown.check()
        self.vodlocal = _spawn(vodlocal_command(), vodlocal_environment(self.env))
        _wait_for(f"http://{HOST}:{VOD_PORT}/", self.vodlocal, shutdown)
        configure_events(self.env)
        self.api.start(shutdown)
        key_file, issuer = local_signing_key()
        self.web = WebServer(LocalPage(self.api.url, key_file, issuer), HOST, WEB_PORT)
        if EVENT_MODE == "pull":  # it reads this stack's ports and mode from the environment, as `make sweep` does
            self.consumer = _spawn([sys.executable, "-m", "devstack.pull"])

    def failed_component(self) -> str | None:
        components = (
            ("DynamoDB", self.dynamodb),
            ("vodlocal", self.vodlocal),
            ("the PULL consumer", self.consumer),
            ("the events reader and sink", self.events),
        )
        for name, process in components:
            if process is not None and process.poll() is not None:
                return f"{name} exited with {process.returncode}"
        return None

    def stop(self, shutdown: Shutdown | None = None) -> None:
        with _deferred_signals(shutdown) as active:
            if self.web is not None:
                self.web.stop()
            # The consumer and the events reader first: they would otherwise log what they read from going away.
            _stop([p for p in (self.consumer, self.events) if p is not None], active)
            _stop(self.processes, active)


@contextlib.contextmanager
def _deferred_signals(shutdown: Shutdown | None) -> Iterator[Shutdown | None]:
    """While stopping, SIGINT/SIGTERM must not raise (a KeyboardInterrupt would leave children running)."""
    if shutdown is not None or threading.current_thread() is not threading.main_thread():
        yield shutdown
        return
    guard = Shutdown()
    guard.requested = True
    guard._first = time.monotonic()
    previous = guard.install()
    try:
        yield guard
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


@contextlib.contextmanager
def local_stack(env: dict[str, str], autoreload: bool = True) -> Iterator[Stack]:
    """DynamoDB, its table, vodlocal and the API on their ports; all stopped (and waited for) on exit."""
    stack = Stack(env, autoreload)
    try:
        stack.start(Shutdown())
        yield stack
    finally:
        stack.stop()


def web_origins() -> list[str]:
    """The page's origins under `make dev`: the API allows these (and only these) to call it from a browser."""
    return [f"http://{HOST}:{WEB_PORT}", f"http://localhost:{WEB_PORT}"]


def local_token(user: str) -> str:
    output = subprocess.run(  # noqa: S603
        [sys.executable, "-m", "devstack.token", user], cwd=ROOT, check=True, capture_output=True, text=True
    ).stdout
    return output.strip().splitlines()[-1]


def _event_flow() -> str:
    if EVENT_MODE == "pull":
        return "queues events; the PULL consumer, devstack/pull.py, applies them"
    return "pushes events to the API"


def _banner(env: dict[str, str], token: str) -> str:
    body = json.dumps(json.dumps({"title": "My clip"}))
    lines = [
        "",
        "Local stack is up:",
        f"  API        http://{HOST}:{API_PORT}   (stage {STAGE} as chalice local serves it; restarts on code changes)",
        f"  vodlocal   http://{HOST}:{VOD_PORT}   (VOD + COS emulator; {_event_flow()})",
        f"  DynamoDB   http://{HOST}:{DYNAMODB_PORT}   (table {env['TABLE_NAME']})",
        f"  web page   http://{HOST}:{WEB_PORT}/   (the reference upload page; make browse opens it in Chromium, "
        f"with the SDK's hosts sent to vodlocal's HTTPS on {VOD_TLS_PORT})",
        f"  events     http://{HOST}:{EVENTS_PORT}/events   (domain events from the table's outbox, as the "
        "stage's bus gets them; printed here too)",
        "",
        "Token for alice (make token USER=<name> for others):",
        f"  {token}",
        "",
        "Try:",
        f"  curl -s -X POST http://{HOST}:{API_PORT}/uploads -H 'Authorization: Bearer {token}' "
        f"-H 'Content-Type: application/json' -d {body}",
        "  make demo     (one upload with Tencent's Web SDK through vodlocal, then GET /videos)",
        f"  http://{HOST}:{API_PORT}/openapi.json   (the API contract, OpenAPI 3.1: open it in any OpenAPI viewer)",
        "",
        "Ctrl-C stops everything.",
    ]
    return "\n".join(lines)


def main() -> None:
    shutdown = Shutdown()
    shutdown.install()
    env = local_stage_env()
    stack = Stack(env)
    failure: str | None = None
    try:
        stack.start(shutdown)
        token = local_token("alice")
        _say(_banner(env, token))
        while not shutdown.requested:
            failure = stack.failed_component()
            if failure:
                break
            stack.api.poll(shutdown)
            time.sleep(0.2)
    except Exception:
        if not shutdown.requested:  # Stopped, or e.g. the token helper killed by the same signal: just stop
            raise
    finally:
        _say(f"\n{failure}: stopping the rest…" if failure else "\nstopping…")
        stack.stop(shutdown)
    if failure:
        raise SystemExit(1)
    _say("stopped")


if __name__ == "__main__":
    main()
