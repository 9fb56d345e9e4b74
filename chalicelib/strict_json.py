"""Strict JSON for untrusted input: no NaN/Infinity; hostile nesting or numbers are a 400, never a crash.

Whatever a client stores is later copied into other records, encoded again and sent to browsers, so it
is bounded where it comes in: nesting depth, and numbers that JSON and DynamoDB can carry back out
(`1e400` parses to an infinite float, which `json.dumps` would write as the non-JSON `Infinity`).
"""

from __future__ import annotations

import json
import math
from typing import Any

from chalicelib.errors import InvalidRequest

# A JSON request body, counting the body object itself as depth 1.
MAX_BODY_DEPTH = 10


class UnboundedJson(ValueError):
    """A JSON value nests too deeply or holds a number that cannot round-trip; `path` names where."""

    def __init__(self, path: str, problem: str) -> None:
        super().__init__(f"{path}: {problem}")
        self.path = path
        self.problem = problem


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def load_json(raw: bytes | str, field: str) -> Any:
    try:
        return json.loads(raw, parse_constant=_reject_constant)
    except RecursionError:
        raise InvalidRequest(field, "nests too deeply") from None
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise InvalidRequest(field, f"is not valid JSON ({exc.__class__.__name__})") from None


def load_bounded_json(raw: bytes | str, field: str, max_depth: int = MAX_BODY_DEPTH) -> Any:
    """`load_json`, then `check_bounded`: a 400 that names the offending member, e.g. `metadata.big`."""
    value = load_json(raw, field)
    try:
        check_bounded(value, max_depth)
    except UnboundedJson as exc:
        raise InvalidRequest(exc.path or field, exc.problem) from None
    return value


def check_bounded(value: Any, max_depth: int, root: str = "") -> None:
    """Raise `UnboundedJson` unless `value` nests at most `max_depth` containers deep and every number is
    finite. Iterative, so a hostile depth cannot exhaust the stack here."""
    pending: list[tuple[Any, str, int]] = [(value, root, 1)]
    while pending:
        current, path, depth = pending.pop()
        if isinstance(current, float) and not math.isfinite(current):
            raise UnboundedJson(path, "must be a finite number")
        if isinstance(current, dict | list):
            if depth > max_depth:
                raise UnboundedJson(path, f"nests deeper than {max_depth} levels")
            members = current.items() if isinstance(current, dict) else enumerate(current)
            for key, member in members:
                child = f"{path}[{key}]" if isinstance(current, list) else (f"{path}.{key}" if path else str(key))
                pending.append((member, child, depth + 1))


def is_bounded(value: Any, max_depth: int) -> bool:
    try:
        check_bounded(value, max_depth)
    except UnboundedJson:
        return False
    return True


def dump_json(value: Any) -> str:
    """Compact JSON that is valid for any reader: a non-finite number is an error, never `Infinity`."""
    return json.dumps(value, separators=(",", ":"), allow_nan=False)


def load_stored_json(text: str, max_depth: int) -> Any:
    """Decode JSON this service stored earlier. Records written before the bounds existed may hold
    anything a client sent; such a value reads as None rather than failing every later read and write."""
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):
        return None
    return value if is_bounded(value, max_depth) else None
