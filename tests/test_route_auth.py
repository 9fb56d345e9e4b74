"""Authentication is structural: walking the app's route table, every route and method not named public
answers 401 without a valid bearer token, and none of them reaches storage or secrets."""

from __future__ import annotations

import re
from typing import Any

import app as application
from app import PUBLIC_PATHS
from chalicelib import container
from tests.aws_calls import CallRecorder

# Every way a request can lack a valid token.
UNAUTHENTICATED = [
    {},
    {"Authorization": "Bearer"},
    {"Authorization": "Bearer not-a-jwt"},
    {"Authorization": "Basic YWxpY2U6c2VjcmV0"},
    {"Authorization": "Bearer eyJhbGciOiJub25lIn0.eyJzdWIiOiJhbGljZSJ9."},  # alg none, unsigned
]


def concrete(path: str) -> str:
    return re.sub(r"\{\w+\}", "any-id", path)


def test_the_public_routes_are_exactly_the_ones_named() -> None:
    assert PUBLIC_PATHS <= set(application.app.routes), "a public path names no route"
    protected = set(application.app.routes) - PUBLIC_PATHS
    assert protected == {
        "/uploads",
        "/uploads/{upload_id}",
        "/uploads/{upload_id}/signature",
        "/uploads/{upload_id}/complete",
        "/signature",
        "/videos",
        "/videos/{file_id}",
        "/me",
    }


def test_every_protected_route_and_method_answers_401_and_reaches_no_storage(api: Any) -> None:
    recorder = CallRecorder()
    answered = []
    with recorder.installed():
        container.reset()  # the app's clients are made (and hooked) on first use, inside
        for path, methods in sorted(application.app.routes.items()):
            if path in PUBLIC_PATHS:
                continue
            for method in sorted(set(methods) - {"OPTIONS"}):  # a preflight never carries a token: test_cors.py
                for headers in UNAUTHENTICATED:
                    response = api.request(
                        method, concrete(path), headers={"Content-Type": "application/json", **headers}, body=b"{}"
                    )
                    assert response.status_code == 401, (method, path, headers, response.body)
                    assert response.json_body["error"] == "unauthorized", response.json_body
                answered.append(f"{method} {path}")
    assert len(answered) == 10
    assert recorder.calls == [], [f"{call.service}.{call.operation}" for call in recorder.calls]
