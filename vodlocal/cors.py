"""COS bucket CORS, as a bucket's CORS configuration (PutBucketCors) answers a browser.

A rule names the origins (``*`` wildcards allowed, as COS allows one per origin), methods and request headers
it allows, the response headers it exposes and how long a preflight may be cached. A preflight that no rule
allows is refused with 403, and an actual request from an origin no rule allows gets no CORS headers, so the
browser keeps the answer from the page. VOD's own buckets must allow any origin (the Web SDK works from any
site) and expose ``ETag``, which the SDK reads from every UploadPart: that is ``DEFAULT_COS_CORS``.
"""

from __future__ import annotations

import fnmatch
import json
from collections.abc import Sequence
from dataclasses import dataclass

from vodlocal.httpkit import Request, Response, xml_document


@dataclass(frozen=True)
class CorsRule:
    allowed_origins: tuple[str, ...]
    allowed_methods: tuple[str, ...]
    allowed_headers: tuple[str, ...] = ("*",)
    expose_headers: tuple[str, ...] = ()
    max_age_seconds: int = 0

    def allows(self, origin: str, method: str, headers: Sequence[str] = ()) -> bool:
        return (
            any(fnmatch.fnmatchcase(origin, pattern) for pattern in self.allowed_origins)
            and method.upper() in self.allowed_methods
            and all(
                any(fnmatch.fnmatchcase(header.lower(), allowed.lower()) for allowed in self.allowed_headers)
                for header in headers
            )
        )


DEFAULT_COS_CORS = (
    CorsRule(
        allowed_origins=("*",),
        allowed_methods=("GET", "PUT", "POST", "DELETE", "HEAD"),
        allowed_headers=("*",),
        expose_headers=("ETag", "Content-Length", "x-cos-request-id", "Content-Range"),
        max_age_seconds=600,
    ),
)


def parse_rules(text: str) -> tuple[CorsRule, ...]:
    """The ``CORSRule`` list of COS's PutBucketCors, as JSON: ``[{"AllowedOrigins": [...], "AllowedMethods": [...],
    "AllowedHeaders": [...], "ExposeHeaders": [...], "MaxAgeSeconds": 600}]``."""
    try:
        raw = json.loads(text)
        return tuple(
            CorsRule(
                allowed_origins=tuple(rule["AllowedOrigins"]),
                allowed_methods=tuple(method.upper() for method in rule["AllowedMethods"]),
                allowed_headers=tuple(rule.get("AllowedHeaders", ())),
                expose_headers=tuple(rule.get("ExposeHeaders", ())),
                max_age_seconds=int(rule.get("MaxAgeSeconds", 0)),
            )
            for rule in raw
        )
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        raise ValueError(f"COS CORS rules must be a JSON list of CORSRule objects: {exc}") from None


def _requested_headers(req: Request) -> list[str]:
    return [name.strip() for name in req.header("access-control-request-headers").split(",") if name.strip()]


def preflight(rules: Sequence[CorsRule], req: Request) -> Response:
    req.log["op"] = "CORSPreflight"
    origin, method = req.header("origin"), req.header("access-control-request-method")
    headers = _requested_headers(req)
    for rule in rules:
        if origin and method and rule.allows(origin, method, headers):
            answer = {
                "Access-Control-Allow-Origin": origin,
                "Access-Control-Allow-Methods": ", ".join(rule.allowed_methods),
                "Access-Control-Max-Age": str(rule.max_age_seconds),
                "Vary": "Origin",
            }
            if headers:
                answer["Access-Control-Allow-Headers"] = ", ".join(headers)
            if rule.expose_headers:
                answer["Access-Control-Expose-Headers"] = ", ".join(rule.expose_headers)
            return Response(200, answer)
    req.log["error"] = "CORSForbidden"
    body = xml_document(
        "Error",
        [
            ("Code", "AccessForbidden"),
            ("Message", "CORSResponse: This CORS request is not allowed by the bucket's CORS rules."),
        ],
    )
    return Response(403, {"Content-Type": "application/xml"}, body.encode())


def actual_headers(rules: Sequence[CorsRule], req: Request) -> dict[str, str]:
    """The CORS headers of an actual (non-preflight) answer: those of the first rule allowing its origin and
    method, or none."""
    origin = req.header("origin")
    for rule in rules:
        if origin and rule.allows(origin, req.method):
            answer = {"Access-Control-Allow-Origin": origin, "Vary": "Origin"}
            if rule.expose_headers:
                answer["Access-Control-Expose-Headers"] = ", ".join(rule.expose_headers)
            return answer
    return {}
