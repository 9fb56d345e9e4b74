"""Waiting on an observable signal, never for a fixed time: a test that must see something happen polls for it
and fails, naming what it waited for, once the time it allows is up."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Mapping


def wait_until(condition: Callable[[], object], what: str, timeout: float = 30, poll: float = 0.01) -> None:
    """Returns as soon as ``condition()`` is true; an ``AssertionError`` naming ``what`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"after {timeout:g} s: {what}"
        time.sleep(poll)


def pulled(expected: Mapping[str, int], run_seconds: float = 8.0, timeout: float = 60) -> dict[str, int]:
    """The outcomes of the stage's PULL consumer, added up over its runs until they are ``expected`` or one it does
    not expect appears. An event the storage could not apply in time (the local DynamoDB is slow on a loaded
    machine) is left for redelivery and applied by a later run, as it would be on a stage."""
    from chalicelib import container

    total: Counter[str] = Counter()
    deadline = time.monotonic() + timeout
    while total != Counter(expected) and set(total) <= set(expected) and time.monotonic() < deadline:
        total.update(container.services().pull_consumer.run(run_seconds).outcomes)
    return dict(total)
