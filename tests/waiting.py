"""Waiting on an observable signal, never for a fixed time: a test that must see something happen polls for it
and fails, naming what it waited for, once the time it allows is up."""

from __future__ import annotations

import time
from collections.abc import Callable


def wait_until(condition: Callable[[], object], what: str, timeout: float = 30, poll: float = 0.01) -> None:
    """Returns as soon as ``condition()`` is true; an ``AssertionError`` naming ``what`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"after {timeout:g} s: {what}"
        time.sleep(poll)
