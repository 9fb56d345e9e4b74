"""CLI/env configuration, CORS and the local routes."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
import requests

from vodlocal import Handle
from vodlocal.config import from_args, parse_secrets
from vodlocal.cos import vod_bucket_name


def test_flags_win_over_environment() -> None:
    env = {
        "VODLOCAL_SECRETS": "id1:k1,id2:k2",
        "VODLOCAL_PORT": "9001",
        "VODLOCAL_MODE": "PULL",
        "VODLOCAL_DUPLICATE_DELIVERIES": "3",
    }
    config = from_args(["--port", "9002", "--data-dir", "/tmp/x"], env)
    assert (config.port, config.mode, config.duplicate_deliveries) == (9002, "PULL", 3)
    assert dict(config.secrets) == {"id1": "k1", "id2": "k2"}
    assert config.data_dir == Path("/tmp/x")
    config = from_args(["--callback-url", "http://127.0.0.1:8000/cb"], {"VODLOCAL_SECRETS": "a:b,c:d:e"})
    assert dict(config.secrets) == {"a": "b", "c": "d:e"}
    assert (config.host, config.port, config.app_id, config.mode) == ("127.0.0.1", 8001, 1500000001, "PUSH")


def test_one_time_signature_rule_from_flag_or_environment() -> None:
    assert from_args([], {}).one_time_signatures == "session"
    assert from_args([], {"VODLOCAL_ONE_TIME_SIGNATURES": "strict"}).one_time_signatures == "strict"
    flagged = from_args(["--one-time-signatures", "session"], {"VODLOCAL_ONE_TIME_SIGNATURES": "strict"})
    assert flagged.one_time_signatures == "session"
    with pytest.raises(SystemExit, match="session or strict"):
        from_args([], {"VODLOCAL_ONE_TIME_SIGNATURES": "apply"})


def test_bad_secret_is_rejected() -> None:
    with pytest.raises(ValueError, match="ID:KEY"):
        parse_secrets(["no-colon"])


def test_cors_preflight_and_exposed_etag(emulator: Handle) -> None:
    host = f"{vod_bucket_name('ap-guangzhou', 1500000001)}-1500000001.cos.ap-guangzhou.myqcloud.com"
    pre = requests.options(
        f"{emulator.url}/k?partNumber=1&uploadId=x",
        timeout=5,
        headers={
            "Host": host,
            "Origin": "http://localhost:3000",
            "Access-Control-Request-Method": "PUT",
            "Access-Control-Request-Headers": "authorization,x-cos-security-token",
        },
    )
    assert pre.status_code == 200
    assert pre.headers["Access-Control-Allow-Headers"] == "authorization,x-cos-security-token"
    assert "PUT" in pre.headers["Access-Control-Allow-Methods"]
    missing = requests.get(f"{emulator.url}/nothing", headers={"Host": host}, timeout=5)
    assert missing.status_code == 403 and "<Code>AccessDenied</Code>" in missing.text  # unsigned
    assert "ETag" in missing.headers["Access-Control-Expose-Headers"]


def test_local_routes(emulator: Handle) -> None:
    assert requests.get(f"{emulator.url}/_vodlocal/health", timeout=5).json()["ok"] is True
    requests.post(f"{emulator.url}/ugcupload_new", headers={"Host": "vodreport.qcloud.com"}, json={}, timeout=5)
    log = requests.get(f"{emulator.url}/_vodlocal/requests", timeout=5).json()
    assert log[-1]["op"] == "Report" and log[-1]["host"] == "vodreport.qcloud.com"
    probe = requests.head(f"{emulator.url}/", headers={"Host": "cos.ap-guangzhou.myqcloud.com"}, timeout=5)
    assert probe.status_code == 200


@pytest.mark.parametrize("length", ["abc", "-5", "1e3", "\u0663"])
def test_invalid_content_length_is_400(emulator: Handle, length: str) -> None:
    with socket.create_connection(("127.0.0.1", emulator.port), timeout=5) as sock:
        sock.sendall(f"PUT /x HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {length}\r\n\r\nbody".encode())
        reply = b""
        while chunk := sock.recv(65536):
            reply += chunk
    assert reply.startswith(b"HTTP/1.1 400 "), reply[:200]
    # The server is still healthy afterwards.
    assert requests.get(f"{emulator.url}/_vodlocal/health", timeout=5).json()["ok"] is True
