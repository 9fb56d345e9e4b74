"""CLI/env configuration, CORS and the local routes."""

from __future__ import annotations

import base64
import hashlib
import socket
import ssl
from dataclasses import replace
from pathlib import Path

import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from qcloud_cos import CosConfig
from qcloud_cos.cos_auth import CosS3Auth

from tests.vodlocal.conftest import SECRET_ID, SECRET_KEY
from vodlocal import Config, Handle, start
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


BUCKET_HOST = f"{vod_bucket_name('ap-guangzhou', 1500000001)}-1500000001.cos.ap-guangzhou.myqcloud.com"


def cos_preflight(url: str, origin: str, method: str = "PUT") -> requests.Response:
    """What a browser sends before the SDK's UploadPart (signed, with the temporary key's token)."""
    return requests.options(
        f"{url}/k?partNumber=1&uploadId=x",
        timeout=5,
        headers={
            "Host": BUCKET_HOST,
            "Origin": origin,
            "Access-Control-Request-Method": method,
            "Access-Control-Request-Headers": "authorization,x-cos-security-token",
        },
    )


def test_cors_preflight_and_exposed_etag(emulator: Handle) -> None:
    pre = cos_preflight(emulator.url, "http://localhost:3000")
    assert pre.status_code == 200
    assert pre.headers["Access-Control-Allow-Origin"] == "http://localhost:3000"
    assert pre.headers["Access-Control-Allow-Headers"] == "authorization, x-cos-security-token"
    assert "PUT" in pre.headers["Access-Control-Allow-Methods"]
    missing = requests.get(
        f"{emulator.url}/nothing", headers={"Host": BUCKET_HOST, "Origin": "http://localhost:3000"}, timeout=5
    )
    assert missing.status_code == 403 and "<Code>AccessDenied</Code>" in missing.text  # unsigned
    assert "ETag" in missing.headers["Access-Control-Expose-Headers"]
    assert missing.headers["Access-Control-Allow-Origin"] == "http://localhost:3000"


def test_cos_cors_rules_are_configurable_like_put_bucket_cors(emu_config: Config) -> None:
    rules = '[{"AllowedOrigins": ["https://*.example.com"], "AllowedMethods": ["PUT", "POST"], '
    rules += '"AllowedHeaders": ["authorization", "x-cos-*"], "ExposeHeaders": ["ETag"], "MaxAgeSeconds": 60}]'
    config = replace(emu_config, cos_cors=from_args([], {"VODLOCAL_COS_CORS": rules}).cos_cors)
    with start(config) as emulator:
        allowed = cos_preflight(emulator.url, "https://app.example.com")
        assert allowed.status_code == 200 and allowed.headers["Access-Control-Max-Age"] == "60"
        assert allowed.headers["Access-Control-Expose-Headers"] == "ETag"
        # Multipart's POSTs (Initiate, Complete) are preflighted too.
        assert cos_preflight(emulator.url, "https://app.example.com", "POST").status_code == 200
        for origin, method in (("https://evil.test", "PUT"), ("https://app.example.com", "DELETE")):
            refused = cos_preflight(emulator.url, origin, method)
            assert refused.status_code == 403 and "<Code>AccessForbidden</Code>" in refused.text
            assert "Access-Control-Allow-Origin" not in refused.headers
        other = requests.get(
            f"{emulator.url}/nothing", headers={"Host": BUCKET_HOST, "Origin": "https://evil.test"}, timeout=5
        )
        assert "Access-Control-Allow-Origin" not in other.headers
    with pytest.raises(SystemExit, match="cos-cors"):
        from_args([], {"VODLOCAL_COS_CORS": '[{"AllowedMethods": ["PUT"]}]'})


def test_https_with_a_generated_certificate_for_the_sdk_hosts(emu_config: Config, tmp_path: Path) -> None:
    config = replace(emu_config, tls_port=0, tls_dir=tmp_path / "tls")
    with start(config) as emulator:
        assert emulator.tls is not None and emulator.tls_port
        context = ssl.create_default_context(cafile=str(emulator.tls.ca_cert))
        for host in ("vod2.qcloud.com", BUCKET_HOST):
            with (
                socket.create_connection(("127.0.0.1", emulator.tls_port), timeout=5) as raw,
                context.wrap_socket(raw, server_hostname=host) as tls,
            ):
                tls.sendall(f"OPTIONS / HTTP/1.1\r\nHost: {host}\r\nOrigin: http://127.0.0.1\r\n".encode())
                tls.sendall(b"Access-Control-Request-Method: PUT\r\nConnection: close\r\n\r\n")
                assert tls.recv(100).startswith(b"HTTP/1.1 200 ")
                der = tls.getpeercert(binary_form=True)
        assert der is not None
        spki = (
            x509.load_der_x509_certificate(der)
            .public_key()
            .public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
        )
        assert base64.b64encode(hashlib.sha256(spki).digest()).decode() == emulator.tls.spki_sha256
    # The next start keeps the certificate, so a browser told its hash stays set up.
    with start(config) as again:
        assert again.tls is not None and again.tls.spki_sha256 == emulator.tls.spki_sha256


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


@pytest.mark.parametrize(
    "framing",
    ["Content-Length: -5\r\n\r\nbody", "Transfer-Encoding: chunked\r\n\r\nzz\r\nbody\r\n0\r\n\r\n"],
)
def test_an_unreadable_body_sent_to_cos_gets_cos_xml(emulator: Handle, framing: str) -> None:
    """A COS client reads COS's XML error shape and nothing else, also for a body whose framing is broken (the
    request signed, so that vodlocal goes on to read the body)."""
    app_id, region = emulator.app.config.app_id, emulator.app.config.region
    host = f"{vod_bucket_name(region, app_id)}-{app_id}.cos.{region}.myqcloud.com"
    conf = CosConfig(Region=region, SecretId=SECRET_ID, SecretKey=SECRET_KEY, Scheme="http")
    unsigned = requests.Request("PUT", f"http://{host}/clip.mp4").prepare()
    del unsigned.headers["Content-Length"]  # the framing below is the request's own
    signed = CosS3Auth(conf, "clip.mp4")(unsigned)
    with socket.create_connection(("127.0.0.1", emulator.port), timeout=5) as sock:
        authorization = signed.headers["Authorization"]
        sock.sendall(f"PUT /clip.mp4 HTTP/1.1\r\nHost: {host}\r\nAuthorization: {authorization}\r\n{framing}".encode())
        reply = b""
        while chunk := sock.recv(65536):
            reply += chunk
    head, _, body = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400 ") and b"Content-Type: application/xml" in head, reply[:300]
    assert body.startswith(b"<?xml") and b"<Code>InvalidRequest</Code>" in body and b"<RequestId>" in body, body
