"""Each route imports only what it uses (cold start): a fresh process, the real handler, an API Gateway event.

The signing route must not import the notification parsers, the event service, the completion service, the
event and video types or Tencent's SDK; the callback must not import the token verifier (PyJWT, cryptography),
the signing request models, the signing code, the completion service or the SDK (only `POST /uploads/{id}/complete`,
`DELETE /videos/{fileId}` once it reaches VOD, and the schedules use it).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

from bench.cold_start import callback_event, create_upload_event
from chalicelib import vod_signature
from deploy.unpacked import proxy_event
from tests import vod_payloads as vod
from tests.conftest import ROOT, TokenFactory, bearer

PROBE = """
import json, os, sys
import app
response = app.app(json.loads(os.environ["PROBE_EVENT"]), None)
print(json.dumps({"status": response["statusCode"], "modules": sorted(sys.modules)}))
"""


def in_fresh_process(script: str, event: dict[str, Any], stage_env: dict[str, str]) -> str:
    """Runs `script` in a new interpreter in the stage's environment, with `event` as PROBE_EVENT; its stdout."""
    result = subprocess.run(  # noqa: S603
        [sys.executable, "-c", script],
        cwd=ROOT,
        env={**os.environ, **stage_env, "PROBE_EVENT": json.dumps(event)},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return result.stdout


def first_request(event: dict[str, Any], stage_env: dict[str, str]) -> tuple[int, set[str]]:
    answer = json.loads(in_fresh_process(PROBE, event, stage_env).strip().splitlines()[-1])
    return answer["status"], set(answer["modules"])


def top_level(modules: set[str]) -> set[str]:
    return {name.split(".")[0] for name in modules}


def test_the_signing_route_imports_no_event_code_and_no_vod_sdk(
    stage_env: dict[str, str], token_for: TokenFactory
) -> None:
    status, modules = first_request(create_upload_event(token_for("alice")), stage_env)
    assert status == 201
    assert not modules & {
        "chalicelib.vod_notification",
        "chalicelib.event_service",
        "chalicelib.pull_consumer",
        "chalicelib.completion",
        # it stores an intent: the modules of the event, video and media types are not needed
        "chalicelib.events",
        "chalicelib.videos",
        "chalicelib.media",
        "chalicelib.storage.videos",
        "chalicelib.storage.reviews",
    }
    assert "tencentcloud" not in top_level(modules)
    assert "jwt" in top_level(modules)  # the probe is real: this route verifies a token


def test_the_callback_imports_no_token_verifier_no_signing_models_and_no_vod_sdk(
    api: Any, stage_env: dict[str, str], token_for: TokenFactory
) -> None:
    created = api.post("/uploads", headers=bearer(token_for("alice")), body=b"{}").json_body
    context = vod_signature.verify(created["signature"], stage_env["VOD_SECRET_KEY"]).params.options.sourceContext
    body = json.dumps(vod.signed(vod.new_file_upload("5285890000000777", context), stage_env["VOD_SIGN_KEY"]))
    status, modules = first_request(callback_event(stage_env["VOD_CALLBACK_TOKEN"], body), stage_env)
    assert status == 200
    assert not top_level(modules) & {"jwt", "cryptography", "tencentcloud"}
    assert not modules & {
        "chalicelib.auth",
        "chalicelib.models",
        "chalicelib.pull_consumer",
        "chalicelib.completion",
        "chalicelib.vod_signature",  # it reads intents and mints no signature
    }
    assert "chalicelib.vod_notification" in modules  # the probe is real: this route parsed the event


def test_reading_videos_and_a_refused_deletion_import_no_vod_sdk(
    stage_env: dict[str, str], token_for: TokenFactory
) -> None:
    headers = {"Authorization": f"Bearer {token_for('alice')}"}
    for method, resource, parameters, expected in (
        ("GET", "/videos", None, 200),
        ("GET", "/videos/{file_id}", {"file_id": "5285890000000404"}, 404),
        ("DELETE", "/videos/{file_id}", {"file_id": "5285890000000404"}, 404),
    ):
        status, modules = first_request(proxy_event(method, resource, headers, None, parameters), stage_env)
        assert status == expected, resource
        assert "tencentcloud" not in top_level(modules), (method, resource)
    assert "chalicelib.deletion" in modules  # the probe is real: the deletion service refused it


GC_PROBE = """
import gc, json, os
import app
during = {"enabled": gc.isenabled(), "frozen": gc.get_freeze_count()}
response = app.app(json.loads(os.environ["PROBE_EVENT"]), None)
after = {"enabled": gc.isenabled(), "frozen": gc.get_freeze_count()}
print(json.dumps({"status": response["statusCode"], "during": during, "after": after}))
"""


def collector_states(event: dict[str, Any], stage_env: dict[str, str]) -> dict[str, Any]:
    answer: dict[str, Any] = json.loads(in_fresh_process(GC_PROBE, event, stage_env).strip().splitlines()[-1])
    assert answer["status"] == 201
    return answer


def test_in_lambda_the_collector_pauses_until_the_first_invocation_ends_then_init_is_frozen(
    stage_env: dict[str, str], token_for: TokenFactory
) -> None:
    in_lambda = {**stage_env, "AWS_LAMBDA_FUNCTION_NAME": "vod-upload-backend-test"}
    states = collector_states(create_upload_event(token_for("alice")), in_lambda)
    assert states["during"] == {"enabled": False, "frozen": 0}
    assert states["after"]["enabled"] and states["after"]["frozen"] > 10_000  # what the cold start built


def test_outside_lambda_the_collector_is_left_alone(stage_env: dict[str, str], token_for: TokenFactory) -> None:
    states = collector_states(create_upload_event(token_for("bob")), stage_env)
    assert states["during"] == states["after"] == {"enabled": True, "frozen": 0}
