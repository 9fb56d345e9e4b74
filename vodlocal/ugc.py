"""VOD client-upload (UGC) API: PrepareUploadUGC, ApplyUploadUGC, CommitUploadUGC.

Envelope ``{code, message, data}``; ``code == 0`` is success. Error codes other than 10010 (signature
expired, what the Android/iOS SDKs map to ERR_UPLOAD_SIGN_EXPIRED) are not documented by Tencent; the
ones below are the emulator's choice.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import secrets
import sqlite3
import threading
import time
from collections.abc import Callable
from typing import Any

from vodlocal.config import Config
from vodlocal.cos import REGION_ABBREVIATIONS, CosService, vod_bucket_name
from vodlocal.events import EventBus, new_file_upload
from vodlocal.httpkit import Request, Response
from vodlocal.media import Media, MediaRepository, iso_now
from vodlocal.signatures import BadSignature, UploadSignature, verify_upload_signature
from vodlocal.store import Store

CODE_INVALID_REQUEST = 10001
CODE_INVALID_SIGNATURE = 10002
CODE_INVALID_SESSION = 10003
CODE_DUPLICATE_SIGNATURE = 10004
CODE_FILE_NOT_UPLOADED = 10005
CODE_FILE_NOT_FOUND = 10006
CODE_SIGNATURE_EXPIRED = 10010

CLOCK_SKEW = 600
_BAD_NAME = re.compile(r'[\\/:*?"<>|]')
# What makes two Applies "the same Apply" for the session rule: the file they declare.
_FILE_FIELDS = ("videoName", "videoType", "videoSize", "coverName", "coverType", "coverSize", "fileId")


class UgcError(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _duplicate() -> UgcError:
    return UgcError(CODE_DUPLICATE_SIGNATURE, "duplicate vod signature")


def _not_its_own(field: str, owner: str) -> UgcError:
    # Inferred: Tencent documents no code for a signature of another intent; "invalid signature" is the
    # closest refusal it is known to send, and 10002 is vodlocal's code for it.
    return UgcError(CODE_INVALID_SIGNATURE, f"ugc upload | invalid signature: its {field} is not the {owner}'s")


def _same_context(signed: str | None, owner: str | None) -> bool:
    # The owner's sourceContext may carry a MAC of its own (ours does): compared in constant time.
    return hmac.compare_digest((signed or "").encode(), (owner or "").encode())


def envelope(code: int, message: str, data: dict[str, Any] | None = None) -> Response:
    return Response.json({"code": code, "message": message, "data": data if data is not None else {}})


class UgcService:
    def __init__(
        self,
        store: Store,
        config: Config,
        cos: CosService,
        bus: EventBus,
        media: MediaRepository,
        public_base_url: Callable[[], str],
    ) -> None:
        self.store = store
        self.config = config
        self.cos = cos
        self.bus = bus
        self.media = media
        self.public_base_url = public_base_url
        # Commits of one session are serialised (striped by session key), so concurrent CommitUploadUGCs
        # create the media and emit NewFileUpload once; the others re-read the committed result.
        self._commit_locks = [threading.Lock() for _ in range(64)]

    def handle(self, req: Request) -> Response:
        action = req.arg("Action") or ""
        req.log["op"] = action
        if req.method != "POST":
            return envelope(CODE_INVALID_REQUEST, "ugc upload | invalid request: POST only")
        handlers = {"PrepareUploadUGC": self.prepare, "ApplyUploadUGC": self.apply, "CommitUploadUGC": self.commit}
        handler = handlers.get(action)
        try:
            if handler is None:
                raise UgcError(CODE_INVALID_REQUEST, f"ugc upload | invalid request: unknown action {action!r}")
            body = req.json()
            if not isinstance(body, dict):
                raise UgcError(CODE_INVALID_REQUEST, "ugc upload | invalid request: body must be a JSON object")
            signed = self.check_signature(body.get("signature"))
            req.log["secretId"] = signed.secret_id
            return envelope(0, "", handler(body, signed))
        except UgcError as exc:
            req.log["code"] = exc.code
            return envelope(exc.code, exc.message)
        except (ValueError, UnicodeDecodeError) as exc:
            req.log["code"] = CODE_INVALID_REQUEST
            return envelope(CODE_INVALID_REQUEST, f"ugc upload | invalid request: {exc}")

    # --- signature -----------------------------------------------------------------------------------
    def check_signature(self, signature: object) -> UploadSignature:
        if not isinstance(signature, str) or not signature:
            raise UgcError(CODE_INVALID_SIGNATURE, "ugc upload | invalid signature: missing")
        try:
            signed = verify_upload_signature(signature, self.config.secrets.get)
        except BadSignature as exc:
            raise UgcError(CODE_INVALID_SIGNATURE, f"ugc upload | invalid signature: {exc}") from exc
        now = int(time.time())
        if signed.expire_time < now:
            raise UgcError(CODE_SIGNATURE_EXPIRED, "ugc upload | signature expired")
        if signed.current_time > now + CLOCK_SKEW:
            raise UgcError(CODE_INVALID_SIGNATURE, "ugc upload | invalid signature: currentTimeStamp in the future")
        if signed.one_time:
            self.store.execute("DELETE FROM used_signatures WHERE expires < ?", (now,))
            if self.config.one_time_signatures == "strict":
                try:
                    self.store.execute(
                        "INSERT INTO used_signatures (mac, expires) VALUES (?, ?)",
                        (signed.mac.hex(), signed.expire_time),
                    )
                except sqlite3.IntegrityError as exc:
                    raise _duplicate() from exc
        return signed

    def _claim(self, signed: UploadSignature, session_key: str, fingerprint: str | None) -> sqlite3.Row | None:
        """Under the session rule, bind a one-time signature to `session_key` unless it already serves a
        session; the row that won (this claim's or an earlier one's), or None when nothing is bound. The
        primary key arbitrates: of two claims at once, exactly one is stored."""
        if not signed.one_time or self.config.one_time_signatures != "session":
            return None
        self.store.execute(
            "INSERT OR IGNORE INTO used_signatures (mac, expires, session_key, fingerprint) VALUES (?, ?, ?, ?)",
            (signed.mac.hex(), signed.expire_time, session_key, fingerprint),
        )
        return self.store.one("SELECT session_key, fingerprint FROM used_signatures WHERE mac = ?", (signed.mac.hex(),))

    def _serves(self, signed: UploadSignature, session: dict[str, Any]) -> None:
        """Resume and Commit: only a signature of the session's own intent (the `sourceContext` and sub-app of
        the signature that opened it) serves it, so a session key seen elsewhere is of no use with another
        signature. Of those, a fresh one joins the session, one that already serves it is reused."""
        opened = session["options"]
        if not _same_context(signed.source_context, opened.get("sourceContext")):
            raise _not_its_own("sourceContext", "session")
        if self.config.application(signed.sub_app_id) != self.config.application(opened.get("vodSubAppId")):
            raise _not_its_own("vodSubAppId", "session")
        won = self._claim(signed, session["sessionKey"], None)
        if won is not None and won["session_key"] != session["sessionKey"]:
            raise _duplicate()

    # --- actions -------------------------------------------------------------------------------------
    def prepare(self, body: dict[str, Any], signed: UploadSignature) -> dict[str, Any]:
        region = signed.storage_region or self.config.region
        # A single entry: the Web SDK only races when there are two or more.
        probe = {"region": region, "domain": f"cos.{region}.myqcloud.com"}
        return {"appId": self.config.app_id, "cosRegionList": [probe]}

    def apply(self, body: dict[str, Any], signed: UploadSignature) -> dict[str, Any]:
        if body.get("vodSessionKey"):
            session = self._session(str(body["vodSessionKey"]))
            self._serves(signed, session)
        else:
            session = self._open_session(body, signed)
        return self._apply_data(session)

    def commit(self, body: dict[str, Any], signed: UploadSignature) -> dict[str, Any]:
        key = str(body.get("vodSessionKey") or "")
        stripe = int.from_bytes(hashlib.sha1(key.encode(), usedforsecurity=False).digest()[:4], "big")
        with self._commit_locks[stripe % len(self._commit_locks)]:
            session = self._session(key, allow_committed=True)
            self._serves(signed, session)
            return self._commit(session)

    def _commit(self, session: dict[str, Any]) -> dict[str, Any]:
        if session.get("committed"):
            return dict(session["committed"])
        bucket = session["bucket"]
        objects: dict[str, dict[str, Any]] = {}
        for part in ("video", "cover"):
            if session.get(part):
                info = self.cos.object_info(bucket, session[part]["key"])
                if info is None:
                    raise UgcError(CODE_FILE_NOT_UPLOADED, f"ugc upload | {part} file was not uploaded to COS")
                objects[part] = info
        if session["mode"] == "cover":
            media = self.media.get(session["fileId"])
            if media is None:
                raise UgcError(CODE_FILE_NOT_FOUND, "ugc upload | fileId does not exist")
            media.cover_key = session["cover"]["key"]
            media.cover_url = self.object_url(bucket, media.cover_key)
            media.update_time = iso_now()
            self.media.save(media)
            data = {"fileId": media.file_id, "cover": self._url_block(media.file_id, media.cover_url)}
            self._mark_committed(session, data)
            return data
        media = self._create_media(session, objects["video"], objects.get("cover"))
        data = {"fileId": media.file_id, "video": self._url_block(media.file_id, media.media_url)}
        if media.cover_key:
            data["cover"] = self._url_block(media.file_id, media.cover_url)
        self._mark_committed(session, data)
        self.bus.emit(new_file_upload(media))
        if media.procedure:
            self.bus.start_procedure(media)
        return data

    # --- sessions ------------------------------------------------------------------------------------
    def _open_session(self, body: dict[str, Any], signed: UploadSignature) -> dict[str, Any]:
        """A new upload (or cover replacement) session. The store's transaction makes the claim and the
        session one step, so an Apply that loses the claim finds the winner's session in place."""
        build = self._new_cover_session if body.get("fileId") else self._new_session
        session = build(body, signed)
        fingerprint = json.dumps([body.get(name) for name in _FILE_FIELDS])
        with self.store.transaction():
            won = self._claim(signed, session["sessionKey"], fingerprint)
            if won is not None and won["session_key"] != session["sessionKey"]:
                # The same Apply again (the SDK resending after a lost answer) gets the session it opened; any
                # other use of the signature is a replay, and so is one after that session was committed.
                if won["fingerprint"] != fingerprint:
                    raise _duplicate()
                opened = self._session(won["session_key"], allow_committed=True)
                if opened.get("committed"):
                    raise _duplicate()
                return opened
            self.store.execute(
                "INSERT INTO sessions VALUES (?, ?, ?)",
                (session["sessionKey"], json.dumps(session), session["created"]),
            )
        return session

    def _new_session(self, body: dict[str, Any], signed: UploadSignature) -> dict[str, Any]:
        video = self._file_spec(body, "video") if "videoType" in body or "videoSize" in body else None
        cover = self._file_spec(body, "cover") if "coverType" in body or "coverSize" in body else None
        if video is None:
            raise UgcError(CODE_INVALID_REQUEST, "ugc upload | invalid request: videoName/videoType/videoSize missing")
        region = signed.storage_region or str(body.get("storageRegion") or "") or self.config.region
        bucket_name = self.bucket_name(region)
        file_id = "52858907" + "".join(secrets.choice("0123456789") for _ in range(11))
        directory = f"{bucket_name}/{secrets.token_hex(4)}{file_id}"
        return self._session_record(signed, "new", file_id, region, bucket_name, directory, video, cover, body)

    def _new_cover_session(self, body: dict[str, Any], signed: UploadSignature) -> dict[str, Any]:
        media = self.media.get(str(body["fileId"]))
        if media is None:
            raise UgcError(CODE_FILE_NOT_FOUND, "ugc upload | fileId does not exist")
        # A FileId is public (it is in the media URL): only the file's own intent replaces its cover.
        if not _same_context(signed.source_context, media.source_context):
            raise _not_its_own("sourceContext", "file")
        cover = self._file_spec(body, "cover")
        directory = media.video_key.rsplit("/", 1)[0]
        bucket_name = media.bucket.rsplit("-", 1)[0]
        return self._session_record(
            signed, "cover", media.file_id, media.storage_region, bucket_name, directory, None, cover, body
        )

    def _session_record(
        self,
        signed: UploadSignature,
        mode: str,
        file_id: str,
        region: str,
        bucket_name: str,
        directory: str,
        video: dict[str, Any] | None,
        cover: dict[str, Any] | None,
        body: dict[str, Any],
    ) -> dict[str, Any]:
        for spec in (video, cover):
            if spec is not None:
                spec["key"] = f"{directory}/{secrets.token_urlsafe(9).replace('-', 'x').replace('_', 'y')}"
                spec["key"] += f".{spec['type']}" if spec["type"] else ""
        return {
            "sessionKey": secrets.token_urlsafe(32),
            "mode": mode,
            "fileId": file_id,
            "secretId": signed.secret_id,
            "options": dict(signed.options),
            "region": region,
            "bucketName": bucket_name,
            "bucket": f"{bucket_name}-{self.config.app_id}",
            "prefix": directory + "/",
            "video": video,
            "cover": cover,
            "expireTime": body.get("ExpireTime"),
            "created": time.time(),
            "committed": None,
        }

    def _session(self, key: str, allow_committed: bool = False) -> dict[str, Any]:
        row = self.store.one("SELECT data FROM sessions WHERE session_key = ?", (key,))
        if row is None:
            raise UgcError(CODE_INVALID_SESSION, "ugc upload | invalid vodSessionKey")
        session: dict[str, Any] = json.loads(row["data"])
        if time.time() - session["created"] > self.config.session_ttl:
            raise UgcError(CODE_INVALID_SESSION, "ugc upload | vodSessionKey expired")
        if session.get("committed") and not allow_committed:
            raise UgcError(CODE_INVALID_SESSION, "ugc upload | vodSessionKey already committed")
        return session

    def _mark_committed(self, session: dict[str, Any], data: dict[str, Any]) -> None:
        session["committed"] = data
        self.store.execute(
            "UPDATE sessions SET data = ? WHERE session_key = ?", (json.dumps(session), session["sessionKey"])
        )

    @staticmethod
    def _file_spec(body: dict[str, Any], kind: str) -> dict[str, Any]:
        name, ext, size = body.get(f"{kind}Name", ""), body.get(f"{kind}Type", ""), body.get(f"{kind}Size")
        if not isinstance(name, str) or not isinstance(ext, str) or _BAD_NAME.search(name) or len(name) > 128:
            raise UgcError(CODE_INVALID_REQUEST, f"ugc upload | invalid request: bad {kind}Name/{kind}Type")
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise UgcError(CODE_INVALID_REQUEST, f"ugc upload | invalid request: {kind}Size must be an integer")
        return {"name": name, "type": ext.lower(), "size": size}

    def _apply_data(self, session: dict[str, Any]) -> dict[str, Any]:
        cred = self.cos.issue_credentials(session["bucket"], session["prefix"], self.config.cert_ttl)
        region = session["region"]
        data: dict[str, Any] = {
            "storageAppId": self.config.app_id,
            "storageBucket": session["bucketName"],
            "storageRegion": REGION_ABBREVIATIONS.get(region, region),
            "storageRegionV5": region,
            "StorageRegionV5": region,
            "domain": {"vodDomain": self.public_base_url()},
            "vodSessionKey": session["sessionKey"],
            "tempCertificate": cred,
            "appId": self.config.app_id,
            "timestamp": int(time.time()),
        }
        for kind in ("video", "cover"):
            if session.get(kind):
                data[kind] = {"storageSignature": secrets.token_hex(20), "storagePath": "/" + session[kind]["key"]}
        return data

    # --- media ---------------------------------------------------------------------------------------
    def _create_media(self, session: dict[str, Any], video: dict[str, Any], cover: dict[str, Any] | None) -> Media:
        options = session["options"]
        bucket = session["bucket"]
        procedure = options.get("procedure")
        media = Media(
            file_id=session["fileId"],
            name=session["video"]["name"],
            type=session["video"]["type"],
            size=int(video["size"]),
            md5=str(video["md5"]),
            bucket=bucket,
            video_key=session["video"]["key"],
            media_url=self.object_url(bucket, session["video"]["key"]),
            storage_region=session["region"],
            create_time=iso_now(),
            class_id=int(options.get("classId") or 0),
            cover_key=session["cover"]["key"] if cover else None,
            cover_url=self.object_url(bucket, session["cover"]["key"]) if cover else "",
            source_context=options.get("sourceContext") or "",
            session_context=options.get("sessionContext") or "",
            procedure=procedure,
            task_priority=int(options.get("taskPriority") or 0),
            task_notify_mode=options.get("taskNotifyMode") or "Finish",
            procedure_task_id=f"{self.config.app_id}-Procedure-{secrets.token_hex(16)}t0" if procedure else "",
            application=self.config.application(options.get("vodSubAppId")),
        )
        self.media.save(media)
        return media

    def object_url(self, bucket: str, key: str) -> str:
        return f"{self.public_base_url()}/_cos/{bucket}/{key}"

    def bucket_name(self, region: str) -> str:
        return vod_bucket_name(region, self.config.app_id)

    def _url_block(self, file_id: str, url: str) -> dict[str, str]:
        expires = int(time.time()) + 86_400
        plain = f"ExpTime={expires}&FileId={file_id}".encode()
        key = hashlib.sha256(f"vodlocal-verify-{self.config.app_id}".encode()).digest()
        mac = hmac.new(key, plain, hashlib.sha1).digest()
        return {"url": url, "verify_content": base64.b64encode(mac + plain).decode()}
