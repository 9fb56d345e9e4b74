"""Protocol-replay clients of Tencent's mobile upload SDKs, request by request as their source does it
(`../shared/docs/mobile-sdks.md`, which cites the lines):

- `TXUGCPublish`: the Android and iOS SDK. One signature per `publishVideo`, sent unchanged to Prepare (once
  per process), Apply and Commit and on its own retries (2 on the main host, 2 on the backup); resume is a
  new `publishVideo` with a new signature plus the `vodSessionKey` it stored.
- `VodWxUploader`: the WeChat mini-program SDK (vod-wx-sdk-v2). No Prepare; a fresh `getSignature()` per
  Apply attempt (up to 4); Commit reuses the last Apply's signature.

Both talk to vodlocal over HTTP (`ugc`, and COS through qcloud_cos with vodlocal as its proxy). Signatures
come from our API the way docs/sdk-wiring.md tells app teams to wire it (`SigningApi`).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Literal

from qcloud_cos import CosServiceError

from chalicelib.policy import ClientKind
from tests.test_pull_consumer import Post
from tests.vodlocal.conftest import MiB, cos_client, ugc
from vodlocal import Handle

HOSTS = ("vod2.qcloud.com", "vod2.qcloud.com", "vod2.dnsv1.com", "vod2.dnsv1.com")  # Apply/Commit: 2 + 2 tries
WX_ATTEMPTS = 4  # vod-wx-sdk-v2: an Apply and up to 3 retries, each with a new signature; likewise Commit


class LostAnswer(Exception):
    """VOD handled the request but its answer never reached the client."""


@dataclass
class Network:
    """The path between an SDK and VOD: it records what was sent and can lose the next answers of an action."""

    vod: Handle
    lose: dict[str, int] = field(default_factory=dict)
    sent: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    def call(self, action: str, body: dict[str, Any], host: str = HOSTS[0]) -> dict[str, Any]:
        self.sent.append((action, body))
        reply = ugc(self.vod, action, body, host=host)
        if self.lose.get(action):
            self.lose[action] -= 1
            raise LostAnswer(action)
        return reply

    def signatures(self, action: str) -> list[str]:
        return [body["signature"] for sent, body in self.sent if sent == action]


@dataclass
class SigningApi:
    """The wiring of docs/sdk-wiring.md: `POST /uploads` once per video (declaring the SDK), then
    `POST /uploads/{id}/signature` for every further signature of that video."""

    post: Post
    client: ClientKind
    body: dict[str, Any] = field(default_factory=dict)
    upload_id: str | None = None

    def signature(self) -> str:
        if self.upload_id is None:
            created = self.post("/uploads", json.dumps({**self.body, "client": self.client}).encode())
            self.upload_id = created["uploadId"]
            return str(created["signature"])
        return str(self.post(f"/uploads/{self.upload_id}/signature", b"")["signature"])


@dataclass(frozen=True)
class Media:
    video: bytes
    cover: bytes | None = None
    name: str = "clip"

    @property
    def key(self) -> str:
        """What the SDKs key their resume record by: the file's MD5."""
        return hashlib.md5(self.video, usedforsecurity=False).hexdigest()

    def apply_fields(self) -> dict[str, Any]:
        fields: dict[str, Any] = {"videoName": self.name, "videoType": "mp4", "videoSize": len(self.video)}
        if self.cover is not None:
            fields |= {"coverName": self.name, "coverType": "jpg", "coverSize": len(self.cover)}
        return fields


@dataclass(frozen=True)
class Result:
    """TXPublishResult: retCode 0 or the SDK's error code (1001 Apply, 1006 Commit, 1017 cancelled, 1020
    signature expired), or for the mini-program VOD's own code."""

    code: int
    video_id: str | None = None
    video_url: str | None = None
    cover_url: str | None = None


class ApplyFailed(Exception):
    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


@dataclass
class Cos:
    """The upload of one session's files with its temporary credentials (`data` is Apply's answer)."""

    vod: Handle
    data: dict[str, Any]

    @property
    def bucket(self) -> str:
        return f"{self.data['storageBucket']}-{self.data['storageAppId']}"

    def key(self, kind: str) -> str:
        return str(self.data[kind]["storagePath"][1:])

    @cached_property
    def client(self) -> Any:
        cert = self.data["tempCertificate"]
        return cos_client(self.vod, self.data["storageRegionV5"], cert["secretId"], cert["secretKey"], cert["token"])

    def put(self, kind: str, body: bytes) -> None:
        self.client.put_object(Bucket=self.bucket, Key=self.key(kind), Body=body)


@dataclass
class TXUGCPublish:
    """The Android (`platform="android"`) or iOS SDK. `prefs` is its SharedPreferences/NSUserDefaults, kept
    across publishes (and processes); `prepared` is per process."""

    network: Network
    platform: Literal["android", "ios"] = "android"
    prefs: dict[str, dict[str, Any]] = field(default_factory=dict)
    prepared: bool = False
    part_size: int = MiB
    cancel_after_parts: int | None = None  # the app calls canclePublish() once this many parts are sent
    stall_after_parts: int | None = None  # the network stalls until the COS credentials have expired

    def publish_video(self, signature: str, media: Media) -> Result:
        region = self._prepare(signature)
        record = self.prefs.get(media.key)
        body = {"signature": signature, **media.apply_fields(), "clientVersion": "13.4"}
        if region:
            body["storageRegion"] = region
        if record is not None:
            body["vodSessionKey"] = record["vodSessionKey"]
        try:
            data = self._apply(body, media)
            record = self.prefs.setdefault(media.key, {"expiredTime": int(time.time()) + 86_400})
            record["vodSessionKey"] = data["vodSessionKey"]
            uploaded = self._upload_video(body, data, media, record)
        except ApplyFailed as failed:
            return Result(failed.code)
        if not uploaded:
            return Result(1017)  # cancelled: the record stays for the resume
        del self.prefs[media.key]  # after the video's COS upload, as the SDK does: a later publish starts over
        if media.cover is not None:
            Cos(self.network.vod, data).put("cover", media.cover)
        return self._commit({"signature": signature, "vodSessionKey": data["vodSessionKey"], "clientVersion": "13.4"})

    def _prepare(self, signature: str) -> str | None:
        if self.prepared:
            return None
        self.prepared = True
        reply = self.network.call("PrepareUploadUGC", {"signature": signature, "clientVersion": "13.4"})
        regions = reply["data"].get("cosRegionList") if reply["code"] == 0 else None
        return str(regions[0]["region"]) if regions else None

    def _apply(self, body: dict[str, Any], media: Media) -> dict[str, Any]:
        reply = self._send("ApplyUploadUGC", body)
        if reply is None or reply["code"] != 0:
            self.prefs.pop(media.key, None)  # any Apply error deletes the resume record
            expired = reply is not None and reply["code"] == 10010
            raise ApplyFailed(1020 if expired else 1001 if self.platform == "android" else 1002)
        data: dict[str, Any] = reply["data"]
        return data

    def _send(self, action: str, body: dict[str, Any]) -> dict[str, Any] | None:
        """The same request, same signature, on each of the SDK's tries; None when every answer was lost."""
        for host in HOSTS:
            try:
                return self.network.call(action, body, host)
            except LostAnswer:
                continue
        return None

    def _upload_video(
        self, apply_body: dict[str, Any], data: dict[str, Any], media: Media, record: dict[str, Any]
    ) -> bool:
        """Multipart, reusing the record's COS uploadId and skipping the parts COS already has. False when
        cancelled."""
        cos = Cos(self.network.vod, data)
        key = cos.key("video")
        if "uploadId" in record:
            listed = cos.client.list_parts(Bucket=cos.bucket, Key=key, UploadId=record["uploadId"])
            done = {int(part["PartNumber"]): part["ETag"] for part in listed.get("Part", [])}
        else:
            created = cos.client.create_multipart_upload(Bucket=cos.bucket, Key=key)
            record["uploadId"], done = created["UploadId"], {}
        numbers = range(1, -(-len(media.video) // self.part_size) + 1)
        sent = 0
        for number in numbers:
            if number in done:
                continue
            if sent == self.cancel_after_parts:
                self.cancel_after_parts = None
                return False
            if sent == self.stall_after_parts:
                time.sleep(max(0.0, data["tempCertificate"]["expiredTime"] + 1 - time.time()))
            chunk = media.video[(number - 1) * self.part_size : number * self.part_size]
            try:
                done[number] = self._put_part(cos, key, record["uploadId"], number, chunk)
            except CosServiceError as error:
                if error.get_status_code() != 403:
                    raise
                # Expired credentials: Apply again with this publish's signature and the session key.
                cos = Cos(self.network.vod, self._apply({**apply_body, "vodSessionKey": data["vodSessionKey"]}, media))
                done[number] = self._put_part(cos, key, record["uploadId"], number, chunk)
            sent += 1
        parts = [{"PartNumber": str(number), "ETag": done[number]} for number in sorted(done)]
        cos.client.complete_multipart_upload(
            Bucket=cos.bucket, Key=key, UploadId=record["uploadId"], MultipartUpload={"Part": parts}
        )
        return True

    @staticmethod
    def _put_part(cos: Cos, key: str, upload_id: str, number: int, chunk: bytes) -> str:
        reply = cos.client.upload_part(Bucket=cos.bucket, Key=key, Body=chunk, PartNumber=number, UploadId=upload_id)
        return str(reply["ETag"])

    def _commit(self, body: dict[str, Any]) -> Result:
        reply = self._send("CommitUploadUGC", body)
        if reply is None or reply["code"] != 0:
            return Result(1006)
        return _result(reply["data"])


@dataclass
class VodWxUploader:
    """vod-wx-sdk-v2's `start()`: `storage` is wx storage (`wp_ugc_<fileKey>` -> vodSessionKey)."""

    network: Network
    get_signature: Callable[[], str]
    storage: dict[str, str] = field(default_factory=dict)

    def start(self, media: Media) -> Result:
        stored = f"wp_ugc_{media.key}"
        reply: dict[str, Any] | None = None
        for _ in range(WX_ATTEMPTS):
            body = {"signature": self.get_signature(), **media.apply_fields()}
            if stored in self.storage:
                body["vodSessionKey"] = self.storage[stored]
            try:
                reply = self.network.call("ApplyUploadUGC", body)
            except LostAnswer:
                continue
            if reply["code"] == 0:
                break
        if reply is None or reply["code"] != 0:
            return Result(reply["code"] if reply else -1)
        data = reply["data"]
        self.storage[stored] = data["vodSessionKey"]
        cos = Cos(self.network.vod, data)
        cos.put("video", media.video)
        if media.cover is not None:
            cos.put("cover", media.cover)
        commit = {"signature": body["signature"], "vodSessionKey": data["vodSessionKey"]}
        for _ in range(WX_ATTEMPTS):
            try:
                reply = self.network.call("CommitUploadUGC", commit)
            except LostAnswer:
                continue
            if reply["code"] == 0:
                del self.storage[stored]
                return _result(reply["data"])
        return Result(reply["code"])


def _result(data: dict[str, Any]) -> Result:
    cover = data.get("cover")
    return Result(0, data["fileId"], data["video"]["url"], cover["url"] if cover else None)
