"""Authenticity of VOD's callbacks (vod-protocol.md §2.4): the secret path token, and `Sign = MD5(SignKey + T)`.

`sign` is the one implementation of VOD's side, used by vodlocal and the tests; `check_sign` is ours.
"""

from __future__ import annotations

import hashlib
import hmac

from chalicelib.errors import Forbidden, Unauthorized


def sign(sign_key: str, expires_at: int) -> str:
    """The `Sign` VOD sends with a notification that expires at `expires_at` (its `T`)."""
    return hashlib.md5(f"{sign_key}{expires_at}".encode(), usedforsecurity=False).hexdigest()


def check_path_token(presented: str, expected: str) -> None:
    if not hmac.compare_digest(presented.encode("utf-8"), expected.encode("utf-8")):
        raise Forbidden("unknown callback token")


def check_sign(
    sign_value: str | None, expires_at: int | None, sign_key: str, now: int, max_lifetime_seconds: int
) -> None:
    """`Sign` matches (case-insensitive, constant time), `T` not yet passed, and `T` no further ahead than
    `max_lifetime_seconds`: VOD puts it 10 minutes ahead, and a pair with a distant `T` would let whoever saw
    it forge notifications until then."""
    if sign_value is None or expires_at is None:
        raise Unauthorized("Sign and T are required")
    if expires_at < now:
        raise Unauthorized("notification has expired (T is in the past)")
    if expires_at > now + max_lifetime_seconds:
        raise Unauthorized(f"notification expiry T is more than {max_lifetime_seconds} s ahead")
    expected = sign(sign_key, expires_at)
    if not hmac.compare_digest(expected.encode("ascii"), sign_value.lower().encode("utf-8", "replace")):
        raise Unauthorized("Sign does not match")
