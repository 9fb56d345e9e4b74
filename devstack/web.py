"""The reference upload page (web/) as `make dev` serves it, at http://127.0.0.1:8003/ by default.

Besides web/'s static files it serves what a deployed page gets elsewhere: Tencent's SDK bundle, unmodified,
from e2e/js/node_modules (`make js`), and the page's `config.json`. And what only the dev stack has, never
deployed: "sign in as <name>" (`POST /local/sign-in`), which mints a local-stage token with the stage's local
key, as `make token` does.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

from chalicelib.auth import load_or_create_local_key, mint_local_token
from chalicelib.identity import LOCAL_ISSUER
from devstack.framing import BAD_LENGTH, READ_TIMEOUT_SECONDS, BackgroundServer, declared_length

ROOT = Path(__file__).resolve().parent.parent
WEB = ROOT / "web"
SDK_BUNDLE = ROOT / "e2e" / "js" / "node_modules" / "vod-js-sdk-v6" / "dist" / "vod-js-sdk-v6.js"
SDK_PATH = "/vendor/vod-js-sdk-v6.js"
CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".json": "application/json",
    ".svg": "image/svg+xml",
}
TOKEN_TTL_SECONDS = 12 * 3600
MAX_NAME = 64
MAX_SIGN_IN_BODY = 4096


@dataclass(frozen=True)
class LocalPage:
    """What the page needs to know about the local stack, and the key its sign-in signs with."""

    api: str
    jwt_key_file: Path
    issuer: str = LOCAL_ISSUER
    # Passed to the SDK's upload() as they are (chunkSize, chunkParallelLimit, progressInterval): the defaults
    # (8 MiB parts, 6 at a time) unless a stack wants smaller parts, as the browser tests do.
    upload: Mapping[str, int] = field(default_factory=dict)

    def config(self) -> dict[str, Any]:
        return {
            "stage": "local",
            "api": self.api,
            "signIn": {"mode": "local", "url": "local/sign-in"},
            "upload": dict(self.upload),
        }


def _handler(page: LocalPage) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        timeout = READ_TIMEOUT_SECONDS

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _send(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-cache")
            self.end_headers()
            self.wfile.write(body)

        def _json(self, status: int, payload: object) -> None:
            self._send(status, json.dumps(payload).encode(), "application/json")

        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/config.json":
                return self._json(200, page.config())
            if path == SDK_PATH:
                file = SDK_BUNDLE
            else:
                file = (WEB / (path.lstrip("/") or "index.html")).resolve()
                if not file.is_relative_to(WEB) or not file.is_file():
                    return self._json(404, {"error": "not_found", "message": f"no file {path[:100]!r}"})
            if not file.is_file():
                return self._json(500, {"error": "missing_sdk", "message": f"{file} is missing: run make js"})
            self._send(200, file.read_bytes(), CONTENT_TYPES.get(file.suffix, "application/octet-stream"))

        def do_POST(self) -> None:
            if self.path != "/local/sign-in":
                return self._json(404, {"error": "not_found", "message": "no such route"})
            length = declared_length(self.headers)
            if length is None:
                return self._json(400, BAD_LENGTH)
            if length > MAX_SIGN_IN_BODY:
                return self._json(413, {"error": "payload_too_large", "message": f"at most {MAX_SIGN_IN_BODY} bytes"})
            try:
                name = str(json.loads(self.rfile.read(length) or b"{}").get("user", "")).strip()
            except (ValueError, AttributeError):
                name = ""
            if not name or len(name) > MAX_NAME:
                return self._json(400, {"error": "invalid_request", "message": f"user: 1 to {MAX_NAME} characters"})
            key = load_or_create_local_key(str(page.jwt_key_file))
            self._json(200, {"user": name, "token": mint_local_token(key, page.issuer, name, None, TOKEN_TTL_SECONDS)})

    return Handler


class WebServer(BackgroundServer):
    """The page's server in a daemon thread (port 0: any free port)."""

    def __init__(self, page: LocalPage, host: str = "127.0.0.1", port: int = 0) -> None:
        super().__init__(_handler(page), host, port, "web page")
        self.url = f"http://{host}:{self.port}/"
