"""Strict JSON for untrusted input: no NaN/Infinity; hostile nesting or numbers are a 400, never a crash."""

from __future__ import annotations

import json
from typing import Any

from chalicelib.errors import InvalidRequest


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def load_json(raw: bytes | str, field: str) -> Any:
    try:
        return json.loads(raw, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise InvalidRequest(field, f"is not valid JSON ({exc.__class__.__name__})") from None
