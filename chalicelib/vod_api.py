"""VOD's API 3.0 through the official tencentcloud SDK: the event queue (PULL mode), media deletion, and
media descriptions.

Imported only by the scheduled functions (the PULL consumer, the reconciliation sweep), the route a client
reports its upload done with (`POST /uploads/{id}/complete`), the route that deletes a video
(`DELETE /videos/{fileId}`) and the deploy: the SDK takes about 100 ms to
import, which the signing routes and the callback must not pay.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any, Generic, TypeVar
from urllib.parse import urlsplit

from tencentcloud.common import credential
from tencentcloud.common.exception.tencent_cloud_sdk_exception import TencentCloudSDKException
from tencentcloud.common.profile.client_profile import ClientProfile
from tencentcloud.common.profile.http_profile import HttpProfile
from tencentcloud.vod.v20180717 import models, vod_client

from chalicelib import vod_notification
from chalicelib.completion import DESCRIBE_MEDIA_SECONDS
from chalicelib.deletion import DELETE_MEDIA_REQUEST_SECONDS
from chalicelib.errors import InvalidRequest, ServiceUnavailable, VodUnavailable
from chalicelib.events import UploadedFile
from chalicelib.pull_consumer import PulledEvent, QueueUnavailable, event_body
from chalicelib.sweep import DELETE_MEDIA_SECONDS

T = TypeVar("T")
logger = logging.getLogger("vodupload")

# VOD is one global service; the SDK still wants a region for the request signature.
API_REGION = "ap-guangzhou"
DEFAULT_ENDPOINT = "https://vod.tencentcloudapi.com"
# PullEvents holds up to 5 s when there is nothing to pull: wait for it, and a little more.
REQUEST_TIMEOUT_SECONDS = 10


def vod_api_client(
    secret_id: str, secret_key: str, endpoint: str | None, timeout_seconds: float = REQUEST_TIMEOUT_SECONDS
) -> vod_client.VodClient:
    """An API 3.0 client for VOD, or for an emulator at `endpoint` (e.g. `http://127.0.0.1:8001`)."""
    parts = urlsplit(endpoint or DEFAULT_ENDPOINT)
    http = HttpProfile(protocol=parts.scheme, endpoint=parts.netloc, reqTimeout=timeout_seconds)
    return vod_client.VodClient(
        credential.Credential(secret_id, secret_key), API_REGION, ClientProfile(httpProfile=http)
    )


class VodApi:
    """One VOD application (a sub-application when `sub_app_id` is set) through API 3.0."""

    timeout_seconds: float = REQUEST_TIMEOUT_SECONDS

    def __init__(self, secret_id: str, secret_key: str, endpoint: str | None, sub_app_id: int | None) -> None:
        self._client = vod_api_client(secret_id, secret_key, endpoint, self.timeout_seconds)
        self._sub_app_id = sub_app_id

    def _in_app(self, request: T) -> T:
        if self._sub_app_id is not None:
            request.SubAppId = self._sub_app_id  # type: ignore[attr-defined]
        return request


class VodEventQueue(VodApi):
    def pull(self) -> list[PulledEvent]:
        """PullEvents, read from its raw JSON answer rather than through the SDK's models: those raise on the
        whole answer when one event holds a field of a type they do not expect (a FileUploadEvent that is
        not an object), which would stop every pull that returned it. Each event is then the consumer's to
        apply or park, as VOD sent it, unknown keys included."""
        params: dict[str, Any] = {} if self._sub_app_id is None else {"SubAppId": self._sub_app_id}
        try:
            answer = json.loads(self._client.call("PullEvents", params))["Response"]
            if "Error" in answer:  # the SDK raises on errors only in answers labelled JSON
                raise QueueUnavailable(f"PullEvents: {str(answer['Error'])[:200]}")
            events = answer.get("EventSet") or []
        except TencentCloudSDKException as error:
            raise QueueUnavailable(f"PullEvents: {error.code}: {error.message}") from None
        except (ValueError, LookupError, TypeError, AttributeError, RecursionError) as error:
            raise QueueUnavailable(f"PullEvents: not an answer: {type(error).__name__}") from None
        if not isinstance(events, list):
            raise QueueUnavailable("PullEvents: EventSet is not a list")
        pulled = []
        for event in events:
            handle = event.get("EventHandle") if isinstance(event, dict) else None
            if not isinstance(handle, str) or not handle:
                # Nothing to confirm it with: VOD will deliver it again, and it is logged again.
                logger.error("pulled event without an EventHandle ignored", extra={"kind": type(event).__name__})
                continue
            pulled.append(PulledEvent(handle, event_body(event)))
        return pulled

    def confirm(self, handles: list[str]) -> None:
        request = self._in_app(models.ConfirmEventsRequest())
        request.EventHandles = handles
        try:
            self._client.ConfirmEvents(request)
        except TencentCloudSDKException as error:
            raise QueueUnavailable(f"ConfirmEvents: {error.code}: {error.message}") from None


Api = TypeVar("Api", bound=VodApi)


class CurrentKeysClient(Generic[Api]):
    """One application's `api`, signed with the stage's current VOD key pair: each use asks `keys` (the secrets
    provider, which re-reads the secret every SECRETS_CACHE_SECONDS) and makes a new client only when the pair
    changed, so that its connections are kept otherwise. A warm container outlives many re-reads of the secret: a
    client made with the pair of its first use would be used long after VOD stopped accepting that pair."""

    def __init__(
        self, api: type[Api], keys: Callable[[], tuple[str, str]], endpoint: str | None, sub_app_id: int | None
    ) -> None:
        self._api = api
        self._keys = keys
        self._endpoint = endpoint
        self._sub_app_id = sub_app_id
        self._current: tuple[tuple[str, str], Api] | None = None

    def current(self) -> Api:
        pair = self._keys()
        if self._current is None or self._current[0] != pair:
            self._current = (pair, self._api(*pair, self._endpoint, self._sub_app_id))
        return self._current[1]


class CurrentKeysEventQueue:
    """The event queue with the stage's current key pair, as signing and the sweep use it: a consumer run outlasts
    many pulls, and its container many runs."""

    def __init__(self, keys: Callable[[], tuple[str, str]], endpoint: str | None, sub_app_id: int | None) -> None:
        self._queues = CurrentKeysClient(VodEventQueue, keys, endpoint, sub_app_id)

    def pull(self) -> list[PulledEvent]:
        return self._queue().pull()

    def confirm(self, handles: list[str]) -> None:
        self._queue().confirm(handles)

    def _queue(self) -> VodEventQueue:
        try:
            return self._queues.current()
        except ServiceUnavailable as error:
            raise QueueUnavailable(f"VOD keys: {error.message}") from None


class VodMediaLibrary(VodApi):
    """Deletes files from VOD (DeleteMedia), with the sweep's timeout: its clean-up of uploads nobody owns and
    of video deletions left pending."""

    timeout_seconds = DELETE_MEDIA_SECONDS

    def delete(self, file_id: str) -> bool:
        request = self._in_app(models.DeleteMediaRequest())
        request.FileId = file_id
        try:
            self._client.DeleteMedia(request)
        except TencentCloudSDKException as error:
            if error.code == "ResourceNotFound.FileNotExist":
                return False  # deleted already
            raise VodUnavailable(f"DeleteMedia: {error.code}: {error.message}") from None
        return True


class VodMediaLibraryInRequest(VodMediaLibrary):
    """DeleteMedia within a request's deadline (`DELETE /videos/{fileId}`)."""

    timeout_seconds = DELETE_MEDIA_REQUEST_SECONDS


class VodMediaCatalog(VodApi):
    """What VOD knows of an uploaded file (DescribeMediaInfos): checks a FileId a client reports."""

    timeout_seconds = DESCRIBE_MEDIA_SECONDS

    def describe(self, file_id: str) -> UploadedFile | None:
        request = self._in_app(models.DescribeMediaInfosRequest())
        request.FileIds = [file_id]
        request.Filters = ["basicInfo", "metaData"]
        try:
            found = self._client.DescribeMediaInfos(request).MediaInfoSet or []
        except TencentCloudSDKException as error:
            raise VodUnavailable(f"DescribeMediaInfos: {error.code}: {error.message}") from None
        for info in found:
            if info.FileId == file_id:
                try:
                    return vod_notification.uploaded_from_media_info(json.loads(info.to_json_string()))
                except InvalidRequest as error:
                    raise VodUnavailable(f"DescribeMediaInfos: unreadable MediaInfo: {error.message}") from None
        return None
