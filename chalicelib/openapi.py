"""The API's OpenAPI 3.1 document, generated from the pydantic request and response models.

Served by `GET /openapi.json`, which imports this module on first use: nothing on the signing or
callback paths imports it. The route list is declared here (`OPERATIONS`); `tests/test_openapi.py`
checks that it equals the app's route table and that every response the test suite sees matches the
schema of its operation and status.

OpenAPI 3.1 rather than 3.0: its schemas are JSON Schema 2020-12, which is what pydantic emits
(`anyOf [..., {"type": "null"}]` for a nullable field, `const`, `$defs`), so the models' schemas go in
unchanged and a response can be checked with a stock JSON Schema validator.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from msgspec import Struct, field

if TYPE_CHECKING:
    from pydantic import BaseModel

OPENAPI_VERSION = "3.1.0"
SCHEMA_REF = "#/components/schemas/{model}"
BEARER = "bearerAuth"
JSON = "application/json"


class Operation(Struct, frozen=True):
    method: str  # upper case, as in the app's route table
    path: str  # the app's route pattern, e.g. /uploads/{upload_id}
    operation_id: str
    summary: str
    description: str
    tag: str
    public: bool = False
    request: str | None = None  # "upload" | "complete" | "vod_event"
    ok: int = 200
    ok_body: str | None = None  # a response model's name in chalicelib.schemas
    errors: tuple[int, ...] = ()
    query: tuple[str, ...] = ()
    extra_ok_media: dict[str, dict[str, Any]] = field(default_factory=dict)
    ok_headers: tuple[str, ...] = ()
    error_components: dict[int, str] = field(default_factory=dict)  # a status's response other than its usual


# A create's 429 is a limit (with Retry-After) or the bytes quota (without: waiting makes no room).
_CREATE_429 = "LimitOrQuotaExceeded"
_CREATE_ERRORS = {429: _CREATE_429}
_ERRORS_WITH_BODY_IN = (400, 401, 409, 413, 415, 429, 503, 500)  # what a create (body, auth, storage) can say

OPERATIONS: tuple[Operation, ...] = (
    Operation(
        "GET", "/health", "health", "Liveness", "Answers without touching storage or secrets.", "meta",
        public=True, ok_body="Health", errors=(415, 500),
    ),
    Operation(
        "GET", "/openapi.json", "openapi", "This document", "The API contract as OpenAPI 3.1 (public).", "meta",
        public=True, errors=(415, 500),
        extra_ok_media={JSON: {"schema": {"type": "object", "description": "An OpenAPI 3.1 document"}}},
    ),
    Operation(
        "POST", "/uploads", "createUpload", "Create an upload intent and its first signature",
        "The server alone decides the procedure (unless the client picks one its tier allows), `classId`, "
        "`storageRegion`, `vodSubAppId`, `oneTimeValid`, task priority and notify mode, and the signature's "
        "lifetime, from the stage's upload policy. `429` when the caller's open-upload or hourly limit is "
        "reached (`limit_exceeded`, with `Retry-After`), or when the declared `fileSize` would take the bytes the "
        "caller stores plus those their open uploads declared past the tier's `maxStoredBytes` (`quota_exceeded`, "
        "naming the quota, the usage and the size; no `Retry-After`: only deleting videos makes room).",
        "uploads", request="upload", ok=201, ok_body="CreatedUpload", errors=_ERRORS_WITH_BODY_IN,
        ok_headers=("Location",), error_components=_CREATE_ERRORS,
    ),
    Operation(
        "POST", "/uploads/{upload_id}/signature", "renewSignature", "A fresh signature for the same intent",
        "Wire the upload SDK's `getSignature` to this route: it asks once per VOD request and one-time "
        "signatures are single use. Owner only (`404` for anyone else); `429` after the intent's "
        "`maxSignaturesPerIntent`; `409` once the intent is completed or cancelled or its upload window has closed.",
        "uploads", ok_body="Signature", errors=(401, 404, 409, 429, 503, 500),
    ),
    Operation(
        "POST", "/signature", "compatSignature", "Create an intent, the way Tencent's sample servers answer",
        "Creates an intent like `POST /uploads` (same body, same limits) and answers `200` with the "
        "signature: the bare string as `text/plain` when `Accept` names `text/plain` and not "
        "`application/json`, otherwise JSON.",
        "uploads", request="upload", ok_body="Signature", errors=_ERRORS_WITH_BODY_IN,
        error_components=_CREATE_ERRORS,
        extra_ok_media={"text/plain": {"schema": {"type": "string", "description": "The bare signature"}}},
    ),
    Operation(
        "GET", "/uploads/{upload_id}", "getUpload", "An upload intent and, once completed, its video",
        "Owner only (`404` for anyone else). `fileId` and `video` are null until the upload event arrives.",
        "uploads", ok_body="UploadStatus", errors=(401, 404, 503, 500),
    ),
    Operation(
        "DELETE", "/uploads/{upload_id}", "cancelUpload", "Cancel an upload",
        "Owner only (`404` for anyone else). The intent becomes `cancelled`: its open slot is freed at once and "
        "no further signature is issued for it (`409`, `reason` `cancelled`). Idempotent: cancelling a cancelled "
        "upload answers the same. The first of the cancel and the upload's attribution to be recorded wins: once "
        "an upload is attributed the cancel is `409` (`reason` `already_completed`; delete the video instead), "
        "and an upload that arrives after the cancel (VOD's event or `POST /uploads/{upload_id}/complete`) is not "
        "attributed: it is kept for review and the sweep deletes it. Publishes `upload.cancelled`.",
        "uploads", ok_body="UploadStatus", errors=(401, 404, 409, 503, 500),
    ),
    Operation(
        "POST", "/uploads/{upload_id}/complete", "completeUpload", "Report the upload done: attribute it now",
        "Call it with the `fileId` the upload SDK reported on success: the upload is attributed at once rather "
        "than when VOD's event arrives. VOD is asked about the file (DescribeMediaInfos); only a file uploaded "
        "with this upload's signatures is accepted, anything else is `422` (`reason` says why) and changes "
        "nothing. Idempotent with VOD's event: whichever comes second is a `duplicate`. Owner only (`404` for "
        "anyone else); `409` if the upload was completed with another file or was cancelled (`reason` "
        "`cancelled`; either way the file is kept for review); `503` with `Retry-After` when VOD or storage does "
        "not answer in time.",
        "uploads", request="complete", ok_body="CompletedUpload", errors=(400, 401, 404, 409, 413, 415, 422, 503, 500),
    ),
    Operation(
        "GET", "/videos", "listVideos", "The caller's videos, newest first",
        "Deleted videos are left out, so a page may hold fewer than `limit`. Pass `nextCursor` back as "
        "`cursor` for the next page.",
        "videos", ok_body="VideoPage", errors=(400, 401, 503, 500), query=("limit", "cursor"),
    ),
    Operation(
        "GET", "/videos/{file_id}", "getVideo", "One video",
        "Owner only: `404` for anyone else, for an unattributed and for a deleted file.",
        "videos", ok_body="Video", errors=(401, 404, 503, 500),
    ),
    Operation(
        "DELETE", "/videos/{file_id}", "deleteVideo", "Delete a video",
        "Deletes the file from VOD (DeleteMedia) and the video from the owner's list, then answers `204`; "
        "again `204` for a video already deleted. Owner only: `404` for anyone else and for an unknown "
        "file, deleting nothing. `503` with `Retry-After` when VOD or storage does not answer in time: the "
        "deletion is then pending (the video shows `deletionRequestedAt`), and a retry or the hourly sweep "
        "finishes it. Its completion publishes one `video.deleted` event.",
        "videos", ok=204, errors=(401, 404, 503, 500),
    ),
    Operation(
        "GET", "/me", "getMe", "The caller's tier, its limits and the caller's usage",
        "`usage.bytesStored` is what counts against `limits.maxStoredBytes`: the bytes of the caller's videos "
        "that fitted it when VOD reported their size; an upload that did not fit is marked on its video "
        "(`quotaExceeded`) and kept for review or deleted, as `limits.overQuota` says. `bytesReserved` is what "
        "the open uploads declared: `POST /uploads` counts it too.",
        "account", ok_body="Me", errors=(401, 503, 500),
    ),
    Operation(
        "POST", "/vod/events/{token}", "vodEvent", "VOD's event callback (configured in VOD, not called by apps)",
        "Configure `<api>/vod/events/<VOD_CALLBACK_TOKEN>` as VOD's v3 callback URL with a `SignKey`. Any "
        "Content-Type is accepted; the body is parsed from the raw bytes. Checks, in order: the path token "
        "(`403`), the size (`413`), the JSON (`400` naming the field), `Sign`/`T` (`401`). `503` when "
        "storage does not answer in time or signing is required but no SignKey is configured. Every "
        "accepted event is answered `200`, whatever its outcome.",
        "vod", public=True, request="vod_event", ok_body="EventAck", errors=(400, 401, 403, 413, 503, 500),
    ),
)  # fmt: skip

PUBLIC_ROUTES = frozenset((op.method, op.path) for op in OPERATIONS if op.public)

# status -> (component name, model in chalicelib.schemas, description, headers)
_ERROR_RESPONSES: dict[int, tuple[str, str, str, tuple[str, ...]]] = {
    400: ("InvalidRequest", "InvalidRequestError", "Bad input; `field` names the offending field", ()),
    401: (
        "Unauthorized", "UnauthorizedError",
        "No valid bearer token (missing, malformed, expired, unknown key, wrong audience); for the callback, "
        "a missing, wrong or out-of-range `Sign`/`T`", (),
    ),
    403: ("Forbidden", "ForbiddenError", "Unknown callback token; nothing was read or written", ()),
    404: ("NotFound", "NotFoundError", "No such resource, or it is not the caller's", ()),
    405: ("MethodNotAllowed", "MethodNotAllowedError", "The path exists, the method does not (any path)", ()),
    409: (
        "Conflict", "ConflictError",
        "The upload is completed or cancelled (`reason` says which, where it matters), or its upload window has "
        "closed", (),
    ),
    413: ("PayloadTooLarge", "PayloadTooLargeError", "The body exceeds the stage's limit", ()),
    415: ("UnsupportedMediaType", "UnsupportedMediaTypeError", "The request's Content-Type is not JSON", ()),
    422: (
        "FileRefused", "FileRefusedError",
        "The reported file is not this upload's (`reason` says why); nothing was written", (),
    ),
    429: (
        "LimitExceeded", "LimitExceededError",
        "A per-user or per-upload limit is reached; retry after `Retry-After` seconds", ("Retry-After",),
    ),
    500: ("InternalError", "InternalError", "An unexpected error; no trace is leaked", ()),
    503: (
        "ServiceUnavailable", "ServiceUnavailableError",
        "Storage, secrets or VOD did not answer in time (within about 3.5 s); nothing needs undoing, retry",
        ("Retry-After",),
    ),
}  # fmt: skip

_HEADERS: dict[str, dict[str, Any]] = {
    "Retry-After": {
        "description": "Seconds after which the same request may succeed",
        "required": True,
        "schema": {"type": "integer", "minimum": 1},
    },
    "Location": {
        "description": "The new upload intent: `/uploads/{uploadId}`",
        "required": True,
        "schema": {"type": "string", "format": "uri-reference"},
    },
}

_PATH_PARAMETERS: dict[str, dict[str, Any]] = {
    "upload_id": {"description": "An upload intent's `uploadId`", "schema": {"type": "string"}},
    "file_id": {"description": "A video's `fileId` (VOD's FileId)", "schema": {"type": "string"}},
    "token": {"description": "The secret callback token (`VOD_CALLBACK_TOKEN`)", "schema": {"type": "string"}},
}

_QUERY_PARAMETERS: dict[str, dict[str, Any]] = {
    "limit": {
        "description": "Page size",
        "schema": {"type": "integer", "minimum": 1, "maximum": 100, "default": 20},
    },
    "cursor": {"description": "The previous page's `nextCursor`", "schema": {"type": "string"}},
}

_UPLOAD_BODY_NOTE = (
    "Optional; every field is optional and unknown fields are rejected. JSON sent as `application/json`, "
    "any `*+json` type, or `text/plain` (what a browser's `fetch` sends for a string body); at most "
    "`MAX_REQUEST_BODY_BYTES` (`413`), nested at most 10 levels, finite numbers only. `metadata` is at most "
    "`MAX_METADATA_BYTES` serialised and is copied to the video; `fileSize` at most the tier's "
    "`maxFileSize`; `procedure` one the tier allows."
)

_INFO_DESCRIPTION = (
    "Hands out short-lived, single-use Tencent Cloud VOD client-upload signatures to authenticated users "
    "and records, from VOD's event callback, which user owns which video.\n\n"
    "Every route except `GET /health`, `GET /openapi.json` and the VOD callback needs `Authorization: "
    "Bearer <JWT>`, checked before anything about the request. Every error, including the framework's "
    'own, is JSON: `{"error": "<code>", "message": "..."}` plus `field` (400), `limit` and '
    "`retryAfter` (429 `limit_exceeded`), the quota and usage (429 `quota_exceeded`), `retryAfter` (503) or "
    "`requestId` (500). Any path answers `405` "
    "(`#/components/responses/MethodNotAllowed`) for a method it does not declare."
)


def _no_field_titles() -> type[Any]:
    from pydantic.json_schema import GenerateJsonSchema

    class NoFieldTitles(GenerateJsonSchema):
        """Model titles only: a per-property `title` repeats the property name."""

        def field_title_should_be_set(self, schema: Any) -> bool:
            return False

    return NoFieldTitles


def component_schemas() -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    """Every model's JSON schema: (name -> `$ref` schema, components.schemas)."""
    from pydantic.json_schema import models_json_schema

    from chalicelib import schemas
    from chalicelib.models import CompleteUploadRequest, CreateUploadRequest

    inputs: list[type[BaseModel]] = [CreateUploadRequest, CompleteUploadRequest, *schemas.REQUEST_MODELS]
    outputs: list[type[BaseModel]] = list(schemas.RESPONSE_MODELS)
    keys, definitions = models_json_schema(
        [*((model, "validation") for model in inputs), *((model, "serialization") for model in outputs)],
        ref_template=SCHEMA_REF,
        schema_generator=_no_field_titles(),
    )
    refs = {model.__name__: dict(ref) for (model, _mode), ref in keys.items()}
    return refs, dict(definitions.get("$defs", {}))


def _request_body(kind: str, refs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    if kind == "upload":
        schema = refs["CreateUploadRequest"]
        return {
            "required": False,
            "description": _UPLOAD_BODY_NOTE,
            "content": {JSON: {"schema": schema}, "text/plain": {"schema": schema}},
        }
    if kind == "complete":
        schema = refs["CompleteUploadRequest"]
        return {
            "required": True,
            "description": "The FileId the upload SDK reported (`fileId`, VOD's decimal FileId); nothing else.",
            "content": {JSON: {"schema": schema}, "text/plain": {"schema": schema}},
        }
    assert kind == "vod_event", kind
    return {
        "required": True,
        "description": (
            "VOD's event notification, v3 (`EventType`) or legacy v2 (`eventType` + `data`), at most "
            "`CALLBACK_MAX_BODY_BYTES`. Any Content-Type. Unknown keys are ignored."
        ),
        "content": {JSON: {"schema": {"anyOf": [refs["VodEventV3"], refs["VodEventV2"]]}}},
    }


_OK_DESCRIPTIONS = {200: "OK", 201: "Created", 204: "No Content"}


def _operation(op: Operation, refs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    content = dict(op.extra_ok_media)
    if op.ok_body is not None:
        content = {JSON: {"schema": refs[op.ok_body]}, **content}
    ok: dict[str, Any] = {"description": _OK_DESCRIPTIONS[op.ok]}
    if op.ok_headers:
        ok["headers"] = {name: _HEADERS[name] for name in op.ok_headers}
    if content:
        ok["content"] = content
    responses: dict[str, Any] = {str(op.ok): ok}
    for status in sorted(op.errors):
        component = op.error_components.get(status) or _ERROR_RESPONSES[status][0]
        responses[str(status)] = {"$ref": f"#/components/responses/{component}"}
    parameters = [
        {"name": name, "in": "path", "required": True, **_PATH_PARAMETERS[name]}
        for name in _path_parameter_names(op.path)
    ] + [{"name": name, "in": "query", "required": False, **_QUERY_PARAMETERS[name]} for name in op.query]
    operation: dict[str, Any] = {
        "operationId": op.operation_id,
        "summary": op.summary,
        "description": op.description,
        "tags": [op.tag],
        "security": [] if op.public else [{BEARER: []}],
    }
    if parameters:
        operation["parameters"] = parameters
    if op.request is not None:
        operation["requestBody"] = _request_body(op.request, refs)
    operation["responses"] = responses
    return operation


def _path_parameter_names(path: str) -> list[str]:
    return [part[1:-1] for part in path.split("/") if part.startswith("{") and part.endswith("}")]


def openapi_document() -> dict[str, Any]:
    """The whole document, built afresh (callers cache it)."""
    refs, schemas = component_schemas()
    paths: dict[str, dict[str, Any]] = {}
    for op in OPERATIONS:
        paths.setdefault(op.path, {})[op.method.lower()] = _operation(op, refs)
    responses = {
        name: {
            "description": description,
            **({"headers": {header: _HEADERS[header] for header in headers}} if headers else {}),
            "content": {JSON: {"schema": refs[model]}},
        }
        for name, model, description, headers in _ERROR_RESPONSES.values()
    }
    responses[_CREATE_429] = {
        "description": "A per-user limit is reached (`limit_exceeded`: retry after `Retry-After` seconds), or the "
        "declared size does not fit the bytes quota (`quota_exceeded`)",
        "headers": {"Retry-After": {**_HEADERS["Retry-After"], "required": False, "description": "With a limit"}},
        "content": {JSON: {"schema": {"oneOf": [refs["LimitExceededError"], refs["QuotaExceededError"]]}}},
    }
    return {
        "openapi": OPENAPI_VERSION,
        "info": {"title": "VOD upload backend", "version": "1", "description": _INFO_DESCRIPTION},
        "servers": [{"url": ".", "description": "Where this document is served from (`…/api` on API Gateway)"}],
        "tags": [
            {"name": "uploads", "description": "Upload intents and their VOD signatures"},
            {"name": "videos", "description": "The caller's attributed videos"},
            {"name": "account", "description": "The caller's tier, limits and usage"},
            {"name": "vod", "description": "VOD's event callback"},
            {"name": "meta", "description": "Health and this document"},
        ],
        "paths": paths,
        "components": {
            "schemas": schemas,
            "responses": responses,
            "securitySchemes": {
                BEARER: {
                    "type": "http",
                    "scheme": "bearer",
                    "bearerFormat": "JWT",
                    "description": "An OIDC access or id token of the stage's issuer (Cognito by default)",
                }
            },
        },
    }
