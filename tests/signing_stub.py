"""A stand-in for the project's signing API, for tests and benchmarks that drive vodlocal without the whole app.

It lives with the tests, not in vodlocal: it stands for the product's side, so it signs with the product's own
code (``chalicelib.vod_signature``), and vodlocal checks those signatures with its own verifier
(vodlocal/signatures.py). Every upload through it is a cross-check of the two readings of the protocol."""

from __future__ import annotations

import json
import secrets
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any

from chalicelib import vod_signature
from vodlocal.testing import LocalServer, reply_json


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
