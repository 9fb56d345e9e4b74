"""CORS as the stage configures it (CORS_ALLOWED_ORIGINS, chalicelib/cors.py): every browser route answers its
preflight, which carries no token, for an allowed origin and the Authorization header; any other origin gets a
403 and no grant, on the preflight and on the actual answer."""

from __future__ import annotations

import re
from typing import Any

import pytest

import app as application
from app import NOT_FOR_BROWSERS
from tests.conftest import ApiFactory, TokenFactory, bearer

PAGE = "https://upload.example.com"


@pytest.fixture
def api(api_factory: ApiFactory, stage_env: dict[str, str]) -> Any:
    stage_env["CORS_ALLOWED_ORIGINS"] = f"{PAGE}, http://127.0.0.1:8003"
    return api_factory()


def preflight(api: Any, path: str, method: str, origin: str, headers: str = "authorization,content-type") -> Any:
    return api.request(
        "OPTIONS",
        re.sub(r"\{\w+\}", "any-id", path),
        headers={"Origin": origin, "Access-Control-Request-Method": method, "Access-Control-Request-Headers": headers},
    )


def browser_routes() -> list[tuple[str, str]]:
    return [
        (path, method)
        for path, methods in sorted(application.app.routes.items())
        if path not in NOT_FOR_BROWSERS
        for method in sorted(set(methods) - {"OPTIONS"})
    ]


def test_every_browser_route_answers_its_preflight_for_an_allowed_origin(api: Any) -> None:
    assert len(browser_routes()) == 12
    for path, method in browser_routes():
        response = preflight(api, path, method, PAGE)
        assert response.status_code == 204, (path, method, response.body)
        assert response.headers["Access-Control-Allow-Origin"] == PAGE
        assert method in response.headers["Access-Control-Allow-Methods"]
        assert "Authorization" in response.headers["Access-Control-Allow-Headers"]
        assert response.headers["Vary"] == "Origin"


def test_a_disallowed_origin_method_or_header_is_refused(api: Any) -> None:
    for origin, method, headers in (
        ("https://evil.example.com", "POST", "authorization"),
        ("null", "POST", "authorization"),
        (PAGE, "DELETE", "authorization"),
        (PAGE, "POST", "authorization,x-forged"),
    ):
        response = preflight(api, "/uploads", method, origin, headers)
        assert response.status_code == 403, (origin, method, headers)
        assert response.json_body["error"] == "forbidden"
        assert "Access-Control-Allow-Origin" not in response.headers
        assert response.headers["Vary"] == "Origin"  # another origin would have been granted


def test_a_preflight_without_its_headers_is_refused_saying_which_is_missing(api: Any) -> None:
    """Before: `cross-origin requests from 'None' are not allowed`, and `a cross-origin None with headers []`."""
    for headers, missing in (
        ({"Access-Control-Request-Method": "POST"}, "Origin"),
        ({"Origin": "", "Access-Control-Request-Method": "POST"}, "Origin"),
        ({"Origin": PAGE}, "Access-Control-Request-Method"),
    ):
        response = api.request("OPTIONS", "/uploads", headers=headers)
        assert response.status_code == 403, (headers, response.body)
        assert response.json_body == {"error": "forbidden", "message": f"a preflight needs an {missing} header"}
        assert "Access-Control-Allow-Origin" not in response.headers


def test_the_callback_has_no_preflight(api: Any) -> None:
    assert "OPTIONS" not in application.app.routes["/vod/events/{token}"]


def test_actual_answers_grant_only_an_allowed_origin(api: Any, token_for: TokenFactory) -> None:
    created = api.post("/uploads", headers={**bearer(token_for("alice")), "Origin": PAGE}, body=b"{}")
    assert created.status_code == 201
    assert created.headers["Access-Control-Allow-Origin"] == PAGE
    assert "Location" in created.headers["Access-Control-Expose-Headers"]
    refused = api.get("/videos", headers={**bearer(token_for("alice")), "Origin": "https://evil.example.com"})
    assert refused.status_code == 200 and "Access-Control-Allow-Origin" not in refused.headers
    assert refused.headers["Vary"] == "Origin"
    # Errors too: a page must be able to read a 401 or a 429 to act on it.
    unauthorized = api.get("/videos", headers={"Origin": PAGE})
    assert unauthorized.status_code == 401 and unauthorized.headers["Access-Control-Allow-Origin"] == PAGE


def test_no_origin_is_allowed_by_default(api_factory: ApiFactory, stage_env: dict[str, str]) -> None:
    stage_env.pop("CORS_ALLOWED_ORIGINS", None)
    api = api_factory()
    assert preflight(api, "/uploads", "POST", "http://127.0.0.1:8003").status_code == 403


def test_every_answer_that_depends_on_the_origin_says_so(api: Any, token_for: TokenFactory) -> None:
    """A cache must not hand one page the answer made for another, or for a request with no Origin at all."""
    for path, headers in (
        ("/videos", bearer(token_for("alice"))),
        ("/videos", {}),  # a 401
        ("/health", {}),
    ):
        for origin in (PAGE, "https://evil.example.com", None):
            response = api.get(path, headers={**headers, **({"Origin": origin} if origin else {})})
            assert response.headers.get("Vary") == "Origin", (path, origin, response.status_code)
    # VOD's callback is no browser's: no origin is ever granted it, so nothing varies.
    callback = api.post("/vod/events/wrong-token", headers={"Content-Type": "application/json"}, body=b"{}")
    assert callback.status_code == 403 and "Vary" not in callback.headers
