"""pytest plugin: every HTTP response the suite gets from the app must match the OpenAPI document.

It wraps `chalice.test.TestHTTPClient.request` (what `Client(app).http` and the `api` fixture use), so
each response is checked the moment a test receives it, against `chalicelib.openapi.openapi_document()`:
the operation (route pattern + method) and status must be documented, the Content-Type must be one the
response declares, a JSON body must validate against its schema (`jsonschema`, Draft 2020-12, which is
what OpenAPI 3.1 schemas are), and the headers it declares required (`Retry-After`, `Location`) must be
there and valid. Only counted: a path no route matches (`403 Missing Authentication Token`, API Gateway's
answer, not ours) and CORS preflights (the app answers them, chalicelib/cors.py, but they are the browser's
protocol, not operations of the API).

A mismatch fails the test that received it (an error at its teardown). One received outside any test's
own fixtures (say, in a session fixture's teardown) is reported when the session finishes and makes
the run exit non-zero; under pytest-xdist, each worker hands what it saw to the controller, which reports
it and sets the run's exit status. `tests/test_openapi.py` proves these in a child pytest.

Loaded by `pytest_plugins` in tests/conftest.py, or `-p tests.openapi_recorder`.
"""

from __future__ import annotations

import json
import threading
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field
from functools import cached_property
from typing import Any

import pytest
from chalice.local import RouteMatcher
from chalice.test import HTTPResponse, TestHTTPClient

JSON = "application/json"
Pair = tuple[str, str, int]  # (METHOD, route pattern, status)
WORKER_OUTPUT = "openapi_contract"  # the key of what a pytest-xdist worker hands its controller


def _pointer(*parts: str) -> str:
    return "".join("/" + part.replace("~", "~0").replace("/", "~1") for part in parts)


@dataclass
class Mismatch:
    nodeid: str | None
    method: str
    path: str
    status: int
    problems: list[str]
    body: bytes
    reported: bool = False

    def describe(self) -> str:
        excerpt = self.body[:300].decode("utf-8", "replace")
        return f"{self.method} {self.path} -> {self.status}: " + "; ".join(self.problems) + f"\n    body: {excerpt}"


@dataclass
class Contract:
    """What was seen, and what did not match."""

    seen: Counter[Pair] = field(default_factory=Counter)
    gateway: Counter[tuple[str, int]] = field(default_factory=Counter)
    mismatches: list[Mismatch] = field(default_factory=list)
    current_test: str | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _validators: dict[str, Any] = field(default_factory=dict)

    @cached_property
    def document(self) -> dict[str, Any]:
        from chalicelib.openapi import openapi_document

        return openapi_document()

    @cached_property
    def _registry(self) -> Any:
        from referencing import Registry
        from referencing.jsonschema import DRAFT202012

        return Registry().with_resource("urn:openapi", DRAFT202012.create_resource(self.document))

    def _validator(self, pointer: str) -> Any:
        """A validator for the schema at `pointer` in the document, whose `#/components/...` refs resolve."""
        from jsonschema import Draft202012Validator

        with self._lock:
            if pointer not in self._validators:
                schema = {"$ref": f"urn:openapi#{pointer}"}
                self._validators[pointer] = Draft202012Validator(schema, registry=self._registry)
            return self._validators[pointer]

    def record(self, routes: Mapping[str, Mapping[str, Any]], method: str, path: str, response: HTTPResponse) -> None:
        method = method.upper()
        route = _route_of(routes, path)
        if route is None or method == "OPTIONS":
            with self._lock:
                self.gateway[(method, response.status_code)] += 1
            return
        problems = self.problems(method, route, response.status_code, response.headers, response.body)
        with self._lock:
            self.seen[(method, route, response.status_code)] += 1
            if problems:
                self.mismatches.append(
                    Mismatch(self.current_test, method, path, response.status_code, problems, response.body)
                )

    def problems(self, method: str, route: str, status: int, headers: Mapping[str, Any], body: bytes) -> list[str]:
        """What is wrong with this response of the app for its operation, by the document (empty: nothing)."""
        path_item = self.document["paths"].get(route)
        if path_item is None:
            return [f"route {route} is not in the OpenAPI document"]
        operation = path_item.get(method.lower())
        if operation is None:
            if status == 405:  # the framework's answer for an undeclared method, on any path
                return self._check_response(_pointer("components", "responses", "MethodNotAllowed"), headers, body)
            return [f"{method} {route} is not in the OpenAPI document"]
        if str(status) not in operation["responses"]:
            return [f"status {status} is not documented for {method} {route}"]
        return self._check_response(_pointer("paths", route, method.lower(), "responses", str(status)), headers, body)

    def _check_response(self, pointer: str, headers: Mapping[str, Any], body: bytes) -> list[str]:
        spec = self._resolve(pointer)
        if "$ref" in spec:
            pointer = spec["$ref"].removeprefix("#")
            spec = self._resolve(pointer)
        problems: list[str] = []
        lowered = {name.lower(): value for name, value in headers.items()}
        for name, header in spec.get("headers", {}).items():
            value = lowered.get(name.lower())
            if value is None:
                if header.get("required"):
                    problems.append(f"header {name} is missing")
                continue
            value = value[0] if isinstance(value, list) and len(value) == 1 else value
            if header["schema"].get("type") == "integer" and isinstance(value, str) and value.isdigit():
                value = int(value)
            problems += [
                f"header {name}: {error.message}"
                for error in self._validator(_pointer_join(pointer, "headers", name, "schema")).iter_errors(value)
            ]
        content = spec.get("content", {})
        # A view's dict comes back from Chalice without a Content-Type: API Gateway (and `chalice local`)
        # then send `application/json`, which is what a client sees.
        media_type = str(lowered.get("content-type") or JSON).split(";", 1)[0].strip().lower()
        if not content:
            if body:
                problems.append(f"a body ({media_type}) where none is documented")
            return problems
        if media_type not in content:
            return [*problems, f"Content-Type {media_type} is not one of {sorted(content)}"]
        if media_type == JSON or media_type.endswith("+json"):
            try:
                instance = json.loads(body)
            except ValueError:
                return [*problems, "the body is not JSON"]
        else:
            instance = body.decode("utf-8", "replace")
        validator = self._validator(_pointer_join(pointer, "content", media_type, "schema"))
        for error in sorted(validator.iter_errors(instance), key=lambda e: list(e.absolute_path)):
            where = "/".join(str(part) for part in error.absolute_path) or "(body)"
            problems.append(f"{where}: {error.message}")
        return problems

    def _resolve(self, pointer: str) -> Any:
        node: Any = self.document
        for part in pointer.lstrip("/").split("/"):
            node = node[part.replace("~1", "/").replace("~0", "~")]
        return node

    def unreported(self) -> list[Mismatch]:
        with self._lock:
            return [m for m in self.mismatches if not m.reported]

    def take(self, nodeid: str) -> list[Mismatch]:
        with self._lock:
            taken = [m for m in self.mismatches if m.nodeid == nodeid and not m.reported]
            for mismatch in taken:
                mismatch.reported = True
            return taken

    def export(self) -> dict[str, Any]:
        """What an xdist worker saw, in the plain types execnet carries to the controller (see `merge`)."""
        with self._lock:
            return {
                "seen": [[*pair, count] for pair, count in self.seen.items()],
                "gateway": [[*pair, count] for pair, count in self.gateway.items()],
                "mismatches": [asdict(mismatch) for mismatch in self.mismatches],
            }

    def merge(self, exported: Mapping[str, Any]) -> None:
        with self._lock:
            self.seen.update({(method, route, status): count for method, route, status, count in exported["seen"]})
            self.gateway.update({(method, status): count for method, status, count in exported["gateway"]})
            self.mismatches += [Mismatch(**fields) for fields in exported["mismatches"]]


def _pointer_join(pointer: str, *parts: str) -> str:
    return pointer + _pointer(*parts)


def _route_of(routes: Mapping[str, Any], path: str) -> str | None:
    try:
        return str(RouteMatcher(list(routes)).match_route(path).route)
    except ValueError:
        return None


CONTRACT = Contract()
_original_request = TestHTTPClient.request


def _recording_request(
    self: TestHTTPClient, method: str, path: str, headers: dict[str, str] | None = None, body: bytes = b""
) -> HTTPResponse:
    response = _original_request(self, method, path, headers=headers, body=body)
    CONTRACT.record(self._app.routes, method, path, response)
    return response


def pytest_configure(config: pytest.Config) -> None:
    TestHTTPClient.request = _recording_request  # type: ignore[method-assign]


def pytest_unconfigure(config: pytest.Config) -> None:
    TestHTTPClient.request = _original_request  # type: ignore[method-assign]


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[None]:
    CONTRACT.current_test = item.nodeid
    try:
        return (yield)
    finally:
        CONTRACT.current_test = None


@pytest.fixture(autouse=True)
def _openapi_contract(request: pytest.FixtureRequest) -> Iterator[None]:
    """Fails the test whose responses did not match the document (at its teardown)."""
    yield
    taken = CONTRACT.take(request.node.nodeid)
    if taken:
        pytest.fail(
            "responses that do not match the OpenAPI document (chalicelib/openapi.py, chalicelib/schemas.py):\n  "
            + "\n  ".join(mismatch.describe() for mismatch in taken),
            pytrace=False,
        )


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    workeroutput = getattr(session.config, "workeroutput", None)
    if workeroutput is not None:  # an xdist worker: its exit status is not the run's, the controller counts
        workeroutput[WORKER_OUTPUT] = CONTRACT.export()
        return
    if CONTRACT.unreported() and session.exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: object) -> None:
    """Under pytest-xdist (`-n`), in the controller: a worker's responses join the run's, before the run's own
    `pytest_sessionfinish` and summary. A worker that crashed sends nothing: xdist fails the run for it."""
    exported = getattr(node, "workeroutput", {}).get(WORKER_OUTPUT)
    if exported is not None:
        CONTRACT.merge(exported)


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}es" if noun.endswith("h") else f"{n} {noun}s"


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not CONTRACT.seen and not CONTRACT.mismatches:
        return
    write = terminalreporter.write_line
    pairs = sorted(CONTRACT.seen, key=lambda pair: (pair[1], pair[0], pair[2]))
    operations = {(method, route) for method, route, status in pairs if status != 405}
    write(
        f"OpenAPI contract: {_count(sum(CONTRACT.seen.values()), 'response')} of the app checked:"
        f" {_count(len(operations), 'operation')}, {_count(len(pairs), 'distinct (operation, status) pair')};"
        f" {_count(len(CONTRACT.mismatches), 'mismatch')}"
        f" ({_count(sum(CONTRACT.gateway.values()), 'response')} from the gateway, not the app, not checked)"
    )
    if terminalreporter.config.getoption("verbose") > 0:
        for method, route, status in pairs:
            write(f"  {method} {route} {status}: {CONTRACT.seen[(method, route, status)]}")
        documented = {
            (method.upper(), route, int(status))
            for route, item in CONTRACT.document["paths"].items()
            for method, operation in item.items()
            for status in operation["responses"]
        }
        never = sorted(documented - set(pairs), key=lambda pair: (pair[1], pair[0], pair[2]))
        write(f"  documented but not exercised: {', '.join(f'{m} {r} {s}' for m, r, s in never) or 'none'}")
    for mismatch in CONTRACT.unreported():
        terminalreporter.write_line(f"OpenAPI mismatch outside a test: {mismatch.describe()}", red=True)
