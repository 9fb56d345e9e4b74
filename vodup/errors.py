"""What can go wrong, as exceptions a caller can tell apart; every message is one line a person can act on."""

from __future__ import annotations


def one_line(text: str, limit: int = 500) -> str:
    """``text`` (which may quote what a server sent) as one bounded line of printable characters."""
    flat = " ".join(text.split())
    return "".join(c if c.isprintable() else "?" for c in flat[:limit]) + ("…" if len(flat) > limit else "")


class VodupError(Exception):
    """Base of every failure vodup reports."""


class InputError(VodupError):
    """A local file that cannot be uploaded (missing, unreadable, not a regular file)."""


class StateError(VodupError):
    """The resume state's directory cannot be used (not a directory, not ours, not writable), or a write failed."""


class ApiError(VodupError):
    """Our signing API refused a request; ``status`` is its HTTP status, ``error`` its error code."""

    def __init__(self, status: int, error: str, message: str, retry_after: int | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.error = error
        self.retry_after = retry_after


class VodError(VodupError):
    """VOD's UGC API answered a non-zero ``code``. Subclasses name the codes a caller can act on."""

    code_hint = ""

    def __init__(self, action: str, code: int, message: str) -> None:
        hint = f" ({self.code_hint})" if self.code_hint else ""
        super().__init__(f"VOD {action} failed with code {code}: {message}{hint}")
        self.action = action
        self.code = code
        self.vod_message = message


class InvalidSignature(VodError):
    code_hint = "the signature was not accepted: check the signing server's key pair"


class SessionExpired(VodError):
    code_hint = "the upload session is unknown, committed or older than 1 day: upload again from the start"


class DuplicateSignature(VodError):
    code_hint = "a one-time signature was used twice: get_signature must return a fresh one on every call"


class FileNotUploaded(VodError):
    code_hint = "VOD did not find the uploaded bytes in storage"


class SignatureExpired(VodError):
    code_hint = "the signature expired: check the signing server's clock and signature lifetime"


# Only 10010 is documented by Tencent (vod-protocol.md §4.7); the others are what vodlocal answers.
VOD_ERRORS: dict[int, type[VodError]] = {
    10002: InvalidSignature,
    10003: SessionExpired,
    10004: DuplicateSignature,
    10005: FileNotUploaded,
    10010: SignatureExpired,
}


def vod_error(action: str, code: int, message: str) -> VodError:
    return VOD_ERRORS.get(code, VodError)(action, code, message)


class TransferError(VodupError):
    """Storage (COS) refused a request (``code`` is COS's error code), or kept failing after every retry."""

    def __init__(self, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.code = code


class IntegrityError(VodupError):
    """Storage stored bytes other than the ones sent (its MD5 ETag differs from ours)."""


class UploadCancelled(VodupError):
    """``Uploader.cancel()`` was called: the multipart uploads were aborted, the resume state dropped and a
    ``CancellingSigner`` told (the message says if it could not be)."""


class UploadInterrupted(VodupError):
    """The upload stopped on Ctrl-C (or another ``KeyboardInterrupt``); running it again resumes it."""

    def __init__(self, sent: int, total: int) -> None:
        super().__init__(f"upload paused with {sent} of {total} bytes stored")
        self.sent = sent
        self.total = total
