"""COS XML object API (the subset VOD uploads and media playback use) with COS v5 request signing.

Signatures are recomputed with the official ``qcloud_cos.cos_auth.CosS3Auth`` (cos-python-sdk-v5): the
request's declared sign time is pinned on a per-thread clock handed to that module, so the official
code produces the exact string-to-sign for the received method, path, parameters and headers.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import os
import re
import secrets
import threading
import time
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from email.utils import formatdate
from types import ModuleType
from typing import Any
from urllib.parse import parse_qsl

from qcloud_cos import cos_auth

from vodlocal.config import Config
from vodlocal.httpkit import BodyTooLarge, MalformedBody, Request, Response, xml_document
from vodlocal.store import Store, read_file, read_open

log = logging.getLogger("vodlocal.cos")

MIN_PART_SIZE = 1 << 20
MAX_PART_NUMBER = 10_000
MAX_COMPLETE_BODY = 4 << 20  # 10,000 <Part> entries take about 1 MiB

REGION_ABBREVIATIONS = {
    "ap-guangzhou": "gz",
    "ap-shanghai": "sh",
    "ap-beijing": "bj",
    "ap-chongqing": "cq",
    "ap-chengdu": "cd",
    "ap-nanjing": "nj",
    "ap-beijing-1": "tj",
    "ap-hongkong": "hk",
    "ap-singapore": "sg",
    "ap-tokyo": "jp",
    "ap-seoul": "kr",
    "ap-bangkok": "th",
    "ap-jakarta": "jkt",
    "ap-taipei": "tpe",
    "na-siliconvalley": "usw",
    "na-ashburn": "use",
    "sa-saopaulo": "sao",
    "eu-frankfurt": "de",
    "ap-mumbai": "in",
    "na-toronto": "ca",
}


def vod_bucket_name(region: str, app_id: int) -> str:
    """The emulated VOD storage bucket of ``region`` (without the ``-<appid>`` suffix).

    These are the only buckets that exist: one per region.
    """
    tag = hashlib.sha1(f"{region}:{app_id}".encode(), usedforsecurity=False).hexdigest()[:8]
    return f"{tag}vod{REGION_ABBREVIATIONS.get(region, 'xx')}{app_id}"


class _PinnedClock:
    """Replaces ``time`` inside qcloud_cos.cos_auth: real time unless the current thread pins one."""

    def __init__(self, real: ModuleType) -> None:
        self._real = real
        self._local = threading.local()

    def time(self) -> float:
        pinned: float | None = getattr(self._local, "now", None)
        return self._real.time() if pinned is None else pinned

    def pin(self, now: float | None) -> None:
        self._local.now = now

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


_CLOCK = _PinnedClock(time)
cos_auth.time = _CLOCK


class CosError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.status = status
        self.code = code
        self.message = message


@dataclass(frozen=True)
class Credential:
    secret_id: str
    secret_key: str
    token: str | None  # None for permanent API keys
    expires: int | None
    bucket: str | None  # scope: None = any bucket
    prefix: str


class _Conf:
    """The attributes of qcloud_cos.CosConfig that CosS3Auth reads."""

    def __init__(self, secret_id: str, secret_key: str) -> None:
        self._secret_id = secret_id
        self._secret_key = secret_key
        self._credential_inst = None
        self._anonymous = False
        self._sign_params = True
        self._sign_host = False


class _SignedRequest:
    def __init__(self, method: str, url: str, headers: dict[str, str]) -> None:
        self.method = method
        self.url = url
        self.headers = headers


def parse_authorization(value: str) -> dict[str, str]:
    return dict(parse_qsl(value, keep_blank_values=True))


def expected_signature(req: Request, key: str, auth: dict[str, str], secret_key: str) -> str:
    """The q-signature the official SDK computes for this request and the declared sign time/lists."""
    sign_time = auth.get("q-sign-time", "")
    if auth.get("q-key-time") != sign_time or not re.fullmatch(r"\d+;\d+", sign_time):
        raise CosError(403, "AccessDenied", "q-sign-time/q-key-time are missing or differ")
    start, end = (int(x) for x in sign_time.split(";"))
    header_names = [h for h in auth.get("q-header-list", "").split(";") if h]
    param_names = [p for p in auth.get("q-url-param-list", "").split(";") if p]
    headers: dict[str, str] = {}
    for name in header_names:
        if name not in req.headers:
            raise CosError(403, "AccessDenied", f"signed header {name!r} is missing from the request")
        headers[name] = req.headers[name]
    query = {k.lower(): v for k, v in req.query}
    params: dict[str, str] = {}
    for name in param_names:
        if name not in query:
            raise CosError(403, "AccessDenied", f"signed parameter {name!r} is missing from the request")
        params[name] = query[name]
    signer = cos_auth.CosS3Auth(_Conf(auth.get("q-ak", ""), secret_key), key, params, end - start - 60)
    signed = _SignedRequest(req.method, f"http://{req.host}/", headers)
    _CLOCK.pin(start + 60)
    try:
        signer(signed)
    finally:
        _CLOCK.pin(None)
    produced = parse_authorization(signed.headers["Authorization"])
    if produced["q-header-list"] != ";".join(sorted(header_names)):
        raise CosError(403, "AccessDenied", "vodlocal only verifies the headers COS SDKs sign")
    return produced["q-signature"]


class KeyedLocks:
    """One lock per key, kept only while a thread holds or waits for it."""

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._locks: dict[str, tuple[threading.Lock, int]] = {}

    @contextmanager
    def hold(self, key: str) -> Iterator[None]:
        with self._guard:
            lock, users = self._locks.get(key, (threading.Lock(), 0))
            self._locks[key] = (lock, users + 1)
        try:
            with lock:
                yield
        finally:
            with self._guard:
                lock, users = self._locks[key]
                if users == 1:
                    del self._locks[key]
                else:
                    self._locks[key] = (lock, users - 1)

    def users(self, key: str) -> int:
        """Threads holding or waiting for ``key``'s lock."""
        with self._guard:
            return self._locks.get(key, (None, 0))[1]


class CosService:
    def __init__(self, store: Store, config: Config) -> None:
        self.store = store
        self.config = config
        # What changes a multipart upload's parts (UploadPart's swap, Complete, Abort) takes its upload's lock: a
        # second Complete (a client's retry, or a resumed client's while its killed predecessor's still assembles)
        # waits for the first, then finds the upload gone (NoSuchUpload) and the object in place.
        self.upload_locks = KeyedLocks()

    # --- credentials -----------------------------------------------------------------------------
    def issue_credentials(self, bucket: str, prefix: str, ttl: int) -> dict[str, Any]:
        now = int(time.time())
        cred = {
            "secretId": "AKIDvodlocal" + secrets.token_hex(12),
            "secretKey": secrets.token_urlsafe(24),
            "token": secrets.token_urlsafe(48),
            "expiredTime": now + ttl,
        }
        self.store.execute(
            "INSERT INTO credentials VALUES (?,?,?,?,?,?)",
            (cred["secretId"], cred["secretKey"], cred["token"], cred["expiredTime"], bucket, prefix),
        )
        self.store.execute("DELETE FROM credentials WHERE expires < ?", (now - 86_400,))
        return cred

    def _credential(self, secret_id: str) -> Credential | None:
        if secret_id in self.config.secrets:
            return Credential(secret_id, self.config.secrets[secret_id], None, None, None, "")
        row = self.store.one("SELECT * FROM credentials WHERE secret_id = ?", (secret_id,))
        if row is None:
            return None
        return Credential(
            row["secret_id"], row["secret_key"], row["token"], row["expires"], row["bucket"], row["prefix"]
        )

    def authenticate(self, req: Request, bucket: str, key: str, scope_key: str) -> None:
        header = req.header("authorization")
        if not header:
            raise CosError(403, "AccessDenied", "Access Denied.")
        auth = parse_authorization(header)
        if auth.get("q-sign-algorithm") != "sha1":
            raise CosError(403, "AccessDenied", "q-sign-algorithm must be sha1")
        cred = self._credential(auth.get("q-ak", ""))
        if cred is None:
            raise CosError(403, "InvalidAccessKeyId", "The access key Id format you provided is invalid.")
        now = int(time.time())
        if cred.token is not None:
            if not secrets.compare_digest(_bytes(req.header("x-cos-security-token")), _bytes(cred.token)):
                raise CosError(403, "InvalidAccessKeyId", "x-cos-security-token does not match the temporary key")
            if cred.expires is not None and now > cred.expires:
                raise CosError(403, "AccessDenied", "Request has expired: the temporary credentials expired")
        start, _, end = auth.get("q-sign-time", "0;0").partition(";")
        if not (start.isdigit() and end.isdigit()):
            raise CosError(403, "AccessDenied", "q-sign-time is malformed")
        if now > int(end):
            raise CosError(403, "AccessDenied", "Request has expired")
        if now < int(start) - 900:
            raise CosError(
                403,
                "RequestTimeTooSkewed",
                "The difference between the request time and the server's time is too large.",
            )
        expected = expected_signature(req, key, auth, cred.secret_key)
        if not secrets.compare_digest(_bytes(expected), _bytes(auth.get("q-signature", ""))):
            raise CosError(403, "SignatureDoesNotMatch", "The Signature you specified is invalid.")
        if cred.bucket is not None and (cred.bucket != bucket or not scope_key.startswith(cred.prefix)):
            raise CosError(403, "AccessDenied", "the temporary credentials do not cover this resource")

    # --- dispatch --------------------------------------------------------------------------------
    def handle(self, req: Request, bucket: str, key: str, region: str | None = None) -> Response:
        """``region`` is the one named by a virtual-hosted host; None for the path-style ``/_cos/`` route."""
        try:
            return self._dispatch(req, bucket, key, region)
        except CosError as exc:
            req.log["error"] = exc.code
            return error_response(exc, req)
        except (ConnectionError, MalformedBody):
            raise  # the client went away, or its body cannot be read: the server answers for any service
        except Exception:
            # Whatever went wrong, a COS client gets COS's XML error (its SDKs parse nothing else).
            log.exception("COS %s %s failed", req.method, req.raw_path)
            req.log["error"] = "InternalError"
            return error_response(
                CosError(500, "InternalError", "We encountered an internal error. Please try again."), req
            )

    def _bucket_exists(self, bucket: str, region: str | None) -> bool:
        """Only the per-region VOD buckets exist; a path-style request (no region) may name any region's."""
        app_id = self.config.app_id
        regions = [region] if region is not None else [*REGION_ABBREVIATIONS, self.config.region]
        return any(bucket == f"{vod_bucket_name(r, app_id)}-{app_id}" for r in regions)

    def _dispatch(self, req: Request, bucket: str, key: str, region: str | None) -> Response:
        m = req.method
        # Anonymous reads are only for the path-style /_cos/ playback route (MediaUrl/CoverUrl), never for
        # the virtual-hosted bucket hosts, which, like a private COS bucket, want every request signed.
        public_read = (
            region is None and m in ("GET", "HEAD") and not req.header("authorization") and bool(key) and not req.query
        )
        if not key and m == "HEAD":
            req.log["op"] = "HeadBucket"
        if not public_read:
            scope_key = key or (req.arg("prefix") or "")
            self.authenticate(req, bucket, key, scope_key)
        if (region is not None or not key) and not self._bucket_exists(bucket, region):
            raise CosError(404, "NoSuchBucket", "The specified bucket does not exist.")
        if not key and m == "HEAD":
            return Response(200, {"x-cos-request-id": request_id()})
        if not key:
            if m == "GET" and req.has_arg("uploads"):
                return self.list_multipart_uploads(req, bucket)
            raise CosError(501, "NotImplemented", f"bucket operation {m} is not emulated")
        if m == "POST" and req.has_arg("uploads"):
            return self.initiate(req, bucket, key)
        upload_id = req.arg("uploadId")
        if upload_id is not None:
            if m == "PUT" and req.has_arg("partNumber"):
                return self.upload_part(req, bucket, key, upload_id)
            if m == "GET":
                return self.list_parts(req, bucket, key, upload_id)
            if m == "POST":
                return self.complete(req, bucket, key, upload_id)
            if m == "DELETE":
                return self.abort(req, bucket, key, upload_id)
        if m == "PUT":
            return self.put_object(req, bucket, key)
        if m in ("GET", "HEAD"):
            return self.get_object(req, bucket, key)
        if m == "DELETE":
            req.log["op"] = "DeleteObject"
            self.delete_object(bucket, key)
            return Response(204, {"x-cos-request-id": request_id()})
        raise CosError(405, "MethodNotAllowed", f"{m} is not allowed here")

    # --- multipart -------------------------------------------------------------------------------
    def list_multipart_uploads(self, req: Request, bucket: str) -> Response:
        req.log["op"] = "ListMultipartUploads"
        prefix = req.arg("prefix") or ""
        rows = self.store.query(
            "SELECT * FROM uploads WHERE bucket = ? AND substr(key, 1, ?) = ? ORDER BY key, initiated",
            (bucket, len(prefix), prefix),
        )
        uploads = [
            (
                "Upload",
                (
                    ("Key", r["key"]),
                    ("UploadId", r["upload_id"]),
                    ("StorageClass", "STANDARD"),
                    ("Initiated", iso(r["initiated"])),
                ),
            )
            for r in rows
        ]
        return Response.xml(
            "ListMultipartUploadsResult",
            [
                ("Bucket", bucket),
                ("Encoding-Type", ""),
                ("KeyMarker", ""),
                ("UploadIdMarker", ""),
                ("NextKeyMarker", ""),
                ("NextUploadIdMarker", ""),
                ("MaxUploads", 1000),
                ("IsTruncated", False),
                ("Prefix", prefix),
                ("Delimiter", ""),
                *uploads,
            ],
        )

    def initiate(self, req: Request, bucket: str, key: str) -> Response:
        req.log["op"] = "InitiateMultipartUpload"
        req.body.drain()
        upload_id = f"{int(time.time())}{uuid.uuid4().hex}"
        self.store.execute(
            "INSERT INTO uploads VALUES (?,?,?,?,?)",
            (upload_id, bucket, key, req.header("content-type", "application/octet-stream"), time.time()),
        )
        return Response.xml(
            "InitiateMultipartUploadResult", [("Bucket", bucket), ("Key", key), ("UploadId", upload_id)]
        )

    def _upload(self, bucket: str, key: str, upload_id: str) -> None:
        row = self.store.one("SELECT key, bucket FROM uploads WHERE upload_id = ?", (upload_id,))
        if row is None or row["key"] != key or row["bucket"] != bucket:
            raise CosError(404, "NoSuchUpload", "The specified upload does not exist.")

    def upload_part(self, req: Request, bucket: str, key: str, upload_id: str) -> Response:
        number = int_arg(req.arg("partNumber"))
        req.log.update(op="UploadPart", partNumber=number)
        if not 1 <= number <= MAX_PART_NUMBER:
            raise CosError(400, "InvalidArgument", "partNumber must be 1..10000")
        self._upload(bucket, key, upload_id)
        tmp, size, md5 = self.store.write_temp(req.body.iter_chunks())
        try:
            check_content_md5(req, md5)  # a rejected part never touches the stored one
            etag = f'"{md5}"'
            dest = self.store.part_path(upload_id, number)
            # File swap and row upsert in one write transaction: concurrent UploadParts of the same part
            # serialise here, so the stored file and its ETag row always come from the same request, and
            # an upload aborted/completed while the body streamed in is seen (its rows are already gone).
            with self.upload_locks.hold(upload_id), self.store.transaction() as db:
                row = db.execute("SELECT key, bucket FROM uploads WHERE upload_id = ?", (upload_id,)).fetchone()
                if row is None or row["key"] != key or row["bucket"] != bucket:
                    raise CosError(404, "NoSuchUpload", "The specified upload does not exist.")
                dest.parent.mkdir(parents=True, exist_ok=True)
                os.replace(tmp, dest)
                db.execute(
                    "INSERT OR REPLACE INTO parts VALUES (?,?,?,?,?)", (upload_id, number, etag, size, time.time())
                )
        finally:
            tmp.unlink(missing_ok=True)
        req.log["bytes"] = size
        return Response(200, {"ETag": etag, "x-cos-request-id": request_id()})

    def list_parts(self, req: Request, bucket: str, key: str, upload_id: str) -> Response:
        req.log["op"] = "ListParts"
        self._upload(bucket, key, upload_id)
        marker = int_arg(req.arg("part-number-marker") or "0")
        limit = max(1, min(1000, int_arg(req.arg("max-parts") or "1000")))
        rows = self.store.query(
            "SELECT * FROM parts WHERE upload_id = ? AND part_number > ? ORDER BY part_number LIMIT ?",
            (upload_id, marker, limit + 1),
        )
        truncated = len(rows) > limit
        rows = rows[:limit]
        parts = [
            (
                "Part",
                (
                    ("PartNumber", r["part_number"]),
                    ("LastModified", iso(r["modified"])),
                    ("ETag", r["etag"]),
                    ("Size", r["size"]),
                ),
            )
            for r in rows
        ]
        return Response.xml(
            "ListPartsResult",
            [
                ("Bucket", bucket),
                ("Encoding-type", ""),
                ("Key", key),
                ("UploadId", upload_id),
                (
                    "Owner",
                    (
                        ("ID", f"qcs::cam::uin/{self.config.app_id}:uin/{self.config.app_id}"),
                        ("DisplayName", str(self.config.app_id)),
                    ),
                ),
                ("PartNumberMarker", marker),
                ("NextPartNumberMarker", rows[-1]["part_number"] if rows else marker),
                ("StorageClass", "STANDARD"),
                ("MaxParts", limit),
                ("IsTruncated", truncated),
                *parts,
            ],
        )

    def complete(self, req: Request, bucket: str, key: str, upload_id: str) -> Response:
        req.log["op"] = "CompleteMultipartUpload"
        self._upload(bucket, key, upload_id)
        try:
            body = req.body.read(MAX_COMPLETE_BODY)
        except BodyTooLarge as exc:
            raise CosError(400, "EntityTooLarge", "The CompleteMultipartUpload body is too large") from exc
        check_content_md5(req, hashlib.md5(body, usedforsecurity=False).hexdigest())
        try:
            root = ET.fromstring(body)  # noqa: S314
            wanted = [
                (int((p.findtext("PartNumber") or "").strip()), (p.findtext("ETag") or "").strip().strip('"'))
                for p in root.iter("Part")
            ]
        except (ET.ParseError, ValueError) as exc:
            raise CosError(400, "MalformedXML", "The XML you provided was not well-formed") from exc
        if not wanted:
            raise CosError(400, "MalformedXML", "no Part elements")
        numbers = [n for n, _ in wanted]
        if numbers != sorted(set(numbers)):
            raise CosError(400, "InvalidPartOrder", "parts must be listed in ascending order")
        with self.upload_locks.hold(upload_id):
            # Checked again under the lock: a Complete that waited for another finds the upload gone, as COS
            # answers any Complete of an upload already completed.
            self._upload(bucket, key, upload_id)
            etag = self._assemble(bucket, key, upload_id, wanted)
        location = f"{bucket}.cos.{req.host.split('.cos.', 1)[-1]}/{key}" if ".cos." in req.host else key
        return Response.xml(
            "CompleteMultipartUploadResult", [("Location", location), ("Bucket", bucket), ("Key", key), ("ETag", etag)]
        )

    def _assemble(self, bucket: str, key: str, upload_id: str, wanted: list[tuple[int, str]]) -> str:
        """Join the listed parts into the object, then forget the upload; the object's ETag. Nothing changes
        unless all of it succeeds: a failure leaves the upload and its parts as they were."""
        stored = {
            r["part_number"]: r for r in self.store.query("SELECT * FROM parts WHERE upload_id = ?", (upload_id,))
        }
        for index, (number, etag) in enumerate(wanted):
            row = stored.get(number)
            if row is None or row["etag"].strip('"') != etag:
                raise CosError(400, "InvalidPart", f"part {number} was not uploaded or its ETag differs")
            if index < len(wanted) - 1 and row["size"] < MIN_PART_SIZE:
                raise CosError(400, "EntityTooSmall", f"part {number} is smaller than 1 MiB")

        def chunks() -> Iterator[bytes]:
            for number, _ in wanted:
                yield from read_file(self.store.part_path(upload_id, number))

        blob = self.store.new_blob_path()
        size, md5 = self.store.write_file(chunks(), blob)  # atomic: a failure leaves no object behind
        joined = b"".join(bytes.fromhex(etag) for _, etag in wanted)
        etag = f'"{hashlib.md5(joined, usedforsecurity=False).hexdigest()}-{len(wanted)}"'
        content_type = self._upload_content_type(upload_id)
        self._save_object(bucket, key, size, etag, md5, content_type, blob.name)
        with self.store.transaction() as db:
            db.execute("DELETE FROM parts WHERE upload_id = ?", (upload_id,))
            db.execute("DELETE FROM uploads WHERE upload_id = ?", (upload_id,))
        self.store.drop_parts(upload_id)
        return etag

    def _upload_content_type(self, upload_id: str) -> str:
        row = self.store.one("SELECT content_type FROM uploads WHERE upload_id = ?", (upload_id,))
        return row["content_type"] if row else "application/octet-stream"

    def abort(self, req: Request, bucket: str, key: str, upload_id: str) -> Response:
        req.log["op"] = "AbortMultipartUpload"
        with self.upload_locks.hold(upload_id):
            self._upload(bucket, key, upload_id)
            with self.store.transaction() as db:
                db.execute("DELETE FROM parts WHERE upload_id = ?", (upload_id,))
                db.execute("DELETE FROM uploads WHERE upload_id = ?", (upload_id,))
            self.store.drop_parts(upload_id)
        return Response(204, {"x-cos-request-id": request_id()})

    # --- simple objects --------------------------------------------------------------------------
    def put_object(self, req: Request, bucket: str, key: str) -> Response:
        req.log["op"] = "PutObject"
        if req.header("x-cos-copy-source"):
            raise CosError(501, "NotImplemented", "PUT Object - Copy is not emulated")
        blob = self.store.new_blob_path()
        size, md5 = self.store.write_file(req.body.iter_chunks(), blob)
        try:
            check_content_md5(req, md5)
        except CosError:
            blob.unlink(missing_ok=True)
            raise
        etag = f'"{md5}"'
        self._save_object(
            bucket, key, size, etag, md5, req.header("content-type", "application/octet-stream"), blob.name
        )
        req.log["bytes"] = size
        return Response(200, {"ETag": etag, "x-cos-request-id": request_id()})

    def _save_object(self, bucket: str, key: str, size: int, etag: str, md5: str, content_type: str, blob: str) -> None:
        with self.store.transaction() as db:
            old = db.execute("SELECT blob FROM objects WHERE bucket = ? AND key = ?", (bucket, key)).fetchone()
            db.execute(
                "INSERT OR REPLACE INTO objects VALUES (?,?,?,?,?,?,?,?)",
                (bucket, key, size, etag, md5, content_type, time.time(), blob),
            )
        if old is not None and old["blob"] != blob:
            self.store.blob_path(old["blob"]).unlink(missing_ok=True)

    def object_info(self, bucket: str, key: str) -> dict[str, Any] | None:
        row = self.store.one("SELECT * FROM objects WHERE bucket = ? AND key = ?", (bucket, key))
        return dict(row) if row is not None else None

    def delete_object(self, bucket: str, key: str) -> None:
        info = self.object_info(bucket, key)
        self.store.execute("DELETE FROM objects WHERE bucket = ? AND key = ?", (bucket, key))
        if info is not None:
            self.store.blob_path(info["blob"]).unlink(missing_ok=True)

    def get_object(self, req: Request, bucket: str, key: str) -> Response:
        req.log["op"] = "HeadObject" if req.method == "HEAD" else "GetObject"
        info = self.object_info(bucket, key)
        if info is None:
            raise CosError(404, "NoSuchKey", "The specified key does not exist.")
        size = info["size"]
        headers = {
            "Content-Type": info["content_type"],
            "ETag": info["etag"],
            "Accept-Ranges": "bytes",
            "Last-Modified": formatdate(info["modified"], usegmt=True),
            "x-cos-request-id": request_id(),
        }
        start, length, status = 0, size, 200
        range_header = req.header("range")
        if range_header:
            parsed = parse_range(range_header, size)
            if parsed is None:
                headers["Content-Range"] = f"bytes */{size}"
                raise CosError(416, "InvalidRange", "The requested range is not satisfiable")
            start, length, status = parsed[0], parsed[1] - parsed[0] + 1, 206
            headers["Content-Range"] = f"bytes {parsed[0]}-{parsed[1]}/{size}"
        headers["Content-Length"] = str(length)
        if req.method == "HEAD" or length == 0:
            return Response(status, headers, b"", stream=[])
        # Open before any header is sent: a concurrent delete/overwrite either happened already (404 here) or
        # happens after the open, which keeps the unlinked file readable to the end.
        try:
            fh = self.store.blob_path(info["blob"]).open("rb")
        except FileNotFoundError as exc:
            raise CosError(404, "NoSuchKey", "The specified key does not exist.") from exc
        return Response(status, headers, stream=read_open(fh, start, length), on_close=fh.close)


def parse_range(value: str, size: int) -> tuple[int, int] | None:
    match = re.fullmatch(r"bytes=(\d*)-(\d*)", value.strip())
    if match is None or (not match.group(1) and not match.group(2)):
        return None
    first, last = match.group(1), match.group(2)
    if not first:
        suffix = int(last)
        if suffix == 0 or size == 0:
            return None
        return max(0, size - suffix), size - 1
    start = int(first)
    end = min(int(last), size - 1) if last else size - 1
    if start >= size or end < start:
        return None
    return start, end


def check_content_md5(req: Request, md5_hex: str) -> None:
    sent = req.header("content-md5")
    if sent and base64.b64encode(bytes.fromhex(md5_hex)).decode() != sent:
        raise CosError(400, "BadDigest", "The Content-MD5 you specified did not match what we received.")


def _bytes(value: str) -> bytes:
    """For ``secrets.compare_digest``, which rejects non-ASCII ``str`` (header values may hold any byte)."""
    return value.encode("utf-8", "surrogateescape")


def int_arg(value: str | None) -> int:
    try:
        return int(value or "")
    except ValueError as exc:
        raise CosError(400, "InvalidArgument", f"not an integer: {value!r}") from exc


def iso(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(ts))


def request_id() -> str:
    return uuid.uuid4().hex


def error_response(exc: CosError, req: Request) -> Response:
    rid = request_id()
    body = xml_document(
        "Error",
        [
            ("Code", exc.code),
            ("Message", exc.message),
            ("Resource", req.host + req.raw_path),
            ("RequestId", rid),
            ("TraceId", rid),
        ],
    )
    return Response(exc.status, {"Content-Type": "application/xml", "x-cos-request-id": rid}, body.encode())
