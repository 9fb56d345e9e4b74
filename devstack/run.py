"""`make dev`: DynamoDB (8002), vodlocal (8001) and `chalice local --stage local` (8000), wired together.

Ctrl-C stops everything. Ports are fixed so that the README's curl examples work as written.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from devstack.table import ensure_table, local_client
from devstack.token import local_stage_env

ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
API_PORT, VOD_PORT, DYNAMODB_PORT = 8000, 8001, 8002


def _port_free(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex((HOST, port)) != 0


def _wait_for(url: str, process: subprocess.Popen[bytes], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"{' '.join(map(str, process.args))} exited with {process.returncode}")  # type: ignore[arg-type]
        try:
            with urllib.request.urlopen(url, timeout=1):  # noqa: S310 - fixed local URL
                return
        except OSError as exc:
            if "HTTP Error" in str(exc):
                return  # it answers: up
            time.sleep(0.2)
    raise SystemExit(f"{url} did not come up within {timeout:.0f} s")


def vodlocal_command(env: dict[str, str]) -> list[str]:
    callback = f"http://{HOST}:{API_PORT}/vod/events/{env['VOD_CALLBACK_TOKEN']}"
    return [
        sys.executable, "-m", "vodlocal",
        "--host", HOST, "--port", str(VOD_PORT),
        "--data-dir", str(ROOT / ".local" / "vodlocal"),
        "--secret", f"{env['VOD_SECRET_ID']}:{env['VOD_SECRET_KEY']}",
        "--callback-url", callback,
        "--sign-key", env["VOD_SIGN_KEY"],
    ]  # fmt: skip


def _interrupt(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt


@contextlib.contextmanager
def local_stack(env: dict[str, str], autoreload: bool = True) -> Iterator[list[subprocess.Popen[bytes]]]:
    """DynamoDB, its table, vodlocal and the API on their fixed ports; all stopped on exit."""
    busy = [port for port in (API_PORT, VOD_PORT, DYNAMODB_PORT) if not _port_free(port)]
    if busy:
        raise SystemExit(f"ports {busy} on {HOST} are in use: stop whatever holds them (an earlier make dev?)")
    processes: list[subprocess.Popen[bytes]] = []

    def start(args: list[str], health: str) -> None:
        # Own process group each: stopping the group also stops `chalice local`'s reloader child.
        process = subprocess.Popen(args, cwd=ROOT, start_new_session=True)  # noqa: S603 - our own commands
        processes.append(process)
        _wait_for(health, process)

    try:
        start(
            [sys.executable, "-m", "devstack.dynamodb", "--port", str(DYNAMODB_PORT)], f"http://{HOST}:{DYNAMODB_PORT}/"
        )
        ensure_table(local_client(f"http://{HOST}:{DYNAMODB_PORT}"), env["TABLE_NAME"])
        start(vodlocal_command(env), f"http://{HOST}:{VOD_PORT}/")
        chalice = str(Path(sys.executable).with_name("chalice"))
        reload_flag = [] if autoreload else ["--no-autoreload"]
        start([chalice, "local", "--stage", "local", "--host", HOST, "--port", str(API_PORT), *reload_flag],
              f"http://{HOST}:{API_PORT}/health")  # fmt: skip
        yield processes
    finally:
        for process in reversed(processes):
            _signal_group(process, signal.SIGTERM)
        for process in processes:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                _signal_group(process, signal.SIGKILL)


def _signal_group(process: subprocess.Popen[bytes], signum: int) -> None:
    try:
        os.killpg(process.pid, signum)
    except ProcessLookupError:
        pass  # already gone


def local_token(user: str) -> str:
    output = subprocess.run(  # noqa: S603
        [sys.executable, "-m", "devstack.token", user], cwd=ROOT, check=True, capture_output=True, text=True
    ).stdout
    return output.strip().splitlines()[-1]


def main() -> None:
    # Explicitly: a job started in the background inherits SIGINT ignored, and Ctrl-C must still stop it.
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, _interrupt)
    env = local_stage_env()
    try:
        with local_stack(env) as processes:
            token = local_token("alice")
            body = json.dumps(json.dumps({"title": "My clip"}))
            lines = [
                "",
                "Local stack is up:",
                f"  API        http://{HOST}:{API_PORT}   (chalice local --stage local)",
                f"  vodlocal   http://{HOST}:{VOD_PORT}   (VOD + COS emulator; pushes events to the API)",
                f"  DynamoDB   http://{HOST}:{DYNAMODB_PORT}   (table {env['TABLE_NAME']})",
                "",
                "Token for alice (make token USER=<name> for others):",
                f"  {token}",
                "",
                "Try:",
                f"  curl -s -X POST http://{HOST}:{API_PORT}/uploads -H 'Authorization: Bearer {token}' "
                f"-H 'Content-Type: application/json' -d {body}",
                "  make demo     (one upload with Tencent's Web SDK through vodlocal, then GET /videos)",
                "",
                "Ctrl-C stops everything.",
            ]
            print("\n".join(lines), flush=True)
            while all(process.poll() is None for process in processes):
                time.sleep(0.5)
            raise SystemExit("a component of the local stack exited; stopping the rest")
    except KeyboardInterrupt:
        print("\nstopping…", flush=True)


if __name__ == "__main__":
    main()
