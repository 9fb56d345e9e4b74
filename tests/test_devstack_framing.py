"""make dev's own HTTP servers (devstack/framing.py), the API as `chalice local` serves it and the page's server,
against clients that frame a request badly: a JSON 400 naming `Content-Length` when it is not a number (before:
`int()` raised in the handler, the client got no answer and make dev's output a traceback), and one line, not a
traceback, for a client gone before its body."""

from __future__ import annotations

import json
import socket
import struct
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from devstack.web import LocalPage, WebServer
from tests.conftest import TokenFactory


@pytest.fixture
def site(tmp_path: Path) -> Iterator[WebServer]:
    with WebServer(LocalPage("http://127.0.0.1:9", tmp_path / "jwt-key.pem")) as server:
        yield server


def exchange(port: int, request: bytes) -> tuple[int, dict[str, object]]:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as client:
        client.sendall(request)
        answer = b""
        while chunk := client.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body)


def post(path: str, body: bytes, content_length: str, token: str = "") -> bytes:
    authorization = f"Authorization: Bearer {token}\r\n" if token else ""
    return (
        f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n{authorization}"
        f"Content-Length: {content_length}\r\nConnection: close\r\n\r\n"
    ).encode() + body


def sign_in(body: bytes, content_length: str) -> bytes:
    return post("/local/sign-in", body, content_length)


def test_sign_in_with_a_bad_content_length_is_a_400_naming_it(site: WebServer) -> None:
    for declared in ("abc", "-5", "1e3"):
        status, body = exchange(site.port, sign_in(b"", declared))
        assert (status, body["field"]) == (400, "Content-Length"), (declared, body)
    status, body = exchange(site.port, sign_in(b"", "99999999999999999999"))
    assert (status, body["error"]) == (413, "payload_too_large")
    status, body = exchange(site.port, sign_in(b'{"user": "carol"}', "17"))
    assert status == 200 and body["user"] == "carol"


def test_the_api_answers_a_bad_content_length_with_a_400_naming_it(chalice_local: str, token_for: TokenFactory) -> None:
    port = int(chalice_local.rsplit(":", 1)[1])
    for declared in ("abc", "-5"):
        status, body = exchange(port, post("/uploads", b"{}", declared, token_for("alice")))
        assert (status, body["field"]) == (400, "Content-Length"), (declared, body)
    status, body = exchange(port, post("/uploads", b"{}", "2", token_for("alice")))
    assert status == 201, body


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
    status, _ = exchange(site.port, sign_in(b'{"user": "carol"}', "17"))
    assert status == 200
