"""The OpenAPI document (chalicelib/openapi.py): valid OpenAPI 3.1, exactly the app's routes, bearer
security on every non-public operation, and the contract checker (tests/openapi_recorder.py) that
holds every response the suite sees to it."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from openapi_spec_validator import validate
from openapi_spec_validator.validation.exceptions import OpenAPIValidationError

from chalicelib import errors
from chalicelib.openapi import OPERATIONS, PUBLIC_ROUTES, openapi_document
from tests import vod_payloads as vod
from tests.conftest import ROOT, Stack, TokenFactory
from tests.openapi_recorder import CONTRACT, Contract
from tests.test_api_uploads import post

PUBLIC = {("GET", "/health"), ("POST", "/vod/events/{token}"), ("GET", "/openapi.json")}


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    return openapi_document()


def operations(document: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {
        (method.upper(), path): operation
        for path, item in document["paths"].items()
        for method, operation in item.items()
    }


def test_the_document_is_valid_openapi_3_1(document: dict[str, Any]) -> None:
    assert document["openapi"] == "3.1.0"
    validate(document)
    json.dumps(document, allow_nan=False)  # servable as strict JSON


def test_the_validator_would_catch_a_broken_document(document: dict[str, Any]) -> None:
    broken = json.loads(json.dumps(document))
    del broken["paths"]["/uploads/{upload_id}"]["get"]["parameters"]
    with pytest.raises(OpenAPIValidationError):
        validate(broken)


def test_the_document_covers_exactly_the_app_route_table(document: dict[str, Any]) -> None:
    import app

    # OPTIONS: the CORS preflights, the browser's protocol rather than operations (tests/test_cors.py).
    routes = {(method, path) for path, methods in app.app.routes.items() for method in methods if method != "OPTIONS"}
    documented = set(operations(document))
    assert documented - routes == set(), "documented but not routes of app.py (GET /openapi.json: add its route)"
    assert routes - documented == set(), "routes of app.py missing from chalicelib/openapi.py OPERATIONS"


def test_the_public_operations_are_the_apps_public_paths() -> None:
    from app import PUBLIC_PATHS

    documented = {path for _method, path in PUBLIC_ROUTES}
    assert documented == set(PUBLIC_PATHS), "app.PUBLIC_PATHS and chalicelib/openapi.py disagree"


def test_every_non_public_operation_declares_bearer_security(document: dict[str, Any]) -> None:
    scheme = document["components"]["securitySchemes"]["bearerAuth"]
    assert scheme == {**scheme, "type": "http", "scheme": "bearer", "bearerFormat": "JWT"}
    assert set(PUBLIC_ROUTES) == PUBLIC
    for key, operation in operations(document).items():
        if key in PUBLIC:
            assert operation["security"] == [], key
            assert "401" not in operation["responses"] or key == ("POST", "/vod/events/{token}"), key
        else:
            assert operation["security"] == [{"bearerAuth": []}], key
            assert "401" in operation["responses"], key


def test_parameters_headers_and_media_types(document: dict[str, Any]) -> None:
    ops = operations(document)
    for (_method, path), operation in ops.items():
        templated = {part[1:-1] for part in path.split("/") if part.startswith("{")}
        declared = {p["name"] for p in operation.get("parameters", []) if p["in"] == "path"}
        assert declared == templated, path
    listing = {p["name"]: p for p in ops[("GET", "/videos")]["parameters"]}
    assert listing["limit"]["schema"] == {"type": "integer", "minimum": 1, "maximum": 100, "default": 20}
    assert listing["cursor"]["in"] == "query"
    assert ops[("POST", "/uploads")]["responses"]["201"]["headers"]["Location"]["required"] is True
    assert set(ops[("POST", "/signature")]["responses"]["200"]["content"]) == {"application/json", "text/plain"}
    assert set(ops[("POST", "/uploads")]["requestBody"]["content"]) == {"application/json", "text/plain"}
    assert ops[("POST", "/uploads")]["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/CreateUploadRequest"
    }
    responses = document["components"]["responses"]
    for name in ("LimitExceeded", "ServiceUnavailable"):
        assert responses[name]["headers"]["Retry-After"]["required"] is True
        assert "retryAfter" in document["components"]["schemas"][f"{name}Error"]["required"]


def _domain_errors() -> list[type[errors.DomainError]]:
    found, todo = [], [errors.DomainError]
    while todo:
        cls = todo.pop()
        found.append(cls)
        todo += cls.__subclasses__()
    return found


def test_every_domain_error_status_is_documented_with_its_code(document: dict[str, Any]) -> None:
    by_status = {}
    for response in document["components"]["responses"].values():
        schema = response["content"]["application/json"]["schema"]
        for ref in (one["$ref"].rsplit("/", 1)[1] for one in schema.get("oneOf", [schema])):
            by_status[document["components"]["schemas"][ref]["properties"]["error"]["const"]] = response
    for cls in _domain_errors():
        assert cls.code in by_status, f"{cls.__name__} ({cls.status} {cls.code}) has no documented response"
    for op in OPERATIONS:
        assert "500" in operations(document)[(op.method, op.path)]["responses"], op.path


# -- the contract checker itself --------------------------------------------------------------------------


@pytest.fixture
def contract() -> Contract:
    return Contract()


JSON_HEADERS = {"Content-Type": "application/json"}


def test_the_checker_accepts_a_matching_response_and_names_what_does_not_match(contract: Contract) -> None:
    def problems(method: str, route: str, status: int, body: Any, headers: dict[str, Any] | None = None) -> list[str]:
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        return contract.problems(method, route, status, JSON_HEADERS if headers is None else headers, raw)

    assert problems("GET", "/health", 200, {"status": "ok"}) == []
    assert problems("GET", "/health", 200, {"status": "ok", "extra": 1}) != []
    assert problems("GET", "/health", 418, {"status": "ok"}) == ["status 418 is not documented for GET /health"]
    assert problems("DELETE", "/health", 405, {"error": "method_not_allowed", "message": "no"}) == []
    assert problems("DELETE", "/health", 200, {"status": "ok"}) != []
    limit = {"error": "limit_exceeded", "message": "m", "limit": "open_intents", "retryAfter": 3}
    assert problems("POST", "/uploads", 429, limit, {**JSON_HEADERS, "Retry-After": "3"}) == []
    renew = "/uploads/{upload_id}/signature"
    assert problems("POST", renew, 429, limit) == ["header Retry-After is missing"]
    # A create's 429 is a limit or the bytes quota: the quota's comes without Retry-After (waiting makes no room).
    quota = {
        "error": "quota_exceeded", "message": "m", "limit": "stored_bytes", "maxStoredBytes": 10, "bytesStored": 8,
        "bytesReserved": 0, "fileSize": 3,
    }  # fmt: skip
    assert problems("POST", "/uploads", 429, quota) == []
    assert problems("POST", renew, 429, quota) != []
    assert problems("POST", "/uploads", 429, {**quota, "bytesStored": None}) != []
    assert problems("POST", "/uploads", 400, {"error": "invalid_request", "message": "m"}) != []  # no field
    assert problems("POST", "/signature", 200, b"NkcJ", {"Content-Type": "text/plain"}) == []
    assert problems("GET", "/videos", 200, {"videos": [], "nextCursor": None}) == []
    assert problems("GET", "/videos", 200, {"videos": []}) == ["(body): 'nextCursor' is a required property"]
    assert problems("GET", "/videos", 200, b"[]", {"Content-Type": "text/html"}) != []


def test_the_recorder_sees_the_app_through_the_test_client(api: Any) -> None:
    before = CONTRACT.seen[("GET", "/health", 200)]
    assert api.get("/health").status_code == 200
    assert CONTRACT.seen[("GET", "/health", 200)] == before + 1


MISMATCHING_SUITE = """
    from collections.abc import Iterator

    import pytest
    from chalice import Chalice, Response
    from chalice.test import Client

    app = Chalice("contract-proof")


    @app.route("/health", methods=["GET"])
    def health() -> Response:
        return Response(body={"status": "ok", "extra": True}, status_code=STATUS)


    @pytest.fixture(scope="session")
    def late() -> Iterator[None]:
        yield
        if LATE:
            Client(app).http.get("/health")  # after every test's own teardown


    def test_receives_a_response(late: None) -> None:
        if IN_TEST:
            assert Client(app).http.get("/health").status_code == STATUS
"""


@pytest.mark.parametrize(
    ("status", "in_test", "late", "outcome", "workers"),
    [
        (200, True, False, "1 passed, 1 error", []),
        (418, True, False, "1 passed, 1 error", []),
        (200, False, True, "1 passed", []),
        (418, True, False, "1 passed, 1 error", ["-n", "2"]),
        (200, False, True, "1 passed", ["-n", "2"]),
    ],
)
def test_a_mismatch_fails_the_run(
    tmp_path: Path, status: int, in_test: bool, late: bool, outcome: str, workers: list[str]
) -> None:
    """In a child pytest with only this plugin: a mismatching body or an undocumented status fails the test
    that got it; one seen after every test (a session fixture's teardown) still makes pytest exit 1. With
    pytest-xdist workers (`make test` runs them) too: a worker's exit status is not the run's, so the
    controller collects what each worker saw."""
    source = textwrap.dedent(MISMATCHING_SUITE).replace("STATUS", str(status))
    source = source.replace("IN_TEST", str(in_test)).replace("LATE", str(late))
    (tmp_path / "test_proof.py").write_text(source)
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    plugins = ["-p", "tests.openapi_recorder", "-p", "no:cacheprovider"]
    result = subprocess.run(  # noqa: S603
        [sys.executable, "-m", "pytest", *plugins, *workers, str(tmp_path)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert outcome in output, output
    assert "OpenAPI contract: 1 response of the app checked" in output, output
    expected = "status 418 is not documented for GET /health" if status == 418 else "Additional properties"
    assert expected in output, output
    if late:
        assert "OpenAPI mismatch outside a test" in output, output


def test_a_matching_run_exits_zero(tmp_path: Path) -> None:
    source = textwrap.dedent(MISMATCHING_SUITE).replace('"extra": True', '"status": "ok"')
    source = source.replace("STATUS", "200").replace("IN_TEST", "True").replace("LATE", "True")
    (tmp_path / "test_proof.py").write_text(source)
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    result = subprocess.run(  # noqa: S603
        [sys.executable, "-m", "pytest", "-p", "tests.openapi_recorder", "-p", "no:cacheprovider", str(tmp_path)],
        cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 responses of the app checked" in result.stdout and "; 0 mismatches" in result.stdout, result.stdout


# -- never on the hot paths ---------------------------------------------------------------------------


def test_the_document_is_not_imported_by_the_app_or_its_services() -> None:
    probe = (
        "import sys, app, chalicelib.container, chalicelib.models, chalicelib.http;"
        "print(sorted(m for m in sys.modules if m in ('chalicelib.openapi', 'chalicelib.schemas')))"
    )
    result = subprocess.run(  # noqa: S603
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stdout.strip() == "[]"
    for source in [ROOT / "app.py", *(ROOT / "chalicelib").glob("*.py")]:
        if source.stem in ("openapi", "schemas"):
            continue
        for node in ast.parse(source.read_text()).body:  # module level only: a function may import it lazily
            names = [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            names += [alias.name for alias in node.names] if isinstance(node, ast.Import | ast.ImportFrom) else []
            assert not any(name.endswith(("openapi", "schemas")) for name in names), f"{source.name} imports it"


def test_importing_the_module_is_cheap() -> None:
    probe = "import sys, chalicelib.openapi; print('pydantic' in sys.modules)"
    result = subprocess.run(  # noqa: S603
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stdout.strip() == "False"


# -- the route (app.py) ---------------------------------------------------------------------------------


def test_get_openapi_json_serves_the_document_without_a_token(api: Any) -> None:
    first = api.get("/openapi.json")
    assert first.status_code == 200, first.body
    assert first.json_body == openapi_document()
    assert api.get("/openapi.json").body == first.body


# -- statuses the rest of the suite does not reach, so that the contract checker sees them too -----------


@pytest.fixture
def stack(api: Any, stage_env: dict[str, str], token_for: TokenFactory, dynamodb: Any, table_name: str) -> Stack:
    return Stack(api, stage_env, token_for, dynamodb, table_name)


def test_statuses_only_this_suite_reaches(stack: Stack) -> None:
    alice = stack.token_for("alice")
    upload_id, context = stack.create_upload()
    assert stack.deliver(vod.new_file_upload("5285890784273533167", context)).json_body["outcome"] == "attributed"
    again = post(stack.api, f"/uploads/{upload_id}/signature", alice)
    assert (again.status_code, again.json_body["error"]) == (409, "conflict"), again.body

    cases = [
        ("/signature", b'{"fileSize": -1}', "application/json", 400, "invalid_request"),
        ("/signature", b"{}", "application/xml", 415, "unsupported_media_type"),
        ("/signature", b'{"title": "' + b"x" * 20_000 + b'"}', "application/json", 413, "payload_too_large"),
    ]
    for path, body, content_type, status, code in cases:
        response = post(stack.api, path, alice, body, **{"Content-Type": content_type})
        assert (response.status_code, response.json_body["error"]) == (status, code), response.body

    health = stack.api.get("/health", headers={"Content-Type": "application/xml"})  # the framework's own 415
    assert (health.status_code, health.json_body["error"]) == (415, "unsupported_media_type"), health.body
