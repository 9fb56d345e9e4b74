"""Waiting for a local server to answer: the dev stack, `make demo`, the tests and the deploy rehearsal all
start servers in child processes and must not talk to them before they listen."""

from __future__ import annotations

import http.client
import subprocess
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

DEFAULT_TIMEOUT = 60.0
POLL_INTERVAL = 0.2


class NotHealthy(RuntimeError):
    """The server did not answer in time, or its process exited before it did."""


def is_healthy(url: str, timeout: float = 1.0) -> bool:
    """True if a GET of `url` answers now with a success status. The API's `/health`, vodlocal's `/` and
    moto's `/` all answer 200 once they serve; anything else (refused, reset, an error status, garbage)
    means not yet, or not the server we expect."""
    try:
        urllib.request.urlopen(url, timeout=timeout).close()  # noqa: S310 - callers pass our own local URLs
    except (OSError, http.client.HTTPException):
        return False
    return True


def wait_until_healthy(
    url: str,
    process: subprocess.Popen[bytes] | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    *,
    name: str | None = None,
    log: Path | None = None,
    interrupt: Callable[[], None] | None = None,
) -> None:
    """Poll `url` until `is_healthy`, or raise `NotHealthy` naming the URL, `name` (what was started) and
    `log` (where its output went).

    With `process`, its exit ends the wait at once (a server that crashed on start would otherwise be
    waited for until `timeout`). `interrupt` is called before each poll and may raise to abandon the
    wait (the dev stack's Ctrl-C)."""
    what = name or (_command(process) if process is not None else "the server")
    see = f"; see {log}" if log is not None else ""
    deadline = time.monotonic() + timeout
    while True:
        if interrupt is not None:
            interrupt()
        if process is not None and process.poll() is not None:
            raise NotHealthy(f"{what} exited with {process.returncode} before {url} answered{see}")
        if is_healthy(url):
            return
        if time.monotonic() >= deadline:
            raise NotHealthy(f"{what} did not answer at {url} within {timeout:g} s{see}")
        time.sleep(POLL_INTERVAL)


def _command(process: subprocess.Popen[bytes]) -> str:
    args = process.args
    return " ".join(map(str, args)) if isinstance(args, list | tuple) else str(args)
