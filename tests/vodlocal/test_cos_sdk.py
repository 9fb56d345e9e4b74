"""The COS layer driven by the official cos-python-sdk-v5 (qcloud_cos signs, vodlocal verifies)."""

from __future__ import annotations

import hashlib
import os
import time
from typing import Any

import pytest
import requests
from qcloud_cos.cos_exception import CosServiceError

from tests.vodlocal.conftest import SECRET_ID, SECRET_KEY, SigningStub, apply_body, cos_client, ugc
from vodlocal import Handle

MiB = 1 << 20


def apply(emulator: Handle, signing: SigningStub, size: int = 0) -> dict[str, Any]:
    reply = ugc(emulator, "ApplyUploadUGC", apply_body(signing.sign(signing.new_upload())["signature"], size))
    assert reply["code"] == 0, reply
    data: dict[str, Any] = reply["data"]
    data["bucket"] = f"{data['storageBucket']}-{data['storageAppId']}"
    data["key"] = data["video"]["storagePath"].lstrip("/")
    return data


def temp_client(emulator: Handle, data: dict[str, Any], secret_key: str | None = None) -> Any:
    cert = data["tempCertificate"]
    return cos_client(
        emulator, data["storageRegionV5"], cert["secretId"], secret_key or cert["secretKey"], cert["token"]
    )


def test_put_get_head_range_with_temporary_credentials(emulator: Handle, signing: SigningStub) -> None:
    data = apply(emulator, signing)
    client = temp_client(emulator, data)
    body = os.urandom(300_000)
    put = client.put_object(Bucket=data["bucket"], Key=data["key"], Body=body)
    assert put["ETag"] == f'"{hashlib.md5(body, usedforsecurity=False).hexdigest()}"'
    assert client.get_object(Bucket=data["bucket"], Key=data["key"])["Body"].get_raw_stream().read() == body
    ranged = client.get_object(Bucket=data["bucket"], Key=data["key"], Range="bytes=1000-1999")
    assert ranged["Body"].get_raw_stream().read() == body[1000:2000]
    assert ranged["Content-Range"] == f"bytes 1000-1999/{len(body)}"
    head = client.head_object(Bucket=data["bucket"], Key=data["key"])
    assert int(head["Content-Length"]) == len(body)
    # What the Host header carried really was the virtual-hosted bucket domain.
    puts = [r for r in emulator.requests() if r.get("op") == "PutObject"]
    assert puts[0]["host"] == f"{data['bucket']}.cos.{data['storageRegionV5']}.myqcloud.com"
    # The public playback path serves the same bytes with Range support.
    url = f"{emulator.url}/_cos/{data['bucket']}/{data['key']}"
    assert requests.get(url, headers={"Range": "bytes=-10"}, timeout=10).content == body[-10:]


def test_multipart_round_trip_and_commit(emulator: Handle, signing: SigningStub) -> None:
    data = apply(emulator, signing, size=2 * MiB + 10)
    client = temp_client(emulator, data)
    bucket, key = data["bucket"], data["key"]
    chunks = [os.urandom(MiB), os.urandom(MiB), os.urandom(10)]
    upload_id = client.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]
    listed = client.list_multipart_uploads(Bucket=bucket, Prefix=key)
    assert [u["UploadId"] for u in listed["Upload"]] == [upload_id]
    etags = []
    for number, chunk in reversed(list(enumerate(chunks, 1))):  # out of order, like the Web SDK
        etag = client.upload_part(Bucket=bucket, Key=key, Body=chunk, PartNumber=number, UploadId=upload_id)["ETag"]
        assert etag == f'"{hashlib.md5(chunk, usedforsecurity=False).hexdigest()}"'
        etags.append((number, etag))
    parts = client.list_parts(Bucket=bucket, Key=key, UploadId=upload_id)["Part"]
    assert [int(p["PartNumber"]) for p in parts] == [1, 2, 3]
    client.complete_multipart_upload(
        Bucket=bucket,
        Key=key,
        UploadId=upload_id,
        MultipartUpload={"Part": [{"PartNumber": n, "ETag": e} for n, e in sorted(etags)]},
    )
    whole = b"".join(chunks)
    assert client.get_object(Bucket=bucket, Key=key)["Body"].get_raw_stream().read() == whole
    # abort another upload
    other = client.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]
    client.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=other)
    assert "Upload" not in client.list_multipart_uploads(Bucket=bucket, Prefix=key)
    commit = ugc(
        emulator,
        "CommitUploadUGC",
        {"signature": signing.sign("x")["signature"], "vodSessionKey": data["vodSessionKey"]},
    )
    assert commit["code"] == 0, commit
    got = requests.get(commit["data"]["video"]["url"], timeout=10).content
    assert hashlib.md5(got, usedforsecurity=False).hexdigest() == hashlib.md5(whole, usedforsecurity=False).hexdigest()


def test_permanent_api_key_and_tencentcos_host(emulator: Handle, signing: SigningStub) -> None:
    data = apply(emulator, signing)
    client = cos_client(emulator, data["storageRegionV5"], SECRET_ID, SECRET_KEY)
    client.put_object(Bucket=data["bucket"], Key="any/where.txt", Body=b"hello")
    resp = requests.get(
        f"{emulator.url}/any/where.txt",
        timeout=10,
        headers={"Host": f"{data['bucket']}.cos.{data['storageRegionV5']}.tencentcos.cn"},
    )
    assert resp.content == b"hello"


def _service_error(call: Any) -> CosServiceError:
    with pytest.raises(CosServiceError) as info:
        call()
    return info.value


def test_bad_signature_is_rejected(emulator: Handle, signing: SigningStub) -> None:
    data = apply(emulator, signing)
    client = temp_client(emulator, data, secret_key="not-the-issued-key")
    err = _service_error(lambda: client.put_object(Bucket=data["bucket"], Key=data["key"], Body=b"x"))
    assert err.get_status_code() == 403
    assert err.get_error_code() == "SignatureDoesNotMatch"
    # No Authorization at all on a write: AccessDenied, as XML.
    resp = requests.put(
        f"{emulator.url}/{data['key']}",
        data=b"x",
        timeout=10,
        headers={"Host": f"{data['bucket']}.cos.{data['storageRegionV5']}.myqcloud.com"},
    )
    assert resp.status_code == 403 and resp.headers["Content-Type"] == "application/xml"
    assert "<Code>AccessDenied</Code>" in resp.text


def test_expired_temporary_credentials(emulator: Handle, signing: SigningStub) -> None:
    data = apply(emulator, signing)
    emulator.app.store.execute(
        "UPDATE credentials SET expires = ? WHERE secret_id = ?",
        (int(time.time()) - 5, data["tempCertificate"]["secretId"]),
    )
    client = temp_client(emulator, data)
    err = _service_error(lambda: client.put_object(Bucket=data["bucket"], Key=data["key"], Body=b"x"))
    assert (err.get_status_code(), err.get_error_code()) == (403, "AccessDenied")
    assert "expired" in err.get_error_msg()


def test_temporary_credentials_are_scoped(emulator: Handle, signing: SigningStub) -> None:
    data = apply(emulator, signing)
    client = temp_client(emulator, data)
    err = _service_error(lambda: client.put_object(Bucket=data["bucket"], Key="elsewhere/x.mp4", Body=b"x"))
    assert (err.get_status_code(), err.get_error_code()) == (403, "AccessDenied")
    wrong_token = cos_client(
        emulator,
        data["storageRegionV5"],
        data["tempCertificate"]["secretId"],
        data["tempCertificate"]["secretKey"],
        "forged-token",
    )
    err = _service_error(lambda: wrong_token.put_object(Bucket=data["bucket"], Key=data["key"], Body=b"x"))
    assert err.get_status_code() == 403
