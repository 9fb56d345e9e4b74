"""Domain errors. Each carries what the HTTP layer needs; the mapping lives in `chalicelib.http`."""

from __future__ import annotations

from typing import Any


class DomainError(Exception):
    status = 500
    code = "internal_error"

    def __init__(self, message: str, field: str | None = None, retry_after_seconds: int | None = None) -> None:
        """`retry_after_seconds`: when the same request may succeed (a `Retry-After` header and body field)."""
        super().__init__(message)
        self.message = message
        self.field = field
        self.retry_after_seconds = None if retry_after_seconds is None else max(1, retry_after_seconds)

    def body(self) -> dict[str, object]:
        body: dict[str, object] = {"error": self.code, "message": self.message}
        if self.field is not None:
            body["field"] = self.field
        if self.retry_after_seconds is not None:
            body["retryAfter"] = self.retry_after_seconds
        return body


class InvalidRequest(DomainError):
    status = 400
    code = "invalid_request"

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}", field)


class Unauthorized(DomainError):
    status = 401
    code = "unauthorized"


class Forbidden(DomainError):
    status = 403
    code = "forbidden"


class NotFound(DomainError):
    status = 404
    code = "not_found"


class PayloadTooLarge(DomainError):
    status = 413
    code = "payload_too_large"


class LimitExceeded(DomainError):
    status = 429
    code = "limit_exceeded"

    def __init__(self, message: str, limit: str, retry_after_seconds: int) -> None:
        super().__init__(message, retry_after_seconds=retry_after_seconds)
        self.limit = limit

    def body(self) -> dict[str, object]:
        return {**super().body(), "limit": self.limit}


class QuotaExceeded(DomainError):
    """429: a declared size does not fit what is left of the bytes quota (chalicelib/quotas.py). No Retry-After:
    room is made by deleting videos (or by open uploads ending), not by waiting."""

    status = 429
    code = "quota_exceeded"

    def __init__(self, max_stored_bytes: int, bytes_stored: int, bytes_reserved: int, declared: int | None) -> None:
        what = "no room is left" if declared is None else f"a file of {declared} bytes does not fit"
        super().__init__(
            f"{what} in the quota of {max_stored_bytes} bytes: {bytes_stored} stored and {bytes_reserved} "
            "declared by open uploads"
        )
        self.max_stored_bytes, self.bytes_stored, self.bytes_reserved = max_stored_bytes, bytes_stored, bytes_reserved
        self.declared = declared

    def body(self) -> dict[str, object]:
        return {
            **super().body(),
            "limit": "stored_bytes",
            "maxStoredBytes": self.max_stored_bytes,
            "bytesStored": self.bytes_stored,
            "bytesReserved": self.bytes_reserved,
            "fileSize": self.declared,
        }


class Conflict(DomainError):
    status = 409
    code = "conflict"


class UploadClosed(Conflict):
    """The upload intent is settled and cannot take the request: `reason` says how (`already_completed`: an
    upload was attributed to it; `cancelled`: its owner cancelled it)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason

    def body(self) -> dict[str, object]:
        return {**super().body(), "reason": self.reason}


class UnsupportedMediaType(DomainError):
    status = 415
    code = "unsupported_media_type"


class FileRefused(DomainError):
    """A FileId reported to complete an upload is not that upload's file; `reason` says why."""

    status = 422
    code = "file_refused"

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason

    def body(self) -> dict[str, object]:
        return {**super().body(), "reason": self.reason}


class ServiceUnavailable(DomainError):
    """A dependency failed or is too slow: nothing was done that the client cannot safely retry."""

    status = 503
    code = "service_unavailable"

    def __init__(self, message: str, retry_after_seconds: int = 2) -> None:
        super().__init__(message, retry_after_seconds=retry_after_seconds)


def invalid_request_from(validation_error: Any) -> InvalidRequest:
    """The first problem a pydantic `ValidationError` reports, as a 400 that names its field."""
    first = validation_error.errors()[0]
    return InvalidRequest(".".join(str(part) for part in first["loc"]) or "body", first["msg"])


# -- storage outcomes ------------------------------------------------------------------------------------
# Facts the repository reports about a write it could not make; the service decides what they mean.


class CompletionLost(Exception):
    """The intent changed between our read and our write: evaluate it again."""


class FileOwnedElsewhere(Exception):
    """The FileId already belongs to another user's video."""


class VodUnavailable(Exception):
    """A VOD API call failed or timed out."""


class IdCollision(Exception):
    """An item with the new id already exists."""


class LimitReached(Exception):
    """A per-user limit is full: `limit` names it, `until` is when a slot frees (epoch seconds)."""

    def __init__(self, limit: str, until: int) -> None:
        super().__init__(limit)
        self.limit = limit
        self.until = until


class SignatureRefused(Exception):
    """No signature was counted; `current` is the intent as stored (None: there is none)."""

    def __init__(self, current: Any) -> None:
        super().__init__("signature refused")
        self.current = current
