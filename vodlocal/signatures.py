"""VOD's side of the two signatures it shares with a customer's backend, from vod-protocol.md alone (vodlocal
stands in for Tencent, so it never borrows the product's reading of the protocol):

* the client upload signature VOD checks (§1.3, §1.5): ``Base64(HMAC-SHA1(SecretKey, original) || original)``,
  where ``original`` is the query string of the parameters (§1.2);
* the ``Sign`` VOD adds to a PUSH callback when a SignKey is configured (§2.4): hex ``MD5(SignKey + T)``.

Tencent does not document its checks (§1.5). The ones here follow the documented limits; where the reference
is silent, the choice is vodlocal's and is listed in vodlocal/README.md (What is emulated, UGC API).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from urllib.parse import parse_qsl

MAC_BYTES = 20  # an HMAC-SHA1 digest
VALIDITY_CAP = 7_776_000  # expireTime - currentTimeStamp: 90 days at most
# Where §1.2 gives an integer no bound of its own: the largest a signed 64-bit integer holds (19 digits, _DECIMAL).
INT64_MAX = 2**63 - 1

# Every parameter of §1.2 with what its value must be: (low, high) for an integer, a length cap for text.
_INTEGER_RANGES: dict[str, tuple[int, int]] = {
    "currentTimeStamp": (0, INT64_MAX),
    "expireTime": (0, INT64_MAX),
    "random": (0, 2**32 - 1),
    "classId": (0, INT64_MAX),
    "taskPriority": (-10, 10),
    "oneTimeValid": (0, 1),
    "vodSubAppId": (0, INT64_MAX),
}
_TEXT_CAPS: dict[str, int] = {
    "secretId": 128,
    "procedure": 128,
    "taskNotifyMode": 6,
    "sourceContext": 250,
    "sessionContext": 1000,
    "storageRegion": 64,
}
REQUIRED = ("secretId", "currentTimeStamp", "expireTime", "random")
OPTIONAL = (
    "procedure",
    "taskPriority",
    "taskNotifyMode",
    "classId",
    "sourceContext",
    "sessionContext",
    "oneTimeValid",
    "vodSubAppId",
    "storageRegion",
)
NOTIFY_MODES = frozenset({"Finish", "Change", "None"})
# Decimal digits only: "1700000000.5" is refused (a fractional currentTimeStamp fails at VOD, §1.2).
_DECIMAL = re.compile(r"-?[0-9]{1,19}")


class BadSignature(ValueError):
    """The signature is refused; the message says why (it goes back to the client)."""


@dataclass(frozen=True)
class UploadSignature:
    """A verified upload signature. ``options`` holds every optional parameter under its wire name, ``None``
    where the signature leaves it out; ``mac`` is the 20-byte MAC, which names the signature."""

    secret_id: str
    current_time: int
    expire_time: int
    random: int
    options: Mapping[str, str | int | None]
    mac: bytes

    @property
    def one_time(self) -> bool:
        return self.options["oneTimeValid"] == 1

    @property
    def source_context(self) -> str | None:
        value = self.options["sourceContext"]
        return None if value is None else str(value)

    @property
    def sub_app_id(self) -> int | None:
        value = self.options["vodSubAppId"]
        return None if value is None else int(value)

    @property
    def storage_region(self) -> str | None:
        value = self.options["storageRegion"]
        return None if value is None else str(value)


def upload_mac(secret_key: str, original: bytes) -> bytes:
    return hmac.new(secret_key.encode("utf-8"), original, hashlib.sha1).digest()


def verify_upload_signature(signature: str, key_of: Callable[[str], str | None]) -> UploadSignature:
    """Split the signature, find the SecretKey of its ``secretId`` with ``key_of``, check the MAC over the exact
    bytes received (constant time), then the values. Expiry against the clock is the caller's."""
    try:
        raw = base64.b64decode(signature.encode("ascii"), validate=True)
    except (UnicodeEncodeError, binascii.Error):
        raise BadSignature("not Base64") from None
    if len(raw) <= MAC_BYTES:
        raise BadSignature("too short to hold a MAC and parameters")
    mac, original = raw[:MAC_BYTES], raw[MAC_BYTES:]
    texts = _query(original)
    secret_id = texts.get("secretId") or ""
    secret_key = key_of(secret_id)
    if secret_key is None:
        raise BadSignature("unknown secretId")
    if not hmac.compare_digest(mac, upload_mac(secret_key, original)):
        raise BadSignature("the MAC does not match")
    values = {name: _value(name, text) for name, text in texts.items()}
    for name in REQUIRED:
        if values.get(name) is None:
            raise BadSignature(f"{name} is missing")
    current, expires = int(values["currentTimeStamp"] or 0), int(values["expireTime"] or 0)
    if not 0 < expires - current <= VALIDITY_CAP:
        raise BadSignature(f"expireTime must be 1 to {VALIDITY_CAP} s after currentTimeStamp")
    return UploadSignature(
        secret_id=secret_id,
        current_time=current,
        expire_time=expires,
        random=int(values["random"] or 0),
        options={name: values.get(name) for name in OPTIONAL},
        mac=mac,
    )


def _query(original: bytes) -> dict[str, str]:
    """The parameters as decoded text, each at most once and each one VOD knows."""
    try:
        pairs = parse_qsl(original.decode("utf-8"), keep_blank_values=True, strict_parsing=True)
    except (UnicodeDecodeError, ValueError):
        raise BadSignature("the signed part is not a query string") from None
    texts: dict[str, str] = {}
    for name, text in pairs:
        if name not in _INTEGER_RANGES and name not in _TEXT_CAPS:
            raise BadSignature(f"unknown parameter {name[:40]!r}")
        if name in texts:
            raise BadSignature(f"{name} appears twice")
        texts[name] = text
    return texts


def _value(name: str, text: str) -> str | int | None:
    """A parameter's value; an empty optional one counts as left out (S1: an empty vodSubAppId names the primary
    application; the Node samples send ``key=`` for an unset value, §1.4)."""
    if not text:
        if name in REQUIRED:
            raise BadSignature(f"{name} is empty")
        return None
    if name in _INTEGER_RANGES:
        low, high = _INTEGER_RANGES[name]
        if not _DECIMAL.fullmatch(text) or not low <= int(text) <= high:
            raise BadSignature(f"{name} must be an integer from {low} to {high}")
        return int(text)
    if len(text) > _TEXT_CAPS[name]:
        raise BadSignature(f"{name} is longer than {_TEXT_CAPS[name]} characters")
    if name == "taskNotifyMode" and text not in NOTIFY_MODES:
        raise BadSignature("taskNotifyMode must be Finish, Change or None")
    return text


def callback_sign(sign_key: str, expires_at: int) -> str:
    """The ``Sign`` of a callback whose ``T`` (its expiry, Unix seconds) is ``expires_at``."""
    return hashlib.md5(f"{sign_key}{expires_at}".encode(), usedforsecurity=False).hexdigest()
