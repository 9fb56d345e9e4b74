"""End-user authentication: `Authorization: Bearer <JWT>` verified as an OIDC token.

`dev`/`prod` verify RS256/ES256 tokens against the provider's JWKS (cached), issuer and audience
(`aud`, or Cognito access tokens' `client_id`). `local` verifies tokens signed by a key pair that is
generated on first run, so `make token` can mint them. Verification happens in application code, so it
behaves the same under `chalice local`, the test client and API Gateway.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

import jwt
from msgspec import Struct

from chalicelib.errors import ServiceUnavailable, Unauthorized
from chalicelib.identity import LOCAL_ALGORITHM, LOCAL_AUDIENCE, Principal

ALGORITHMS = ["RS256", "ES256"]

logger = logging.getLogger("vodupload")


class VerificationKey(Struct, frozen=True):
    """A public key and the one algorithm it verifies: a token naming another algorithm never reaches
    the crypto layer with this key (an RSA token against an EC key is refused, not a crash)."""

    key: Any
    algorithm: str


class KeyResolver(Protocol):
    def key_for(self, token: str) -> VerificationKey: ...


class JwksKeys:
    def __init__(self, jwks_url: str, cache_seconds: int, refetch_cooldown_seconds: float = 30) -> None:
        # An unknown `kid` refetches the set at most once per cooldown, so forged kids cannot hammer the IdP.
        self._client = jwt.PyJWKClient(
            jwks_url,
            cache_keys=True,
            lifespan=max(cache_seconds, 1),
            timeout=5,
            cooldown_duration=refetch_cooldown_seconds,
        )

    def key_for(self, token: str) -> VerificationKey:
        try:
            jwk = self._client.get_signing_key_from_jwt(token)
        except jwt.PyJWKClientConnectionError:
            raise ServiceUnavailable("identity provider keys are unreachable") from None
        except jwt.PyJWKClientError:
            raise Unauthorized("token signed by an unknown key") from None
        except (jwt.PyJWTError, ValueError, TypeError, KeyError):
            raise Unauthorized("malformed token") from None
        if jwk.algorithm_name not in ALGORITHMS:
            raise Unauthorized("token signed by an unsupported key type")
        return VerificationKey(jwk.key, jwk.algorithm_name)


class StaticKey:
    def __init__(self, public_key: Any, algorithm: str) -> None:
        self._key = VerificationKey(public_key, algorithm)

    def key_for(self, token: str) -> VerificationKey:
        return self._key


class TokenVerifier:
    def __init__(self, keys: KeyResolver, issuer: str, audience: str, leeway_seconds: int) -> None:
        self._keys = keys
        self._issuer = issuer
        self._audience = audience
        self._leeway = leeway_seconds

    def verify(self, authorization: str | None) -> Principal:
        token = _bearer_token(authorization)
        key = self._keys.key_for(token)
        try:
            claims = jwt.decode(
                token,
                key.key,
                algorithms=[key.algorithm],
                issuer=self._issuer,
                leeway=self._leeway,
                options={"require": ["exp", "iss", "sub"], "verify_aud": False},
            )
        except jwt.ExpiredSignatureError:
            raise Unauthorized("token expired") from None
        except jwt.PyJWTError as exc:
            raise Unauthorized(f"invalid token: {type(exc).__name__}") from None
        except Exception as exc:  # whatever the crypto layer raises about a token, it is a bad token
            logger.warning("token verification raised %s", type(exc).__name__)
            raise Unauthorized("invalid token") from None
        if not self._audience_matches(claims):
            raise Unauthorized("token was issued for another audience")
        subject = claims["sub"]
        if not isinstance(subject, str) or not subject or len(subject) > 128:
            raise Unauthorized("token subject is not usable")
        return Principal(subject=subject, claims=claims)

    def _audience_matches(self, claims: Mapping[str, Any]) -> bool:
        audience = claims.get("aud")
        if isinstance(audience, str):
            return audience == self._audience
        if isinstance(audience, list):
            return self._audience in audience
        # Cognito access tokens carry the app client id instead of `aud`.
        return claims.get("token_use") == "access" and claims.get("client_id") == self._audience


def _bearer_token(authorization: str | None) -> str:
    if not authorization:
        raise Unauthorized("missing Authorization header")
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("Authorization must be 'Bearer <token>'")
    return token.strip()


def load_or_create_local_key(path: str) -> Any:
    """The local stage's private key, generated (P-256) on first use and kept in `path`."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key_path = Path(path)
    if key_path.exists():
        return serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    key_path.parent.mkdir(parents=True, exist_ok=True)
    temporary = key_path.with_suffix(f".{os.getpid()}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(pem)
    try:
        os.link(temporary, key_path)  # first writer wins if two processes race
    except FileExistsError:
        return load_or_create_local_key(path)
    finally:
        temporary.unlink()
    return key


def mint_local_token(
    private_key: Any, issuer: str, subject: str, groups: list[str] | None = None, ttl_seconds: int = 3600
) -> str:
    now = int(time.time())
    claims: dict[str, Any] = {
        "iss": issuer,
        "aud": LOCAL_AUDIENCE,
        "sub": subject,
        "iat": now,
        "nbf": now,
        "exp": now + ttl_seconds,
    }
    if groups:
        claims["cognito:groups"] = groups
    return jwt.encode(claims, private_key, algorithm=LOCAL_ALGORITHM)
