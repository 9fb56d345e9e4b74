"""The COS layer driven by the official cos-python-sdk-v5 (qcloud_cos signs, vodlocal verifies)."""

from __future__ import annotations

import base64
import hashlib
import os
import re
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import requests
from qcloud_cos import CosConfig, CosS3Client
from qcloud_cos.cos_auth import CosS3Auth
from qcloud_cos.cos_exception import CosServiceError

import vodlocal.cos
from tests.vodlocal.conftest import SECRET_ID, SECRET_KEY, SigningStub, apply_body, cos_client, ugc
from tests.waiting import wait_until
from vodlocal import Handle
from vodlocal.store import read_file

MiB = 1 << 20


def apply(emulator: Handle, signing: SigningStub, size: int = 0) -> dict[str, Any]:
    intent = signing.new_upload()
    reply = ugc(emulator, "ApplyUploadUGC", apply_body(signing.sign(intent)["signature"], size))
    assert reply["code"] == 0, reply
    data: dict[str, Any] = {**reply["data"], "intent": intent}
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
        {"signature": signing.sign(data["intent"])["signature"], "vodSessionKey": data["vodSessionKey"]},
    )
    assert commit["code"] == 0, commit
    got = requests.get(commit["data"]["video"]["url"], timeout=10).content
    assert hashlib.md5(got, usedforsecurity=False).hexdigest() == hashlib.md5(whole, usedforsecurity=False).hexdigest()


def test_permanent_api_key_and_tencentcos_host(emulator: Handle, signing: SigningStub) -> None:
    data = apply(emulator, signing)
    client = cos_client(emulator, data["storageRegionV5"], SECRET_ID, SECRET_KEY)
    client.put_object(Bucket=data["bucket"], Key="any/where.txt", Body=b"hello")
    host = f"{data['bucket']}.cos.{data['storageRegionV5']}.tencentcos.cn"
    tencentcos = CosS3Client(
        CosConfig(
            Region=data["storageRegionV5"],
            SecretId=SECRET_ID,
            SecretKey=SECRET_KEY,
            Scheme="http",
            Domain=host,
            Proxies={"http": emulator.url},
        ),
        retry=1,
    )
    assert tencentcos.get_object(Bucket=data["bucket"], Key="any/where.txt")["Body"].get_raw_stream().read() == b"hello"
    assert emulator.requests("GetObject")[-1]["host"] == host


def test_unsigned_requests_only_read_through_the_playback_route(emulator: Handle, signing: SigningStub) -> None:
    data = apply(emulator, signing)
    client = cos_client(emulator, data["storageRegionV5"], SECRET_ID, SECRET_KEY)
    client.put_object(Bucket=data["bucket"], Key="pub/x.txt", Body=b"hello")
    for host_suffix in ("myqcloud.com", "tencentcos.cn"):
        host = f"{data['bucket']}.cos.{data['storageRegionV5']}.{host_suffix}"
        for method in ("GET", "HEAD"):
            for path in ("/pub/x.txt", "/"):
                resp = requests.request(method, f"{emulator.url}{path}", headers={"Host": host}, timeout=10)
                assert resp.status_code == 403, (method, host, path)
                if method == "GET":
                    assert "<Code>AccessDenied</Code>" in resp.text
    assert requests.get(f"{emulator.url}/_cos/{data['bucket']}/pub/x.txt", timeout=10).content == b"hello"
    assert requests.head(f"{emulator.url}/_cos/{data['bucket']}/pub/x.txt", timeout=10).status_code == 200
    # HeadBucket, signed: the bucket exists; a bucket that does not is NoSuchBucket.
    client.head_bucket(Bucket=data["bucket"])
    err = _service_error(lambda: client.head_bucket(Bucket="nosuchbucket-1500000001"))
    assert err.get_status_code() == 404
    assert emulator.requests("HeadBucket")[-1]["error"] == "NoSuchBucket"


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


def test_rejected_upload_part_keeps_the_stored_part(emulator: Handle, signing: SigningStub) -> None:
    data = apply(emulator, signing, size=20)
    client = temp_client(emulator, data)
    bucket, key = data["bucket"], data["key"]
    upload_id = client.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]
    good = os.urandom(10)
    etag = client.upload_part(Bucket=bucket, Key=key, Body=good, PartNumber=1, UploadId=upload_id)["ETag"]
    bad_md5 = base64.b64encode(hashlib.md5(b"something else", usedforsecurity=False).digest()).decode()
    err = _service_error(
        lambda: client.upload_part(
            Bucket=bucket, Key=key, Body=os.urandom(10), PartNumber=1, UploadId=upload_id, ContentMD5=bad_md5
        )
    )
    assert (err.get_status_code(), err.get_error_code()) == (400, "BadDigest")
    parts = client.list_parts(Bucket=bucket, Key=key, UploadId=upload_id)["Part"]
    assert [p["ETag"] for p in parts] == [etag]
    client.complete_multipart_upload(
        Bucket=bucket, Key=key, UploadId=upload_id, MultipartUpload={"Part": [{"PartNumber": 1, "ETag": etag}]}
    )
    assert client.get_object(Bucket=bucket, Key=key)["Body"].get_raw_stream().read() == good
    assert list(emulator.app.store.tmp.iterdir()) == []


def test_upload_part_racing_an_abort_is_no_such_upload(
    emulator: Handle, signing: SigningStub, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = apply(emulator, signing, size=10)
    client = temp_client(emulator, data)
    bucket, key = data["bucket"], data["key"]
    upload_id = client.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]
    client.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id)
    # Simulate the abort landing while the part body streams in: the up-front existence check passes.
    monkeypatch.setattr(emulator.app.cos, "_upload", lambda *args: None)
    err = _service_error(
        lambda: client.upload_part(Bucket=bucket, Key=key, Body=b"0123456789", PartNumber=1, UploadId=upload_id)
    )
    assert (err.get_status_code(), err.get_error_code()) == (404, "NoSuchUpload")
    store = emulator.app.store
    assert store.query("SELECT * FROM parts WHERE upload_id = ?", (upload_id,)) == []
    assert not (store.parts / upload_id).exists()
    assert list(store.tmp.iterdir()) == []


def test_concurrent_upload_parts_keep_file_and_etag_together(emulator: Handle, signing: SigningStub) -> None:
    data = apply(emulator, signing, size=MiB)
    client = temp_client(emulator, data)
    bucket, key = data["bucket"], data["key"]
    upload_id = client.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]
    bodies = [os.urandom(256 * 1024) for _ in range(8)]
    with ThreadPoolExecutor(len(bodies)) as pool:
        list(
            pool.map(
                lambda body: client.upload_part(Bucket=bucket, Key=key, Body=body, PartNumber=1, UploadId=upload_id),
                bodies,
            )
        )
    store = emulator.app.store
    (row,) = store.query("SELECT etag FROM parts WHERE upload_id = ?", (upload_id,))
    stored = store.part_path(upload_id, 1).read_bytes()
    assert row["etag"] == f'"{hashlib.md5(stored, usedforsecurity=False).hexdigest()}"'


def test_bucket_through_the_wrong_region_host_is_no_such_bucket(emulator: Handle, signing: SigningStub) -> None:
    data = apply(emulator, signing)
    assert data["storageRegionV5"] != "ap-shanghai"
    client = temp_client(emulator, data)
    client.put_object(Bucket=data["bucket"], Key=data["key"], Body=b"x")
    for wrong in (
        temp_client(emulator, {**data, "storageRegionV5": "ap-shanghai"}),
        cos_client(emulator, "ap-shanghai", SECRET_ID, SECRET_KEY),
    ):
        for method, extra in (
            (wrong.get_object, {}),
            (wrong.put_object, {"Body": b"y"}),
            (wrong.create_multipart_upload, {}),
        ):
            err = _service_error(partial(method, Bucket=data["bucket"], Key=data["key"], **extra))
            assert (err.get_status_code(), err.get_error_code()) == (404, "NoSuchBucket")
    assert client.get_object(Bucket=data["bucket"], Key=data["key"])["Body"].get_raw_stream().read() == b"x"


def _signed(
    emulator: Handle,
    data: dict[str, Any],
    method: str,
    key: str,
    params: dict[str, str],
    body: bytes = b"",
    headers: dict[str, Any] | None = None,
    session: requests.Session | None = None,
) -> requests.Response:
    """A request signed with the official CosS3Auth (permanent key) for the real bucket host."""
    conf = CosConfig(Region=data["storageRegionV5"], SecretId=SECRET_ID, SecretKey=SECRET_KEY, Scheme="http")
    return (session or requests.Session()).request(
        method,
        f"http://{data['bucket']}.cos.{data['storageRegionV5']}.myqcloud.com/{key}",
        params=params,
        data=body,
        headers=headers or {},
        auth=CosS3Auth(conf, key, params=params),
        proxies={"http": emulator.url},
        timeout=30,
    )


def test_malformed_complete_multipart_upload_is_400(emulator: Handle, signing: SigningStub) -> None:
    data = apply(emulator, signing)
    client = cos_client(emulator, data["storageRegionV5"], SECRET_ID, SECRET_KEY)
    bucket, key = data["bucket"], data["key"]
    upload_id = client.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]
    etag = client.upload_part(Bucket=bucket, Key=key, Body=b"abc", PartNumber=1, UploadId=upload_id)["ETag"]
    part = f"<Part><PartNumber>1</PartNumber><ETag>{etag}</ETag></Part>"
    cases = [
        (b"<CompleteMultipartUpload><Part>", "MalformedXML"),
        (b"<CompleteMultipartUpload><Part><PartNumber>x</PartNumber></Part></CompleteMultipartUpload>", "MalformedXML"),
        (f"<CompleteMultipartUpload>{part * 200_000}</CompleteMultipartUpload>".encode(), "EntityTooLarge"),
    ]
    session = requests.Session()  # one keep-alive connection throughout
    for body, code in cases:
        resp = _signed(emulator, data, "POST", key, {"uploadId": upload_id}, body, session=session)
        assert resp.status_code == 400 and f"<Code>{code}</Code>" in resp.text, resp.text
    # The connection is still in sync (the unread rest of a too-large body was skipped): the upload completes.
    good = f"<CompleteMultipartUpload>{part}</CompleteMultipartUpload>".encode()
    assert _signed(emulator, data, "POST", key, {"uploadId": upload_id}, good, session=session).status_code == 200
    assert client.get_object(Bucket=bucket, Key=key)["Body"].get_raw_stream().read() == b"abc"


def test_non_ascii_token_and_signature_are_403(emulator: Handle, signing: SigningStub) -> None:
    data = apply(emulator, signing)
    cert = data["tempCertificate"]
    now = int(time.time())
    auth = f"q-sign-algorithm=sha1&q-ak={cert['secretId']}&q-sign-time={now};{now + 60}&q-key-time={now};{now + 60}"
    host = f"{data['bucket']}.cos.{data['storageRegionV5']}.myqcloud.com"
    resp = requests.get(
        f"{emulator.url}/{data['key']}",
        headers={"Host": host, "Authorization": auth, "x-cos-security-token": "t\u00f6ken".encode("latin-1")},
        timeout=10,
    )
    assert resp.status_code == 403 and "<Code>InvalidAccessKeyId</Code>" in resp.text
    conf = CosConfig(Region=data["storageRegionV5"], SecretId=SECRET_ID, SecretKey=SECRET_KEY, Scheme="http")
    prepared = requests.Request("GET", f"http://{host}/{data['key']}", auth=CosS3Auth(conf, data["key"])).prepare()
    forged = re.sub(r"q-signature=[0-9a-f]+", "q-signature=\u00e9", prepared.headers["Authorization"])
    resp = requests.get(
        f"{emulator.url}/{data['key']}",
        headers={"Host": host, "Authorization": forged.encode("latin-1")},
        timeout=10,
    )
    assert resp.status_code == 403 and "<Code>SignatureDoesNotMatch</Code>" in resp.text


def test_get_object_racing_a_delete_is_404(emulator: Handle, signing: SigningStub) -> None:
    data = apply(emulator, signing)
    client = cos_client(emulator, data["storageRegionV5"], SECRET_ID, SECRET_KEY)
    client.put_object(Bucket=data["bucket"], Key=data["key"], Body=b"hello")
    info = emulator.app.cos.object_info(data["bucket"], data["key"])
    assert info is not None
    # The delete lands after GetObject read the row but before it opened the blob.
    emulator.app.store.blob_path(info["blob"]).unlink()
    url = f"{emulator.url}/_cos/{data['bucket']}/{data['key']}"
    resp = requests.get(url, timeout=10)
    assert resp.status_code == 404 and "<Code>NoSuchKey</Code>" in resp.text
    err = _service_error(lambda: client.get_object(Bucket=data["bucket"], Key=data["key"]))
    assert (err.get_status_code(), err.get_error_code()) == (404, "NoSuchKey")


def two_part_upload(emulator: Handle, signing: SigningStub) -> tuple[Any, dict[str, Any], bytes, Callable[[], Any]]:
    """A multipart upload with both parts stored: the client, the Apply data, the bytes, and its Complete."""
    data = apply(emulator, signing, size=MiB + 10)
    client = temp_client(emulator, data)
    bucket, key = data["bucket"], data["key"]
    upload_id = client.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]
    chunks = [os.urandom(MiB), os.urandom(10)]
    parts = [
        {
            "PartNumber": n,
            "ETag": client.upload_part(Bucket=bucket, Key=key, Body=c, PartNumber=n, UploadId=upload_id)["ETag"],
        }
        for n, c in enumerate(chunks, 1)
    ]
    data["uploadId"] = upload_id
    complete = partial(
        client.complete_multipart_upload, Bucket=bucket, Key=key, UploadId=upload_id, MultipartUpload={"Part": parts}
    )
    return client, data, b"".join(chunks), complete


def test_a_complete_racing_another_waits_for_it_then_finds_the_upload_gone(
    emulator: Handle, signing: SigningStub, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What a resumed client meets when its killed predecessor's Complete still runs: its own Complete waits for
    that one, then gets COS's answer to a Complete of a completed upload (404 NoSuchUpload, in COS's XML),
    and the object is whole. Before: the second read the parts the first removed, and got a JSON 500."""
    client, data, whole, complete = two_part_upload(emulator, signing)
    holding, release = threading.Event(), threading.Event()

    def held_read(path: Path, *args: Any) -> Iterator[bytes]:
        if not holding.is_set():  # the first Complete stops while it reads its first part
            holding.set()
            release.wait(30)
        return read_file(path, *args)

    monkeypatch.setattr(vodlocal.cos, "read_file", held_read)
    locks = emulator.app.cos.upload_locks
    with ThreadPoolExecutor(2) as pool:
        first = pool.submit(complete)
        assert holding.wait(30)
        second = pool.submit(complete)
        # The second waits for the first.
        wait_until(lambda: locks.users(data["uploadId"]) >= 2, "the second Complete never reached the upload's lock")
        release.set()
        etag = first.result()["ETag"]
        with pytest.raises(CosServiceError) as refused:
            second.result()
    with pytest.raises(CosServiceError) as retried:  # and a retry long after: the same answer
        complete()
    for answer in (refused.value, retried.value):
        assert (answer.get_status_code(), answer.get_error_code()) == (404, "NoSuchUpload")
        assert answer.get_request_id() and data["key"] in answer.get_resource_location()
    head = client.head_object(Bucket=data["bucket"], Key=data["key"])
    assert head["ETag"] == etag and int(head["Content-Length"]) == len(whole)
    assert client.get_object(Bucket=data["bucket"], Key=data["key"])["Body"].get_raw_stream().read() == whole
    assert [r["status"] for r in emulator.requests("CompleteMultipartUpload")] == [200, 404, 404]


def test_an_unexpected_failure_is_cos_xml_and_leaves_the_upload_whole(
    emulator: Handle, signing: SigningStub, monkeypatch: pytest.MonkeyPatch
) -> None:
    client, data, whole, complete = two_part_upload(emulator, signing)

    def disk_full(*_: Any) -> tuple[int, str]:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(emulator.app.cos.store, "write_file", disk_full)
    with pytest.raises(CosServiceError) as failed:
        complete()
    assert (failed.value.get_status_code(), failed.value.get_error_code()) == (500, "InternalError")
    assert failed.value.get_request_id() and "No space" not in str(failed.value)  # no internals leak out
    parts = client.list_parts(Bucket=data["bucket"], Key=data["key"], UploadId=data["uploadId"])["Part"]
    assert len(parts) == 2 and emulator.app.cos.object_info(data["bucket"], data["key"]) is None
    monkeypatch.undo()
    complete()  # the client's retry, once the disk has room again
    assert client.get_object(Bucket=data["bucket"], Key=data["key"])["Body"].get_raw_stream().read() == whole
