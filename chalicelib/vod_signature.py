"""Tencent Cloud VOD client-upload signatures (vod-protocol.md §1.2-§1.3).

signature = Base64(HMAC-SHA1(SecretKey, original) || original), where ``original`` is the
RFC 3986 query string of the parameters. Pure: no I/O, no clock unless the caller omits ``now``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import secrets
import time
from typing import Literal
from urllib.parse import parse_qsl, quote, urlencode

from msgspec import Struct

from chalicelib.vod_limits import MAX_VALIDITY_SECONDS

MAX_RANDOM = 2**32 - 1
MAX_SOURCE_CONTEXT = 250
MAX_SESSION_CONTEXT = 1000
MAC_LENGTH = 20

TaskNotifyMode = Literal["Finish", "Change", "None"]
_NOTIFY_MODES = ("Finish", "Change", "None")
_INTEGER = re.compile(r"-?[0-9]+\Z")

# Required keys first, then the optional ones in the order of the protocol's test vector B.
_REQUIRED_KEYS = ("secretId", "currentTimeStamp", "expireTime", "random")
_OPTIONAL_KEYS = (
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
_INTEGER_KEYS = frozenset(
    {"currentTimeStamp", "expireTime", "random", "taskPriority", "classId", "oneTimeValid", "vodSubAppId"}
)


class SignatureError(ValueError):
    """A parameter is out of range or a signature is malformed; ``field`` names the culprit."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class SignatureOptions(Struct, frozen=True):
    """The optional parameters of §1.2; ``None`` means "omit from the signature"."""

    procedure: str | None = None
    taskPriority: int | None = None  # noqa: N815 - wire names
    taskNotifyMode: TaskNotifyMode | None = None  # noqa: N815
    classId: int | None = None  # noqa: N815
    sourceContext: str | None = None  # noqa: N815
    sessionContext: str | None = None  # noqa: N815
    oneTimeValid: int | None = None  # noqa: N815
    vodSubAppId: int | None = None  # noqa: N815
    storageRegion: str | None = None  # noqa: N815


class SignatureParams(Struct, frozen=True):
    secretId: str  # noqa: N815
    currentTimeStamp: int  # noqa: N815
    expireTime: int  # noqa: N815
    random: int
    options: SignatureOptions = SignatureOptions()

    @property
    def validity_seconds(self) -> int:
        return self.expireTime - self.currentTimeStamp

    def as_pairs(self) -> list[tuple[str, str | int]]:
        pairs: list[tuple[str, str | int]] = [
            ("secretId", self.secretId),
            ("currentTimeStamp", self.currentTimeStamp),
            ("expireTime", self.expireTime),
            ("random", self.random),
        ]
        for key in _OPTIONAL_KEYS:
            value = getattr(self.options, key)
            if value is not None:
                pairs.append((key, value))
        return pairs


class ParsedSignature(Struct, frozen=True):
    params: SignatureParams
    mac: bytes
    original: bytes


def _require_int(field: str, value: object, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise SignatureError(field, "must be an integer")
    if not low <= value <= high:
        raise SignatureError(field, f"must be between {low} and {high}, got {value}")


def _require_text(field: str, value: object, max_length: int) -> None:
    if not isinstance(value, str) or not value:
        raise SignatureError(field, "must be a non-empty string")
    if len(value) > max_length:
        raise SignatureError(field, f"must be at most {max_length} characters, got {len(value)}")


def validate(params: SignatureParams) -> None:
    """Raise SignatureError for any value VOD would reject (never truncate or coerce)."""
    _require_text("secretId", params.secretId, 128)
    _require_int("currentTimeStamp", params.currentTimeStamp, 0, 2**63 - 1)
    _require_int("expireTime", params.expireTime, 0, 2**63 - 1)
    _require_int("random", params.random, 0, MAX_RANDOM)
    validity = params.validity_seconds
    if not 1 <= validity <= MAX_VALIDITY_SECONDS:
        raise SignatureError(
            "expireTime", f"validity must be 1..{MAX_VALIDITY_SECONDS} s after currentTimeStamp, got {validity}"
        )
    opt = params.options
    if opt.procedure is not None:
        _require_text("procedure", opt.procedure, 128)
    if opt.taskPriority is not None:
        _require_int("taskPriority", opt.taskPriority, -10, 10)
    if opt.taskNotifyMode is not None and opt.taskNotifyMode not in _NOTIFY_MODES:
        raise SignatureError("taskNotifyMode", f"must be one of {', '.join(_NOTIFY_MODES)}")
    if opt.classId is not None:
        _require_int("classId", opt.classId, 0, 2**63 - 1)
    if opt.sourceContext is not None:
        _require_text("sourceContext", opt.sourceContext, MAX_SOURCE_CONTEXT)
    if opt.sessionContext is not None:
        _require_text("sessionContext", opt.sessionContext, MAX_SESSION_CONTEXT)
    if opt.oneTimeValid is not None:
        _require_int("oneTimeValid", opt.oneTimeValid, 0, 1)
    if opt.vodSubAppId is not None:
        _require_int("vodSubAppId", opt.vodSubAppId, 0, 2**63 - 1)
    if opt.storageRegion is not None:
        _require_text("storageRegion", opt.storageRegion, 64)


def encode_original(params: SignatureParams) -> bytes:
    validate(params)
    return urlencode(params.as_pairs(), quote_via=quote).encode("utf-8")


def mac_of(secret_key: str, original: bytes) -> bytes:
    return hmac.new(secret_key.encode("utf-8"), original, hashlib.sha1).digest()


def sign(params: SignatureParams, secret_key: str) -> str:
    original = encode_original(params)
    return base64.b64encode(mac_of(secret_key, original) + original).decode("ascii")


def new_params(
    secret_id: str, validity_seconds: int, options: SignatureOptions, now: int | None = None
) -> SignatureParams:
    """Fresh parameters: integer timestamp and an unpredictable 32-bit ``random``."""
    current = int(time.time()) if now is None else now
    params = SignatureParams(
        secretId=secret_id,
        currentTimeStamp=current,
        expireTime=current + validity_seconds,
        random=secrets.randbelow(2**32),
        options=options,
    )
    validate(params)
    return params


def parse(signature: str) -> ParsedSignature:
    """Decode a signature without checking its MAC (see ``verify``)."""
    try:
        raw = base64.b64decode(signature.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError) as exc:
        raise SignatureError("signature", "is not valid base64") from exc
    if len(raw) <= MAC_LENGTH:
        raise SignatureError("signature", "is too short")
    mac, original = raw[:MAC_LENGTH], raw[MAC_LENGTH:]
    try:
        pairs = parse_qsl(original.decode("utf-8"), keep_blank_values=True, strict_parsing=True)
    except (UnicodeDecodeError, ValueError) as exc:
        raise SignatureError("signature", "does not embed a query string") from exc
    values: dict[str, str | int] = {}
    for key, text in pairs:
        if key not in _REQUIRED_KEYS and key not in _OPTIONAL_KEYS:
            raise SignatureError(key, "is not a signature parameter")
        if key in values:
            raise SignatureError(key, "appears twice")
        if key in _INTEGER_KEYS:
            if not _INTEGER.match(text):
                raise SignatureError(key, f"must be an integer, got {text!r}")
            values[key] = int(text)
        else:
            values[key] = text
    for key in _REQUIRED_KEYS:
        if key not in values:
            raise SignatureError(key, "is missing")
    option_names = set(SignatureOptions.__struct_fields__)
    params = SignatureParams(
        secretId=str(values["secretId"]),
        currentTimeStamp=int(values["currentTimeStamp"]),
        expireTime=int(values["expireTime"]),
        random=int(values["random"]),
        options=SignatureOptions(**{k: v for k, v in values.items() if k in option_names}),  # type: ignore[arg-type]
    )
    validate(params)
    return ParsedSignature(params=params, mac=mac, original=original)


def verify(signature: str, secret_key: str) -> ParsedSignature:
    """Parse and check the MAC in constant time; expiry is the caller's policy."""
    parsed = parse(signature)
    if not hmac.compare_digest(parsed.mac, mac_of(secret_key, parsed.original)):
        raise SignatureError("signature", "MAC does not verify")
    return parsed
