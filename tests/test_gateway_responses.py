"""API Gateway's own answers in the app's shape (deploy/gateway_responses.py): the document chalice imports
carries them, and each is the app's `{"error","message","requestId"}` with the status and headers asked for.
`make rehearse` (tests/test_rehearse.py) checks that a deployed API carries them."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from chalice.deploy.swagger import SwaggerGenerator, TemplatedSwaggerGenerator

import app as application
from deploy import gateway_responses
from devstack.token import local_stage_env

PAGE = "https://upload.example.com"
# What API Gateway substitutes (no VTL): its message is already a quoted JSON string.
CONTEXT = {"$context.error.messageString": json.dumps('say "no"'), "$context.requestId": "req-1"}


def answer(response: dict[str, Any]) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(
        re.sub(r"\$context\.[\w.]+", lambda m: CONTEXT[m.group(0)], response["responseTemplates"]["application/json"])
    )
    return body


def test_each_gateway_answer_has_the_apps_shape_and_the_status_asked_for() -> None:
    responses = gateway_responses.responses(())
    statuses = {kind: response.get("statusCode") for kind, response in responses.items()}
    assert statuses == {
        "MISSING_AUTHENTICATION_TOKEN": "404",  # an unknown path or method: no authorizer runs in API Gateway
        "RESOURCE_NOT_FOUND": "404",
        "UNAUTHORIZED": "401",
        "ACCESS_DENIED": "403",
        "REQUEST_TOO_LARGE": "413",
        "THROTTLED": "429",
        "DEFAULT_4XX": None,  # a status here would change every 4XX: they keep API Gateway's
        "DEFAULT_5XX": None,
    }
    for kind, response in responses.items():
        body = answer(response)
        assert set(body) == {"error", "message", "requestId"}, kind
        assert re.fullmatch(r"[a-z_]+", body["error"]) and body["requestId"] == "req-1"
    assert answer(responses["MISSING_AUTHENTICATION_TOKEN"])["error"] == "not_found"
    assert answer(responses["UNAUTHORIZED"]) == {"error": "unauthorized", "message": 'say "no"', "requestId": "req-1"}
    assert answer(responses["THROTTLED"])["error"] == "throttled"
    assert responses["THROTTLED"]["responseParameters"] == {"gatewayresponse.header.Retry-After": "'1'"}


@pytest.mark.parametrize(
    ("allowed", "granted"),
    [((), None), ((PAGE,), PAGE), (("*",), "*"), ((PAGE, "https://other.example.com"), None)],
)
def test_a_gateway_answer_grants_the_stages_only_origin_and_never_echoes_one(
    allowed: tuple[str, ...], granted: str | None
) -> None:
    for kind, response in gateway_responses.responses(allowed).items():
        parameters = response["responseParameters"]
        assert not any(value.startswith("method.request") for value in parameters.values()), kind
        origin = parameters.get("gatewayresponse.header.Access-Control-Allow-Origin")
        assert origin == (None if granted is None else f"'{granted}'"), kind
        if granted is not None:
            assert parameters["gatewayresponse.header.Access-Control-Expose-Headers"] == "'Location, Retry-After'"


def test_the_document_chalice_imports_carries_the_stages_gateway_responses(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(SwaggerGenerator, "generate_swagger", SwaggerGenerator.generate_swagger)  # undone after
    env = {**local_stage_env(), "CORS_ALLOWED_ORIGINS": PAGE}
    (tmp_path / ".chalice").mkdir()
    config = {"version": "2.0", "app_name": "t", "stages": {"dev": {"environment_variables": env}}}
    (tmp_path / ".chalice" / "config.json").write_text(json.dumps(config))
    assert gateway_responses.EXTENSION not in TemplatedSwaggerGenerator().generate_swagger(application.app)

    gateway_responses.install(tmp_path, "dev")
    document = TemplatedSwaggerGenerator().generate_swagger(application.app)  # the generator `chalice deploy` uses
    assert document[gateway_responses.EXTENSION] == gateway_responses.responses((PAGE,))
    assert document["paths"]  # the rest of chalice's document is untouched
