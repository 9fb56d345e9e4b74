"""Helpers shared by the tests and the benchmark: a local HTTP server and a runner for the JS SDK harness
(``e2e/js/harness.js``). The stand-in for the project's signing API is tests/signing_stub.py: it signs with the
project's code, which vodlocal never imports."""

from __future__ import annotations

import json
import os
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
HARNESS = ROOT / "e2e" / "js" / "harness.js"


class LocalServer:
    """A ThreadingHTTPServer on 127.0.0.1 with a free port, serving in a daemon thread."""

    def __init__(self, handler: type[BaseHTTPRequestHandler]) -> None:
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def reply_json(handler: BaseHTTPRequestHandler, status: int, payload: object) -> None:
    data = json.dumps(payload).encode()
    handler.send_response(status)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(data)))
    handler.end_headers()
    handler.wfile.write(data)


def harness_env(emulator_url: str, signing_url: str, auth_token: str, **env: str | int | Path) -> dict[str, str]:
    """The JS SDK harness's environment (its header lists the variables)."""
    return {
        "PATH": os.environ.get("PATH", ""),
        "EMU": emulator_url,
        "SIGNING_URL": signing_url,
        "AUTH_TOKEN": auth_token,
        **{k: str(v) for k, v in env.items()},
    }


def harness_result(stdout: str, stderr: str, returncode: int | None) -> dict[str, Any]:
    """The harness's JSON result line."""
    lines = [line for line in stdout.splitlines() if line.startswith("{")]
    if not lines:
        raise RuntimeError(f"harness printed no JSON (rc={returncode}):\n{stdout}\n{stderr}")
    result: dict[str, Any] = json.loads(lines[-1])
    return result


def run_harness(
    node: str, emulator_url: str, signing_url: str, auth_token: str, timeout: float = 120, **env: str | int | Path
) -> dict[str, Any]:
    """Run the JS SDK harness once and return its JSON result line."""
    proc = subprocess.run(  # noqa: S603 - our own harness
        [node, str(HARNESS)],
        env=harness_env(emulator_url, signing_url, auth_token, **env),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    return harness_result(proc.stdout, proc.stderr, proc.returncode)
