"""VOD's event notification for a stage, through API 3.0 with the official tencentcloud SDK.

`ModifyEventConfig` points VOD at the stage's callback (the URL carries the path token) with the SignKey
the app verifies, and turns on the two events the app handles; `DescribeEventConfig` reads it back, and the
deploy fails unless VOD now holds exactly that. (VOD never returns the SignKey: it is set, not compared.)

`VOD_API_ENDPOINT` (e.g. `http://127.0.0.1:8001`) sends the calls to an emulator instead of
`vod.tencentcloudapi.com`; the rehearsal uses it for vodlocal.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from tencentcloud.common.exception.tencent_cloud_sdk_exception import TencentCloudSDKException
from tencentcloud.vod.v20180717 import models, vod_client

from chalicelib.vod_api import vod_api_client

REQUEST_TIMEOUT_SECONDS = 15
DISABLED = {"UploadMediaCompleteEventSwitch": "OFF", "DeleteMediaCompleteEventSwitch": "OFF"}


class VodConfigError(RuntimeError):
    pass


@dataclass(frozen=True)
class EventConfig:
    mode: str
    notification_url: str
    upload_media_complete: str
    delete_media_complete: str

    def as_request(self) -> dict[str, str]:
        return {
            "Mode": self.mode,
            "NotificationUrl": self.notification_url,
            "UploadMediaCompleteEventSwitch": self.upload_media_complete,
            "DeleteMediaCompleteEventSwitch": self.delete_media_complete,
        }


def callback_url(api_url: str, callback_token: str) -> str:
    return f"{api_url.rstrip('/')}/vod/events/{callback_token}"


def wanted(api_url: str, callback_token: str, event_mode: str = "push") -> EventConfig:
    """The stage's mode (EVENT_MODE: `push` to the callback, or `pull` by the scheduled consumer) with both
    events the app handles. In PULL mode VOD ignores the URL; it is set anyway, so that switching the stage
    back to PUSH needs no other change."""
    return EventConfig(event_mode.upper(), callback_url(api_url, callback_token), "ON", "ON")


def client(secret_id: str, secret_key: str, environ: Mapping[str, str]) -> vod_client.VodClient:
    return vod_api_client(secret_id, secret_key, environ.get("VOD_API_ENDPOINT"), REQUEST_TIMEOUT_SECONDS)


def describe(vod: vod_client.VodClient, sub_app_id: int | None = None) -> EventConfig:
    request = models.DescribeEventConfigRequest()
    if sub_app_id is not None:
        request.SubAppId = sub_app_id
    fields: dict[str, Any] = json.loads(_call(vod.DescribeEventConfig, request).to_json_string())
    return EventConfig(
        mode=fields.get("Mode") or "",
        notification_url=fields.get("NotificationUrl") or "",
        upload_media_complete=fields.get("UploadMediaCompleteEventSwitch") or "",
        delete_media_complete=fields.get("DeleteMediaCompleteEventSwitch") or "",
    )


def configure(
    vod: vod_client.VodClient, config: EventConfig, sign_key: str, sub_app_id: int | None = None
) -> tuple[EventConfig, EventConfig]:
    """Set the event config and read it back: (before, after). Raises unless VOD holds what was asked."""
    before = describe(vod, sub_app_id)
    request = models.ModifyEventConfigRequest()
    for name, value in config.as_request().items():
        setattr(request, name, value)
    request.SignKey = sign_key
    if sub_app_id is not None:
        request.SubAppId = sub_app_id
    _call(vod.ModifyEventConfig, request)
    after = describe(vod, sub_app_id)
    if after != config:
        raise VodConfigError(f"VOD's event config reads back {summary(after)}, not {summary(config)}")
    return before, after


def disable(vod: vod_client.VodClient, api_url: str, sub_app_id: int | None = None) -> bool:
    """Turn the events off if VOD still sends them to this stage's API; another target is left alone."""
    current = describe(vod, sub_app_id)
    if not current.notification_url.startswith(api_url.rstrip("/") + "/"):
        return False
    request = models.ModifyEventConfigRequest()
    for name, value in DISABLED.items():
        setattr(request, name, value)
    if sub_app_id is not None:
        request.SubAppId = sub_app_id
    _call(vod.ModifyEventConfig, request)
    return True


def summary(config: EventConfig) -> str:
    """The config with the callback's path token cut: it is a credential and this text reaches logs."""
    url = config.notification_url
    shown = url.rsplit("/", 1)[0] + "/…" if "/vod/events/" in url else url
    return f"mode={config.mode} url={shown} upload={config.upload_media_complete} delete={config.delete_media_complete}"


def _call(operation: Any, request: Any) -> Any:
    try:
        return operation(request)
    except TencentCloudSDKException as error:
        raise VodConfigError(
            f"VOD {type(request).__name__.removesuffix('Request')}: {error.code}: {error.message}"
        ) from None
