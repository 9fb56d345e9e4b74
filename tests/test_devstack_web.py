"""The page's server under `make dev` (devstack/web.py) against clients that send a bad or missing sign-in body:
a JSON 400 naming what is wrong, and one line (not a traceback) in make dev's output for a client that went away."""

from __future__ import annotations

import json
import socket
import struct
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from devstack.web import LocalPage, WebServer


@pytest.fixture
def site(tmp_path: Path) -> Iterator[WebServer]:
    with WebServer(LocalPage("http://127.0.0.1:9", tmp_path / "jwt-key.pem")) as server:
        yield server


def exchange(site: WebServer, request: bytes) -> tuple[int, dict[str, object]]:
    with socket.create_connection(("127.0.0.1", site.port), timeout=10) as client:
        client.sendall(request)
        answer = b""
        while chunk := client.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body)


def sign_in(body: bytes, content_length: str) -> bytes:
    return (
        f"POST /local/sign-in HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"Content-Length: {content_length}\r\nConnection: close\r\n\r\n"
    ).encode() + body


def test_sign_in_with_a_bad_content_length_is_a_400_naming_it(site: WebServer) -> None:
    # Before: int('abc') raised in the handler, the client got no answer and make dev's output a traceback.
    for declared in ("abc", "-5", "99999999999999999999"):
        status, body = exchange(site, sign_in(b"", declared))
        assert status == 400, declared
        assert body["error"] == "invalid_request" and str(body["message"]).startswith("Content-Length:"), body
    status, body = exchange(site, sign_in(b'{"user": "carol"}', "17"))
    assert status == 200 and body["user"] == "carol"


def test_a_client_gone_before_its_body_costs_one_line_not_a_traceback(
    site: WebServer, capfd: pytest.CaptureFixture[str]
) -> None:
    with socket.create_connection(("127.0.0.1", site.port), timeout=10) as client:
        client.sendall(sign_in(b'{"us', "100"))
        # Closed with a reset, as a killed client's socket is: the server's read of the rest fails.
        client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    output = ""
    deadline = time.monotonic() + 10
    while "dropped" not in output and "Traceback" not in output and time.monotonic() < deadline:
        output += capfd.readouterr().err
        time.sleep(0.05)
    assert "Traceback" not in output and "web page: a request from 127.0.0.1 was dropped" in output, output
    status, _ = exchange(site, sign_in(b'{"user": "carol"}', "17"))
    assert status == 200
