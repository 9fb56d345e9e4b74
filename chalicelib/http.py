"""The HTTP edge shared by all routes: body parsing, error shaping, the request log line."""

from __future__ import annotations

import logging
import re
import time
from typing import TYPE_CHECKING, Any, TypeVar

from chalice.app import Response

from chalicelib.errors import DomainError, InvalidRequest, PayloadTooLarge, UnsupportedMediaType, invalid_request_from
from chalicelib.strict_json import load_bounded_json

if TYPE_CHECKING:
    from pydantic import BaseModel

ModelT = TypeVar("ModelT", bound="BaseModel")

logger = logging.getLogger("vodupload")


# `text/plain` too: a browser's fetch() with a string body and no explicit header sends it.
_JSON_MEDIA_TYPES = ("application/json", "text/plain")


def parse_json_body(
    body: bytes, content_type: str | None, model: type[ModelT], max_bytes: int, optional: bool
) -> ModelT:
    media_type = (content_type or "application/json").split(";", 1)[0].strip().lower()
    if media_type not in _JSON_MEDIA_TYPES and not media_type.endswith("+json"):
        raise UnsupportedMediaType(f"Content-Type {media_type[:100]!r} is not JSON; send application/json")
    if len(body) > max_bytes:
        raise PayloadTooLarge(f"request body exceeds {max_bytes} bytes")
    if not body.strip():
        if optional:
            return model()
        raise InvalidRequest("body", "a JSON object is required")
    data = load_bounded_json(body, "body")
    if not isinstance(data, dict):
        raise InvalidRequest("body", "must be a JSON object")
    from pydantic import ValidationError

    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise invalid_request_from(exc) from None


def error_response(error: DomainError) -> tuple[int, dict[str, object], dict[str, str | list[str]]]:
    headers: dict[str, str | list[str]] = {"Content-Type": "application/json"}
    if error.retry_after_seconds is not None:
        headers["Retry-After"] = str(error.retry_after_seconds)
    return error.status, error.body(), headers


_FRAMEWORK_CODES = {
    "BadRequestError": "invalid_request",
    "BadRequest": "invalid_request",
    "InternalServerError": "internal_error",
    "MethodNotAllowedError": "method_not_allowed",
    "NotFoundError": "not_found",
    "UnsupportedMediaType": "unsupported_media_type",
}


def reshape_framework_error(response: Response) -> Response:
    """Chalice answers some requests itself (405, 415, crashes outside our views) with
    `{"Code", "Message"}`; every answer of this API has the documented `{"error", "message"}` shape."""
    body = response.body
    if response.status_code < 400 or not isinstance(body, dict) or set(body) != {"Code", "Message"}:
        return response
    code = _FRAMEWORK_CODES.get(str(body["Code"])) or re.sub(r"(?<!^)(?=[A-Z])", "_", str(body["Code"])).lower()
    headers = {**response.headers, "Content-Type": "application/json"}
    return Response(
        body={"error": code or "error", "message": str(body["Message"])},
        status_code=response.status_code,
        headers=headers,
    )


def log_request(method: str, path: str, status: int, started: float, request_id: str, **fields: Any) -> None:
    logger.info(
        "request",
        extra={
            "method": method,
            "path": path,
            "status": status,
            "ms": round((time.perf_counter() - started) * 1000, 1),
            "requestId": request_id,
            **fields,
        },
    )
