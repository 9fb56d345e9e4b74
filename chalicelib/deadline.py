"""The time left to answer the current request.

A request that waits on storage must still answer before its caller gives up (VOD waits 5 s for a
callback; API Gateway 29 s, but an app's user far less), so calls to other services retry only while
the request's deadline allows another attempt. The deadline is request-scoped state: it is set where a
request enters (`within`) and read where a call is retried, without threading it through every
signature in between. Outside a request there is no deadline.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

_ends_at: ContextVar[float | None] = ContextVar("request_deadline", default=None)


@contextmanager
def within(seconds: float) -> Iterator[None]:
    token = _ends_at.set(time.monotonic() + seconds)
    try:
        yield
    finally:
        _ends_at.reset(token)


def remaining() -> float:
    """Seconds left before the current request's deadline; infinite outside a request."""
    ends_at = _ends_at.get()
    return math.inf if ends_at is None else ends_at - time.monotonic()
