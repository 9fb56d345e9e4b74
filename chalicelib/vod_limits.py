"""VOD's limit on an upload signature's validity (vod-protocol.md §1.2), in a module of its own: the upload policy,
loaded on every route with the settings, bounds lifetimes by it without importing the signing code, which the
callback's cold start need not import (bench/cold_start.py)."""

MAX_VALIDITY_SECONDS = 7_776_000
