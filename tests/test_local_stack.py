"""The whole local stack over real HTTP: `chalice local` serving the app, the local DynamoDB endpoint,
a token, `POST /uploads`, an SDK-built NewFileUpload callback and `GET /videos`."""

from __future__ import annotations

import json
import time

from chalicelib import vod_signature
from tests import vod_payloads as vod
from tests.conftest import TokenFactory, call


def test_upload_to_video_through_the_local_stack(
    chalice_local: str, token_for: TokenFactory, stage_env: dict[str, str]
) -> None:
    alice, bob = token_for("alice"), token_for("bob")
    status, created = call("POST", f"{chalice_local}/uploads", {"title": "stack"}, alice)
    assert status == 201, created
    context = vod_signature.verify(created["signature"], stage_env["VOD_SECRET_KEY"]).params.options.sourceContext
    event = vod.signed(vod.new_file_upload("5285890799999999999", context), stage_env["VOD_SIGN_KEY"])
    callback = f"{chalice_local}/vod/events/{stage_env['VOD_CALLBACK_TOKEN']}"
    started = time.perf_counter()
    status, answer = call("POST", callback, json.dumps(event).encode(), content_type="application/octet-stream")
    elapsed = time.perf_counter() - started
    assert (status, answer) == (200, {"code": 0, "outcome": "attributed"})
    assert elapsed < 5  # VOD's PUSH timeout; typically a few tens of ms here
    status, mine = call("GET", f"{chalice_local}/videos", token=alice)
    assert status == 200 and [v["fileId"] for v in mine["videos"]] == ["5285890799999999999"]
    assert mine["videos"][0]["title"] == "stack"
    assert call("GET", f"{chalice_local}/videos", token=bob) == (200, {"videos": [], "nextCursor": None})
    forged = {**event, "Sign": "0" * 32}
    status, _ = call("POST", callback, json.dumps(forged).encode())
    assert status == 401
    assert call("GET", f"{chalice_local}/health") == (200, {"status": "ok"})
    status, unknown = call("GET", f"{chalice_local}/no/such/route", token=alice)
    assert (status, unknown["error"]) == (404, "not_found")
