"""Our signing API (docs/api.md): upload intents, their signatures, and the caller's videos.

Nothing the API answers is trusted: each call has one deadline for all of it (connect, headers, body, retries),
an answer is read up to a size bound, every answer is validated before it is used, and every id is checked
against a strict pattern (and quoted) before it goes into a URL."""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Iterator
from typing import Annotated, Any, Literal, TypeVar
from urllib.parse import quote, urlencode, urlsplit

from pydantic import BaseModel, ConfigDict, StringConstraints, ValidationError

from vodup.errors import ApiError, one_line
from vodup.transport import ExchangeFailed, Reply, exchange

# A 503 means storage did not answer in time and nothing changed (docs/api.md): worth a few retries.
UNAVAILABLE_RETRIES = 3
# The API answers within about 3.5 s or with a 503 (docs/api.md); the retries of a 503 fit in this too.
DEFAULT_DEADLINE = 30.0
# A page of 100 videos with their metadata is well under 1 MiB.
DEFAULT_MAX_ANSWER_BYTES = 8 << 20
# 10,000 pages of 100 videos; a cursor seen before ends the listing earlier.
DEFAULT_MAX_PAGES = 10_000

# Ids go into URLs: only URL-safe characters, bounded (the API's uploadIds are 22 base64url characters).
ID_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
# Cursors are opaque; the API's are base64url. They travel in the query string, URL-encoded.
CURSOR_PATTERN = r"^[A-Za-z0-9_.~+/=-]{1,2048}$"
SIGNATURE_PATTERN = r"^[A-Za-z0-9+/=_-]{1,4096}$"

UploadId = Annotated[str, StringConstraints(pattern=ID_PATTERN)]
FileId = Annotated[str, StringConstraints(pattern=ID_PATTERN)]
Cursor = Annotated[str, StringConstraints(pattern=CURSOR_PATTERN)]
SignatureText = Annotated[str, StringConstraints(pattern=SIGNATURE_PATTERN)]


class _Answer(BaseModel):
    # A newer server may add fields (ignored); a field of the wrong type is refused, never coerced.
    model_config = ConfigDict(extra="ignore", strict=True, frozen=True)


class CreatedUpload(_Answer):
    uploadId: UploadId  # noqa: N815
    signature: SignatureText


class RenewedSignature(_Answer):
    uploadId: UploadId | None = None  # noqa: N815 - sent by our API; Tencent's sample servers leave it out
    signature: SignatureText


class Video(BaseModel):
    """The fields vodup shows; the others are passed on as they came (``--json``)."""

    model_config = ConfigDict(extra="allow", strict=True)

    fileId: FileId  # noqa: N815
    title: str | None = None
    size: int | None = None
    mediaUrl: str | None = None  # noqa: N815


class FinishedVideo(_Answer):
    """The video an upload intent ended in (``GET /uploads/{uploadId}``, once the API attributed it)."""

    fileId: FileId  # noqa: N815
    mediaUrl: str  # noqa: N815
    coverUrl: str | None = None  # noqa: N815


class UploadStatus(_Answer):
    video: FinishedVideo | None = None


class CompletedUpload(_Answer):
    outcome: Literal["attributed", "duplicate"]


class CancelledUpload(_Answer):
    uploadId: UploadId  # noqa: N815
    status: Literal["cancelled"]


class VideoPage(_Answer):
    videos: list[Video]
    nextCursor: Cursor | None  # noqa: N815


AnswerT = TypeVar("AnswerT", bound=BaseModel)


def unexpected(exc: ValidationError, whole: str) -> str:
    """The first thing wrong with an answer, on one line, without echoing what the server sent."""
    first = exc.errors()[0]
    return f"unexpected answer: {'.'.join(str(part) for part in first['loc']) or whole}: {first['msg']}"


def checked_id(value: str, what: str = "uploadId") -> str:
    """``value`` if it is an id that may go into a URL path; an ``ApiError`` otherwise."""
    if not re.fullmatch(ID_PATTERN, value):
        raise ApiError(0, "bad_id", f"refusing to use {what} {_shown(value)}: it is not an id the API issues")
    return value


def _shown(text: str) -> str:
    """Untrusted text fit for a one-line message: printable, bounded, quoted."""
    return repr(one_line(text, 80))


class ApiClient:
    """``deadline``: seconds for a whole call, retries included; ``max_answer_bytes``: the largest answer read;
    ``max_pages``: the most pages ``videos()`` follows."""

    def __init__(
        self,
        base_url: str,
        token: str,
        *,
        deadline: float = DEFAULT_DEADLINE,
        max_answer_bytes: int = DEFAULT_MAX_ANSWER_BYTES,
        max_pages: int = DEFAULT_MAX_PAGES,
    ) -> None:
        try:
            url = urlsplit(base_url)
            url.port  # noqa: B018 - raises ValueError for a port that is not one
        except ValueError as exc:
            raise ApiError(0, "bad_url", f"the API URL {_shown(base_url)} is not a URL: {exc}") from exc
        if url.scheme not in ("http", "https") or not url.hostname or url.query or url.fragment or url.username:
            raise ApiError(0, "bad_url", f"the API URL must be http(s)://host[:port][/path], got {_shown(base_url)}")
        if not (0 < deadline < math.inf and max_answer_bytes > 0 and max_pages > 0):  # NaN fails the first
            raise ValueError("deadline, max_answer_bytes and max_pages must be positive (the deadline finite)")
        self.base_url = base_url.rstrip("/")
        self.token = token
        self.deadline = deadline
        self.max_answer_bytes = max_answer_bytes
        self.max_pages = max_pages

    # --- the routes vodup uses -----------------------------------------------------------------------
    def create_upload(self, intent: dict[str, Any]) -> CreatedUpload:
        return self.answer(CreatedUpload, "POST", "/uploads", intent)

    def renew_signature(self, upload_id: str) -> str:
        path = f"/uploads/{quote(checked_id(upload_id), safe='')}/signature"
        renewed = self.answer(RenewedSignature, "POST", path)
        if renewed.uploadId not in (None, upload_id):
            raise ApiError(0, "bad_answer", f"API POST {path}: answered a signature for another upload")
        return renewed.signature

    def upload(self, upload_id: str) -> UploadStatus:
        return self.answer(UploadStatus, "GET", f"/uploads/{quote(checked_id(upload_id), safe='')}")

    def complete_upload(self, upload_id: str, file_id: str) -> str:
        """Reports the upload done with the FileId VOD's Commit answered; the API attributes it at once. Its
        outcome: ``attributed``, or ``duplicate`` when VOD's event was first."""
        path = f"/uploads/{quote(checked_id(upload_id), safe='')}/complete"
        return self.answer(CompletedUpload, "POST", path, {"fileId": checked_id(file_id, "fileId")}).outcome

    def cancel_upload(self, upload_id: str) -> None:
        """Takes the upload intent back (``DELETE /uploads/{uploadId}``): the API frees its slot and signs no more for
        it, and a file VOD still receives for it is not attributed. Idempotent. An ``ApiError`` 409 once an upload
        was attributed to it (its message names the FileId)."""
        path = f"/uploads/{quote(checked_id(upload_id), safe='')}"
        if self.answer(CancelledUpload, "DELETE", path).uploadId != upload_id:
            raise ApiError(0, "bad_answer", f"API DELETE {path}: answered for another upload")

    def delete_video(self, file_id: str) -> None:
        """Deletes the token's user's video, from VOD too; done also when it was deleted before. The API's
        503 (VOD slow: the deletion is then pending) is retried within the deadline like any other."""
        self.request("DELETE", f"/videos/{quote(checked_id(file_id, 'fileId'), safe='')}")

    def videos(self, page_size: int = 100) -> Iterator[dict[str, Any]]:
        """Every video of the token's user, newest first, across pages."""
        cursor: str | None = None
        seen: set[str] = set()
        for _ in range(self.max_pages):
            params: dict[str, Any] = {"limit": page_size, **({"cursor": cursor} if cursor else {})}
            page = self.answer(VideoPage, "GET", "/videos", **params)
            yield from (video.model_dump() for video in page.videos)
            cursor = page.nextCursor
            if cursor is None:
                return
            if cursor in seen:
                raise ApiError(0, "cursor_loop", "API GET /videos: a page repeated an earlier page's cursor")
            seen.add(cursor)
        raise ApiError(0, "too_many_pages", f"API GET /videos: still more after {self.max_pages} pages; stopped")

    # --- any route ------------------------------------------------------------------------------------
    def answer(
        self, model: type[AnswerT], method: str, path: str, body: dict[str, Any] | None = None, **params: Any
    ) -> AnswerT:
        """The answer to a request, validated as ``model``."""
        try:
            return model.model_validate(self.request(method, path, body, **params))
        except ValidationError as exc:
            raise ApiError(0, "bad_answer", f"API {method} {path}: {unexpected(exc, 'the body')}") from None

    def request(self, method: str, path: str, body: dict[str, Any] | None = None, **params: Any) -> Any:
        """The JSON of a 2xx answer (None for a 204); an ``ApiError`` for anything else, within ``deadline``
        seconds."""
        ends = time.monotonic() + self.deadline
        url = self.base_url + path + (f"?{urlencode(params)}" if params else "")
        headers = {"Authorization": f"Bearer {self.token}", "Accept": "application/json", "User-Agent": "vodup"}
        payload = None if body is None else json.dumps(body).encode()
        if payload is not None:
            headers["Content-Type"] = "application/json"
        for attempt in range(UNAVAILABLE_RETRIES + 1):
            try:
                reply = exchange(method, url, ends=ends, max_bytes=self.max_answer_bytes, headers=headers, body=payload)
            except ExchangeFailed as exc:
                if exc.kind == "deadline":
                    late = f"the API at {self.base_url} gave no complete answer within {self.deadline:g} s"
                    raise ApiError(0, exc.kind, late) from None
                raise ApiError(0, exc.kind, f"API {method} {path}: {exc}") from None
            if reply.status == 503 and attempt < UNAVAILABLE_RETRIES:
                pause = _retry_after(reply.headers.get("Retry-After"))
                if time.monotonic() + pause < ends:
                    time.sleep(pause)
                    continue
            if reply.status == 204:
                return None
            if 200 <= reply.status < 300:
                try:
                    return reply.json()
                except ValueError:
                    raise ApiError(
                        0, "bad_answer", f"API {method} {path}: answered {reply.status} without JSON"
                    ) from None
            raise self._error(method, path, reply)
        raise AssertionError("unreachable: the last attempt returns or raises")

    @staticmethod
    def _error(method: str, path: str, reply: Reply) -> ApiError:
        status = reply.status
        try:
            body = reply.json()
        except ValueError:
            body = {}
        fields = {k: v for k, v in body.items() if isinstance(v, str) and v} if isinstance(body, dict) else {}
        error = fields.get("error") or reply.reason or "error"
        what = {401: "the token was refused (missing, invalid or expired)", 404: "not found, or not yours"}.get(
            status, fields.get("message") or error
        )
        retry_after = body.get("retryAfter") if isinstance(body, dict) else None
        retry_after = retry_after if type(retry_after) is int else None
        if status == 429 and error == "quota_exceeded":  # no retry: room is made by deleting videos
            what = f"quota reached: {fields.get('message') or error}"
        elif status == 429:
            what = f"limit reached ({fields.get('limit') or error}); retry after {retry_after} s"
        return ApiError(status, error, one_line(f"API {method} {path}: {status} {error}: {what}"), retry_after)


def _retry_after(header: str | None) -> float:
    return min(float(header), 5.0) if header and header.isdigit() else 1.0


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
            created = self.api.create_upload(self.intent)
            self.upload_id = created.uploadId
            return created.signature
        return self.api.renew_signature(self.upload_id)

    # The resume protocol (vodup.uploader.ResumableSigner): a resumed upload keeps signing for its own intent.
    def context(self) -> str | None:
        return self.upload_id

    def resume(self, context: str) -> None:
        self.upload_id = checked_id(context)

    def finished(self) -> FinishedVideo | None:
        """The video the intent ended in, if the API attributed one (the API then signs no more for it)."""
        return None if self.upload_id is None else self.api.upload(self.upload_id).video

    # The cancel protocol (vodup.uploader.CancellingSigner): the intent's upload was cancelled.
    def cancel_intent(self) -> None:
        if self.upload_id is not None:
            self.api.cancel_upload(self.upload_id)

    # The report protocol (vodup.uploader.ReportingSigner): the intent's upload is done.
    def done(self, file_id: str) -> str:
        if self.upload_id is None:
            raise ApiError(0, "no_intent", "no upload intent to report done: no signature was asked for")
        return self.api.complete_upload(self.upload_id, file_id)
