"""VOD's limit on an upload signature's validity (vod-protocol.md §1.2), in a module of its own: the upload policy,
loaded on every route with the settings, bounds lifetimes by it without importing the signing code, whose frozen
dataclasses cost the callback's cold start about 14 M instructions (bench/cold_start.py)."""

MAX_VALIDITY_SECONDS = 7_776_000
