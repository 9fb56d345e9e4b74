"""OIDC verification against a JWKS served over real HTTP on 127.0.0.1."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from chalicelib.auth import JwksKeys, TokenVerifier
from chalicelib.errors import ServiceUnavailable, Unauthorized

ISSUER = "https://cognito-idp.us-east-1.amazonaws.com/us-east-1_TEST"
AUDIENCE = "app-client-123"


class Jwks:
    def __init__(self) -> None:
        self.keys: dict[str, Any] = {}
        self.fetches = 0

    def add(self, kid: str, private_key: Any) -> None:
        self.keys[kid] = private_key

    def document(self) -> bytes:
        jwk_set = []
        for kid, key in self.keys.items():
            algorithm = (
                jwt.algorithms.RSAAlgorithm if isinstance(key, rsa.RSAPrivateKey) else jwt.algorithms.ECAlgorithm
            )
            jwk = json.loads(algorithm.to_jwk(key.public_key()))
            jwk.update(kid=kid, use="sig")
            jwk_set.append(jwk)
        return json.dumps({"keys": jwk_set}).encode()


@pytest.fixture
def jwks() -> Iterator[tuple[Jwks, str]]:
    state = Jwks()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            state.fetches += 1
            body = state.document()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield state, f"http://127.0.0.1:{server.server_address[1]}/.well-known/jwks.json"
    server.shutdown()
    server.server_close()


def token(key: Any, kid: str, algorithm: str = "RS256", **overrides: Any) -> str:
    now = int(time.time())
    claims = {"iss": ISSUER, "aud": AUDIENCE, "sub": "user-1", "iat": now, "exp": now + 300, **overrides}
    claims = {k: v for k, v in claims.items() if v is not None}
    return jwt.encode(claims, key, algorithm=algorithm, headers={"kid": kid})


def verifier(url: str, cooldown: float = 30) -> TokenVerifier:
    return TokenVerifier(JwksKeys(url, 3600, refetch_cooldown_seconds=cooldown), ISSUER, AUDIENCE, leeway_seconds=30)


def test_rs256_and_es256_tokens_verify_and_jwks_is_cached(jwks: tuple[Jwks, str]) -> None:
    state, url = jwks
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ec_key = ec.generate_private_key(ec.SECP256R1())
    state.add("rsa-1", rsa_key)
    state.add("ec-1", ec_key)
    check = verifier(url)
    assert check.verify(f"Bearer {token(rsa_key, 'rsa-1')}").subject == "user-1"
    assert check.verify(f"Bearer {token(ec_key, 'ec-1', 'ES256', sub='user-2')}").subject == "user-2"
    assert check.verify(f"bearer {token(rsa_key, 'rsa-1')}").subject == "user-1"
    assert state.fetches == 1


def test_key_rotation_refetches_for_an_unknown_kid(jwks: tuple[Jwks, str]) -> None:
    state, url = jwks
    first, second = (rsa.generate_private_key(public_exponent=65537, key_size=2048) for _ in range(2))
    state.add("k1", first)
    check = verifier(url, cooldown=0)
    check.verify(f"Bearer {token(first, 'k1')}")
    state.add("k2", second)
    assert check.verify(f"Bearer {token(second, 'k2')}").subject == "user-1"
    assert state.fetches == 2
    throttled = verifier(url)
    throttled.verify(f"Bearer {token(first, 'k1')}")
    for _ in range(3):  # unknown kids within the cooldown do not refetch
        with pytest.raises(Unauthorized, match="unknown key"):
            throttled.verify(f"Bearer {token(first, 'forged-kid')}")
    assert state.fetches == 3


def test_cognito_access_token_matches_on_client_id(jwks: tuple[Jwks, str]) -> None:
    state, url = jwks
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    state.add("k", key)
    access = token(key, "k", aud=None, token_use="access", client_id=AUDIENCE)
    assert verifier(url).verify(f"Bearer {access}").subject == "user-1"
    other_client = token(key, "k", aud=None, token_use="access", client_id="someone-else")
    with pytest.raises(Unauthorized, match="audience"):
        verifier(url).verify(f"Bearer {other_client}")


# The claims given the time the token is made: computed at collection, a "not before" 10 min ahead had passed by
# the time the test ran, late in a long parallel run.
@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (lambda now: {"aud": "other-app"}, "audience"),
        (lambda now: {"iss": "https://evil.example"}, "invalid token"),
        (lambda now: {"exp": now - 60}, "expired"),
        (lambda now: {"nbf": now + 600}, "invalid token"),
        (lambda now: {"sub": None}, "invalid token"),
    ],
)
def test_bad_claims_are_rejected(
    jwks: tuple[Jwks, str], overrides: Callable[[int], dict[str, Any]], message: str
) -> None:
    state, url = jwks
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    state.add("k", key)
    with pytest.raises(Unauthorized, match=message):
        verifier(url).verify(f"Bearer {token(key, 'k', **overrides(int(time.time())))}")


def test_small_clock_skew_is_tolerated(jwks: tuple[Jwks, str]) -> None:
    state, url = jwks
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    state.add("k", key)
    assert verifier(url).verify(f"Bearer {token(key, 'k', exp=int(time.time()) - 10)}").subject == "user-1"


def test_hs256_and_unknown_keys_are_rejected(jwks: tuple[Jwks, str]) -> None:
    state, url = jwks
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    state.add("k", key)
    forged = jwt.encode({"iss": ISSUER, "aud": AUDIENCE, "sub": "x", "exp": int(time.time()) + 60}, "s" * 32,
                        algorithm="HS256", headers={"kid": "k"})  # fmt: skip
    with pytest.raises(Unauthorized):
        verifier(url).verify(f"Bearer {forged}")
    stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    with pytest.raises(Unauthorized, match="unknown key"):
        verifier(url).verify(f"Bearer {token(stranger, 'nope')}")


def test_unreachable_jwks_is_503_not_401() -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    with pytest.raises(ServiceUnavailable):
        verifier("http://127.0.0.1:9/jwks.json").verify(f"Bearer {token(key, 'k')}")


def test_a_header_naming_another_algorithm_than_the_key_is_401_not_a_crash(jwks: tuple[Jwks, str]) -> None:
    """`{"alg": "ES256", "kid": <an RSA key's kid>}` made the crypto layer raise TypeError (a 500)."""
    state, url = jwks
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    state.add("rsa-1", rsa_key)
    ec_key = ec.generate_private_key(ec.SECP256R1())
    mismatched = token(ec_key, "rsa-1", "ES256")
    with pytest.raises(Unauthorized):
        verifier(url).verify(f"Bearer {mismatched}")
    garbage = "eyJhbGciOiAiRVMyNTYiLCAia2lkIjogInJzYS0xIn0.e30.AAAA"  # {"alg": "ES256", "kid": "rsa-1"}
    with pytest.raises(Unauthorized):
        verifier(url).verify(f"Bearer {garbage}")
