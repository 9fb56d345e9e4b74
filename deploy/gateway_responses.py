"""The answers API Gateway gives itself, before the function runs, in the app's shape: `chalice`, run by the
deploy as `python -m deploy.gateway_responses <chalice arguments>`.

Without them an unknown path is `403 {"message":"Missing Authentication Token"}`, throttling API Gateway's
own 429, and none carries a CORS grant, so a page cannot even read them. Chalice has no option for gateway
responses (aws/chalice#1268), and every `chalice deploy` imports the API with `PutRestApi mode=overwrite`,
which deletes whatever the document lacks, so responses put on the API afterwards would be wiped by the
next deploy and missing between chalice's stage deployment and ours. Here they travel in the document
chalice imports (`x-amazon-apigateway-gateway-responses`), so chalice's own deployment publishes them.
That wraps `SwaggerGenerator.generate_swagger`, an internal of chalice: chalice is pinned, and
tests/test_gateway_responses.py checks the document chalice generates carries them.

CORS: a gateway response's header is a static value or a request parameter, with no condition, so it can
either grant one fixed origin or echo every caller's `Origin`. Echoing would grant any page, whatever
`CORS_ALLOWED_ORIGINS` says; so a stage that allows exactly one origin (or `*`) gets it granted on these
answers, and a stage that allows several gets no grant on them (a page sees a failed request, not the body).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from chalicelib.cors import EXPOSED_HEADERS
from chalicelib.settings import Settings

EXTENSION = "x-amazon-apigateway-gateway-responses"
# Throttling has no computed wait; a second lets API Gateway's token bucket refill.
THROTTLED_RETRY_AFTER_SECONDS = 1
REQUEST_ID = '"requestId":"$context.requestId"'
# API Gateway's own message: `$context.error.messageString` is already a quoted JSON string.
ITS_MESSAGE = "$context.error.messageString"

# type: (status, or None to keep API Gateway's; our error code; message as a JSON value)
RESPONSES: dict[str, tuple[int | None, str, str]] = {
    # No authorizer runs in API Gateway (the app verifies tokens), so this type means only: no such route.
    "MISSING_AUTHENTICATION_TOKEN": (404, "not_found", json.dumps("no such route or method")),
    "RESOURCE_NOT_FOUND": (404, "not_found", json.dumps("no such route or method")),
    "UNAUTHORIZED": (401, "unauthorized", ITS_MESSAGE),
    "ACCESS_DENIED": (403, "forbidden", ITS_MESSAGE),
    "REQUEST_TOO_LARGE": (413, "payload_too_large", ITS_MESSAGE),
    "THROTTLED": (429, "throttled", json.dumps("too many requests; retry after Retry-After seconds")),
    # A status on the defaults would change every 4XX/5XX: they keep API Gateway's and only take our shape.
    "DEFAULT_4XX": (None, "request_refused", ITS_MESSAGE),
    "DEFAULT_5XX": (None, "gateway_error", ITS_MESSAGE),
}


def granted_origin(allowed_origins: Iterable[str]) -> str | None:
    """The one origin a gateway response can grant: the stage's only allowed origin, or `*`; None otherwise."""
    origins = tuple(allowed_origins)
    if "*" in origins:
        return "*"
    return origins[0] if len(origins) == 1 else None


def responses(allowed_origins: Iterable[str]) -> dict[str, dict[str, Any]]:
    origin = granted_origin(allowed_origins)
    cors = {}
    if origin is not None:
        cors = {
            "gatewayresponse.header.Access-Control-Allow-Origin": f"'{origin}'",
            "gatewayresponse.header.Access-Control-Expose-Headers": f"'{', '.join(EXPOSED_HEADERS)}'",
        }
    document: dict[str, dict[str, Any]] = {}
    for response_type, (status, error, message) in RESPONSES.items():
        parameters = dict(cors)
        if response_type == "THROTTLED":
            parameters["gatewayresponse.header.Retry-After"] = f"'{THROTTLED_RETRY_AFTER_SECONDS}'"
        body = f'{{"error":"{error}","message":{message},{REQUEST_ID}}}'
        entry: dict[str, Any] = {"responseParameters": parameters, "responseTemplates": {"application/json": body}}
        if status is not None:
            entry["statusCode"] = str(status)
        document[response_type] = entry
    return document


def stage_origins(project: Path, stage: str) -> tuple[str, ...]:
    """The stage's CORS_ALLOWED_ORIGINS, as the function will read them from the built project's config."""
    config = json.loads((project / ".chalice" / "config.json").read_text())
    return Settings.from_env(config["stages"][stage]["environment_variables"]).cors_allowed_origins


def install(project: Path, stage: str) -> None:
    """Every Swagger document chalice generates from now on carries the stage's gateway responses."""
    from chalice.deploy.swagger import SwaggerGenerator

    generate = SwaggerGenerator.generate_swagger

    def with_gateway_responses(self: SwaggerGenerator, app: Any, rest_api: Any = None) -> dict[str, Any]:
        document: dict[str, Any] = generate(self, app, rest_api)
        document[EXTENSION] = responses(stage_origins(project, stage))
        return document

    SwaggerGenerator.generate_swagger = with_gateway_responses  # type: ignore[method-assign]


def main(argv: list[str]) -> int:
    """`chalice --project-dir P <command> --stage S …` (the arguments deploy/stage.py gives it)."""
    project, stage = Path(argv[argv.index("--project-dir") + 1]), argv[argv.index("--stage") + 1]
    install(project, stage)
    from chalice.cli import main as chalice

    sys.argv = ["chalice", *argv]
    return int(chalice() or 0)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
