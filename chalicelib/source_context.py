"""The `sourceContext` VOD carries back to us: an upload id plus a truncated HMAC tag.

The tag lets the callback reject forged contexts before any database read. Format:
``v1.<uploadId>.<tag>``, plain ASCII, well under VOD's 250-character limit.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets

VERSION = "v1"
_UPLOAD_ID = re.compile(r"[A-Za-z0-9_-]{22}\Z")
_TAG_BYTES = 16


class InvalidContext(ValueError):
    pass


def new_upload_id() -> str:
    return secrets.token_urlsafe(16)


def is_upload_id(value: str) -> bool:
    return bool(_UPLOAD_ID.match(value))


def _tag(upload_id: str, key: bytes) -> str:
    digest = hmac.new(key, f"{VERSION}.{upload_id}".encode("ascii"), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest[:_TAG_BYTES]).rstrip(b"=").decode("ascii")


def encode(upload_id: str, key: bytes) -> str:
    if not is_upload_id(upload_id):
        raise InvalidContext("malformed upload id")
    return f"{VERSION}.{upload_id}.{_tag(upload_id, key)}"


def decode(context: str, key: bytes) -> str:
    """Return the upload id of an authentic context, else raise InvalidContext."""
    parts = context.split(".")
    if len(parts) != 3 or parts[0] != VERSION or not is_upload_id(parts[1]):
        raise InvalidContext("malformed context")
    if not hmac.compare_digest(parts[2].encode("ascii", "replace"), _tag(parts[1], key).encode("ascii")):
        raise InvalidContext("bad context tag")
    return parts[1]
