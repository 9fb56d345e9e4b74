"""Our signing API (README, API): upload intents, their signatures, and the caller's videos."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import requests

from vodup.errors import ApiError

# A 503 means storage did not answer in time and nothing changed (README, API): worth a few retries.
UNAVAILABLE_RETRIES = 3


class ApiClient:
    def __init__(self, base_url: str, token: str, session: requests.Session | None = None, timeout: float = 15) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise ApiError(0, "bad_url", f"the API URL must start with http:// or https://, got {base_url!r}")
        self.base_url = base_url.rstrip("/")
        self.token = token
        self.session = session or requests.Session()
        self.timeout = timeout

    def request(self, method: str, path: str, body: dict[str, Any] | None = None, **params: Any) -> Any:
        for attempt in range(UNAVAILABLE_RETRIES + 1):
            try:
                response = self.session.request(
                    method,
                    self.base_url + path,
                    json=body,
                    params=params or None,
                    headers={"Authorization": f"Bearer {self.token}"},
                    timeout=self.timeout,
                )
            except requests.RequestException as exc:
                raise ApiError(0, "unreachable", f"the API at {self.base_url} did not answer: {exc}") from exc
            if response.status_code == 503 and attempt < UNAVAILABLE_RETRIES:
                time.sleep(min(float(response.headers.get("Retry-After") or 1), 5))
                continue
            if response.status_code < 400:
                return response.json()
            raise self._error(method, path, response)
        raise AssertionError("unreachable: the last attempt returns or raises")

    def _error(self, method: str, path: str, response: requests.Response) -> ApiError:
        try:
            body = response.json()
        except ValueError:
            body = {}
        body = body if isinstance(body, dict) else {}
        error = str(body.get("error") or response.reason or "error")
        detail = str(body.get("message") or "")
        retry_after = body.get("retryAfter")
        what = {401: "the token was refused (missing, invalid or expired)", 404: "not found, or not yours"}.get(
            response.status_code, detail or error
        )
        if response.status_code == 429:
            what = f"limit reached ({body.get('limit') or error}); retry after {retry_after} s"
        message = f"API {method} {path}: {response.status_code} {error}: {what}"
        return ApiError(response.status_code, error, message, retry_after if isinstance(retry_after, int) else None)

    def videos(self, page_size: int = 100) -> Iterator[dict[str, Any]]:
        """Every video of the token's user, newest first, across pages."""
        cursor: str | None = None
        while True:
            params: dict[str, Any] = {"limit": page_size, **({"cursor": cursor} if cursor else {})}
            page = self.request("GET", "/videos", **params)
            yield from page["videos"]
            cursor = page.get("nextCursor")
            if not cursor:
                return


class ApiSigner:
    """A ``get_signature`` for our API: the first call creates an upload intent (``POST /uploads``, with
    ``intent`` as its body), every later call gets a fresh signature for the same intent
    (``POST /uploads/{uploadId}/signature``), since each VOD request spends one."""

    def __init__(self, api: ApiClient, intent: dict[str, Any] | None = None) -> None:
        self.api = api
        self.intent = intent or {}
        self.upload_id: str | None = None

    def __call__(self) -> str:
        if self.upload_id is None:
            created = self.api.request("POST", "/uploads", self.intent)
            self.upload_id = str(created["uploadId"])
            return str(created["signature"])
        return str(self.api.request("POST", f"/uploads/{self.upload_id}/signature")["signature"])

    # The resume protocol (vodup.uploader.ResumableSigner): a resumed upload keeps signing for its own intent.
    def context(self) -> str | None:
        return self.upload_id

    def resume(self, context: str) -> None:
        self.upload_id = context
