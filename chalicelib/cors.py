"""Cross-origin access for browser pages: the stage's `CORS_ALLOWED_ORIGINS` decide which pages may call the API.

The app answers preflights itself (an OPTIONS route per browser path, app.py) instead of through chalice's
`cors=` option: API Gateway's generated preflight carries one fixed origin, chosen when the API is deployed, so
a stage could allow only one, and every other origin would still get an answer naming it. Here an allowed
origin is echoed back, and any other origin gets a 403 and no grant at all.
"""

from __future__ import annotations

from collections.abc import Iterable

from msgspec import Struct

from chalicelib.errors import Forbidden

# What the browser routes need beyond the CORS-safelisted headers: the bearer token and a JSON body's type.
ALLOWED_REQUEST_HEADERS = ("Authorization", "Content-Type")
# Response headers a page may read: a created intent's address and when to retry.
EXPOSED_HEADERS = ("Location", "Retry-After")
# Browsers cap it (Chromium at 2 hours); 10 minutes keeps a removed origin from lingering long.
PREFLIGHT_MAX_AGE_SECONDS = 600
# What a browser route answers depends on the request's Origin: granted, refused, or none sent. A cache that
# ignored it could hand one page the answer made for another (a grant, or the lack of one).
VARY_ORIGIN = {"Vary": "Origin"}


class CorsPolicy(Struct, frozen=True):
    allowed_origins: tuple[str, ...]

    def allows(self, origin: str | None) -> bool:
        return bool(origin) and ("*" in self.allowed_origins or origin in self.allowed_origins)

    def preflight(
        self, origin: str | None, method: str | None, request_headers: str | None, route_methods: Iterable[str]
    ) -> dict[str, str | list[str]]:
        """The headers of a granted preflight; `Forbidden` for an origin, method or header the route refuses."""
        methods = sorted(set(route_methods) - {"OPTIONS"})
        allowed_headers = {name.lower() for name in ALLOWED_REQUEST_HEADERS}
        requested = [name.strip().lower() for name in (request_headers or "").split(",") if name.strip()]
        if not origin:
            raise Forbidden("a preflight needs an Origin header")
        if not self.allows(origin):
            raise Forbidden(f"cross-origin requests from {origin[:100]!r} are not allowed")
        if not method:
            raise Forbidden("a preflight needs an Access-Control-Request-Method header")
        if method not in methods or not set(requested) <= allowed_headers:
            raise Forbidden(f"a cross-origin {method[:20]} with headers {requested!r} is not allowed here")
        return {
            "Access-Control-Allow-Origin": str(origin),
            "Access-Control-Allow-Methods": ", ".join(methods),
            "Access-Control-Allow-Headers": ", ".join(ALLOWED_REQUEST_HEADERS),
            "Access-Control-Max-Age": str(PREFLIGHT_MAX_AGE_SECONDS),
            **VARY_ORIGIN,
        }

    def response_headers(self, origin: str | None) -> dict[str, str]:
        """The CORS headers of an actual answer: a grant for an allowed origin, no grant for any other."""
        if not self.allows(origin):
            return dict(VARY_ORIGIN)
        return {
            "Access-Control-Allow-Origin": str(origin),
            "Access-Control-Expose-Headers": ", ".join(EXPOSED_HEADERS),
            **VARY_ORIGIN,
        }
