"""Helpers shared by the tests and the benchmark: a stand-in for the project's signing service and a runner
for the JS SDK harness (``e2e/js/harness.js``)."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from chalicelib import vod_signature

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


@dataclass
class SigningStub:
    """``POST /uploads`` -> 201 {uploadId, signature, expireTime}; ``POST /uploads/{id}/signature`` -> 200.

    Same contract as the project's signing API; signs with ``chalicelib.vod_signature`` (sourceContext =
    uploadId, one-time signatures by default)."""

    secret_id: str
    secret_key: str
    auth_token: str
    validity: int = 3600
    clock_offset: int = 0  # shifts currentTimeStamp; negative + short validity = an expired signature
    options: dict[str, Any] = field(default_factory=lambda: {"oneTimeValid": 1})
    issued: list[str] = field(default_factory=list)
    intents: dict[str, dict[str, Any]] = field(default_factory=dict)
    url: str = ""
    _server: LocalServer | None = None

    def sign(self, upload_id: str) -> dict[str, Any]:
        opts = {"sourceContext": upload_id, **self.options}
        params = vod_signature.new_params(
            self.secret_id,
            self.validity,
            vod_signature.SignatureOptions(**opts),
            now=int(time.time()) + self.clock_offset,
        )
        signature = vod_signature.sign(params, self.secret_key)
        self.issued.append(signature)
        return {"signature": signature, "expireTime": params.expireTime}

    def new_upload(self, body: dict[str, Any] | None = None) -> str:
        upload_id = "up-" + secrets.token_hex(8)
        self.intents[upload_id] = body or {}
        return upload_id

    def start(self) -> SigningStub:
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if self.headers.get("Authorization") != f"Bearer {stub.auth_token}":
                    return reply_json(self, 401, {"error": "unauthorized"})
                parts = self.path.strip("/").split("/")
                if parts == ["uploads"]:
                    upload_id = stub.new_upload(json.loads(body or b"{}"))
                    return reply_json(self, 201, {"uploadId": upload_id, **stub.sign(upload_id)})
                if len(parts) == 3 and parts[0] == "uploads" and parts[2] == "signature" and parts[1] in stub.intents:
                    return reply_json(self, 200, stub.sign(parts[1]))
                return reply_json(self, 404, {"error": "not found"})

        self._server = LocalServer(Handler)
        self.url = self._server.url + "/"
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()


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
