"""CPython's garbage collector over a Lambda cold start.

A cold start allocates a few hundred thousand objects that live as long as the container (modules,
classes, pydantic's schemas, boto3's service models) and almost no garbage, yet the collector, triggered by
allocation counts, scans them again and again: bench/cold_start.py put it at about a sixth of the first
request's CPU time. So in Lambda (the runtime sets AWS_LAMBDA_FUNCTION_NAME) collection is off from the
handler module's import to the end of the first invocation; then everything alive is frozen (`gc.freeze`:
left out of every later collection) and collection resumes for what requests allocate. The price: reference
cycles that became garbage during that first invocation are never freed, a bounded one-off (about 700
objects, against some 100,000 frozen); collecting them first would cost a full collection on the first
request, most of what the pause saves. Elsewhere (tests, `chalice local`, tools importing the app) nothing
changes.
"""

from __future__ import annotations

import gc
import os

_paused = False


def pause_collection() -> None:
    """Called as the handler module loads."""
    global _paused
    if "AWS_LAMBDA_FUNCTION_NAME" in os.environ and gc.isenabled():
        gc.disable()
        _paused = True


def resume_collection() -> None:
    """Called as each invocation ends; acts after the first only."""
    global _paused
    if _paused:
        _paused = False
        gc.freeze()
        gc.enable()
