"""VOD API 3.0 (``vod.tencentcloudapi.com``): TC3-HMAC-SHA256 auth, PullEvents/ConfirmEvents,
DescribeEventsState, ModifyEventConfig/DescribeEventConfig, DescribeMediaInfos and DeleteMedia."""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import time
import uuid
from collections.abc import Callable
from typing import Any

from tencentcloud.common.sign import Sign
from tencentcloud.vod.v20180717 import models

from vodlocal.config import Config
from vodlocal.cos import CosService
from vodlocal.eventconfig import DESCRIBE_FIELDS, InvalidEventConfig, check_known, check_sub_app_id
from vodlocal.events import MAX_PULL, EventBus, file_deleted
from vodlocal.httpkit import Request, Response
from vodlocal.media import MediaRepository

API_VERSION = "2018-07-17"
MAX_SKEW = 300
_AUTH = re.compile(
    r"TC3-HMAC-SHA256 Credential=(?P<id>[^/]+)/(?P<date>\d{4}-\d{2}-\d{2})/(?P<service>[a-z]+)/tc3_request,"
    r"\s*SignedHeaders=(?P<headers>[a-z0-9;-]+),\s*Signature=(?P<sig>[0-9a-f]{64})\Z"
)


class ApiError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


def envelope(payload: dict[str, Any]) -> Response:
    payload["RequestId"] = str(uuid.uuid4())
    return Response.json({"Response": payload})


class Api3Service:
    def __init__(self, config: Config, bus: EventBus, media: MediaRepository, cos: CosService) -> None:
        self.config = config
        self.bus = bus
        self.media = media
        self.cos = cos
        self.actions: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
            "PullEvents": self.pull_events,
            "ConfirmEvents": self.confirm_events,
            "DescribeEventsState": self.describe_events_state,
            "ModifyEventConfig": self.modify_event_config,
            "DescribeEventConfig": self.describe_event_config,
            "DescribeMediaInfos": self.describe_media_infos,
            "DeleteMedia": self.delete_media,
        }

    def handle(self, req: Request) -> Response:
        action = req.header("x-tc-action")
        req.log["op"] = action
        try:
            raw = req.body.read()
            self.authenticate(req, raw)
            if req.header("x-tc-version") != API_VERSION:
                raise ApiError("InvalidParameterValue", f"X-TC-Version must be {API_VERSION}")
            handler = self.actions.get(action)
            if handler is None:
                raise ApiError("InvalidAction", f"action {action!r} is not emulated by vodlocal")
            if req.method != "POST":
                raise ApiError("UnsupportedProtocol", "vodlocal accepts POST with a JSON body only")
            params = json.loads(raw or b"{}")
            if not isinstance(params, dict):
                raise ApiError("InvalidParameter", "body must be a JSON object")
            return envelope(handler(params))
        except (ApiError, InvalidEventConfig) as exc:
            req.log["error"] = exc.code
            return envelope({"Error": {"Code": exc.code, "Message": exc.message}})
        except ValueError as exc:
            return envelope({"Error": {"Code": "InvalidParameter", "Message": str(exc)}})

    def authenticate(self, req: Request, payload: bytes) -> None:
        match = _AUTH.match(req.header("authorization"))
        if match is None:
            raise ApiError("AuthFailure.InvalidAuthorization", "Authorization is not TC3-HMAC-SHA256")
        secret_key = self.config.secrets.get(match["id"])
        if secret_key is None:
            raise ApiError("AuthFailure.SecretIdNotFound", "The SecretId is not found")
        try:
            timestamp = int(req.header("x-tc-timestamp"))
        except ValueError as exc:
            raise ApiError("AuthFailure.InvalidAuthorization", "X-TC-Timestamp is missing") from exc
        if abs(time.time() - timestamp) > MAX_SKEW:
            raise ApiError("AuthFailure.SignatureExpire", "Signature expired: timestamp is too far from now")
        if time.strftime("%Y-%m-%d", time.gmtime(timestamp)) != match["date"]:
            raise ApiError("AuthFailure.InvalidAuthorization", "Credential date does not match X-TC-Timestamp")
        signed = match["headers"].split(";")
        canonical_headers = "".join(f"{h}:{req.header(h).strip().lower()}\n" for h in signed)
        if req.header("x-tc-content-sha256") == "UNSIGNED-PAYLOAD":
            payload = b"UNSIGNED-PAYLOAD"
        query = "&".join(f"{k}={v}" for k, v in req.query) if req.method == "GET" else ""
        canonical = "\n".join(
            [
                req.method,
                req.raw_path or "/",
                query,
                canonical_headers,
                match["headers"],
                hashlib.sha256(payload if req.method != "GET" else b"").hexdigest(),
            ]
        )
        scope = f"{match['date']}/{match['service']}/tc3_request"
        to_sign = "\n".join(["TC3-HMAC-SHA256", str(timestamp), scope, hashlib.sha256(canonical.encode()).hexdigest()])
        expected = Sign.sign_tc3(secret_key, match["date"], match["service"], to_sign)
        if not hmac.compare_digest(expected, match["sig"]):
            raise ApiError("AuthFailure.SignatureFailure", "The provided credentials could not be validated")

    # --- actions -------------------------------------------------------------------------------------
    def pull_events(self, params: dict[str, Any]) -> dict[str, Any]:
        # In PUSH mode nothing is queued, and vodlocal answers an empty set at once (inferred behaviour).
        events = self.bus.pull() if self.bus.event_config.current().mode == "PULL" else []
        return {"EventSet": events}

    def confirm_events(self, params: dict[str, Any]) -> dict[str, Any]:
        handles = params.get("EventHandles")
        if not isinstance(handles, list) or not handles or len(handles) > MAX_PULL:
            raise ApiError("InvalidParameter", f"EventHandles must list 1..{MAX_PULL} handles")
        refused = self.bus.confirm([str(h) for h in handles])
        if refused:
            # VOD: "past 30 s, a parameter error (4000)"; InvalidParameterValue is the one parameter error its SDKs
            # list for ConfirmEvents. The message is vodlocal's own. No handle of the request is confirmed.
            raise ApiError(
                "InvalidParameterValue",
                "parameter error (4000): no EventHandle confirmed; "
                + "; ".join(f"{handle} is {why}" for handle, why in refused.items()),
            )
        return {}

    def describe_events_state(self, params: dict[str, Any]) -> dict[str, Any]:
        return {"CountOfEventsToPull": self.bus.pending_count()}

    def modify_event_config(self, params: dict[str, Any]) -> dict[str, Any]:
        self.bus.event_config.modify(params)
        return {}

    def describe_event_config(self, params: dict[str, Any]) -> dict[str, Any]:
        check_known(params, DESCRIBE_FIELDS)
        check_sub_app_id(params)
        return self.bus.event_config.current().describe()

    def describe_media_infos(self, params: dict[str, Any]) -> dict[str, Any]:
        file_ids = params.get("FileIds")
        if not isinstance(file_ids, list) or not 1 <= len(file_ids) <= 20:
            raise ApiError("InvalidParameterValue.FileIds", "FileIds must list 1..20 ids")
        raw_filters = params.get("Filters")
        if raw_filters is not None and (
            not isinstance(raw_filters, list) or not all(isinstance(f, str) for f in raw_filters)
        ):
            raise ApiError("InvalidParameter", "Filters must be a list of strings")
        filters = set(raw_filters or ["basicInfo", "metaData"])
        check_sub_app_id(params)
        # A file of another (sub-)application is not found in this one (inferred: each is its own media library).
        application = self.config.application(params.get("SubAppId"))
        infos, missing = [], []
        for file_id in map(str, file_ids):
            media = self.media.get(file_id)
            if media is None or self.config.application(media.application) != application:
                missing.append(file_id)
                continue
            info = models.MediaInfo()
            info.FileId = file_id
            info.BasicInfo = media.basic_info() if "basicInfo" in filters else None
            info.MetaData = media.meta_data() if "metaData" in filters else None
            infos.append(info._serialize(allow_none=True))
        return {"MediaInfoSet": infos, "NotExistFileIdSet": missing}

    def delete_media(self, params: dict[str, Any]) -> dict[str, Any]:
        file_id = str(params.get("FileId") or "")
        check_sub_app_id(params)
        media = self.media.get(file_id)
        # As DescribeMediaInfos: a file of another (sub-)application does not exist in this one.
        if media is None or self.config.application(media.application) != self.config.application(
            params.get("SubAppId")
        ):
            raise ApiError("ResourceNotFound.FileNotExist", f"file {file_id!r} does not exist")
        if params.get("DeleteParts"):
            raise ApiError("UnsupportedOperation", "vodlocal has no derived files: omit DeleteParts")
        # Only the call that removes the record reports it: of two concurrent deletions, the other one finds
        # no such file, and one FileDeleted is sent.
        if not self.media.delete(file_id):
            raise ApiError("ResourceNotFound.FileNotExist", f"file {file_id!r} does not exist")
        for key in (media.video_key, media.cover_key):
            if key:
                self.cos.delete_object(media.bucket, key)
        self.bus.emit(file_deleted(file_id))
        return {}
