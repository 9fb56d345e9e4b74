"""Who is asking: the authenticated principal, and the local stage's token constants.

Kept apart from chalicelib/auth.py, which verifies tokens, so that code that only needs to know the
principal (the upload service) or the constants (the settings) does not import PyJWT and cryptography:
the VOD callback never verifies a bearer token.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from msgspec import Struct

LOCAL_ALGORITHM = "ES256"
LOCAL_AUDIENCE = "vod-upload-local"
LOCAL_ISSUER = "http://127.0.0.1:8000/local-issuer"


class Principal(Struct, frozen=True):
    subject: str
    claims: Mapping[str, Any]
