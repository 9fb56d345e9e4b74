"""Service secrets: VOD API key, context-tag key, callback path token and SignKey.

In `dev`/`prod` they come from one JSON secret in AWS Secrets Manager, cached in memory for a
while; in `local` from environment variables. Nothing here ever formats a secret into text.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from msgspec import Struct

from chalicelib.errors import ServiceUnavailable

UNAVAILABLE = "service secrets are unavailable"
logger = logging.getLogger("vodupload")

SECRET_KEYS = ("VOD_SECRET_ID", "VOD_SECRET_KEY", "CONTEXT_TAG_KEY", "VOD_CALLBACK_TOKEN")
# The secret a stage stack creates (infra/stage.json) holds one random STAGE_KEY that CloudFormation
# generates (a secret generates one value), and the operator's VOD key pair. The context-tag key, the
# callback path token and the callback SignKey are derived from it; a value set explicitly wins.
STAGE_KEY = "STAGE_KEY"


def derive_from_stage_key(stage_key: str) -> dict[str, str]:
    """CONTEXT_TAG_KEY, VOD_CALLBACK_TOKEN and VOD_SIGN_KEY from the stage key (also used by the deploy,
    which sets the callback URL and SignKey in VOD). VOD takes a SignKey of letters and digits, ≤ 32."""

    def derived(label: str) -> bytes:
        return hmac.new(stage_key.encode("utf-8"), label.encode("ascii"), hashlib.sha256).digest()

    return {
        "CONTEXT_TAG_KEY": base64.urlsafe_b64encode(derived("context-tag-key")).rstrip(b"=").decode("ascii"),
        "VOD_CALLBACK_TOKEN": base64.urlsafe_b64encode(derived("callback-token")).rstrip(b"=").decode("ascii"),
        "VOD_SIGN_KEY": derived("vod-sign-key").hex()[:32],
    }


class ServiceSecrets(Struct, frozen=True):
    vod_secret_id: str
    vod_secret_key: str
    context_tag_key: bytes
    callback_token: str
    sign_key: str | None = None

    def __repr__(self) -> str:
        """The SecretId alone: the keys and the token must never reach a log line or a traceback."""
        return f"ServiceSecrets(vod_secret_id={self.vod_secret_id!r})"

    def __rich_repr__(self) -> list[tuple[str, Any]]:
        return [("vod_secret_id", self.vod_secret_id)]

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any], source: str) -> ServiceSecrets:
        stage_key = values.get(STAGE_KEY)
        if isinstance(stage_key, str) and stage_key:
            values = {**derive_from_stage_key(stage_key), **{k: v for k, v in values.items() if v}}
        missing = [key for key in SECRET_KEYS if not isinstance(values.get(key), str) or not values[key]]
        if missing:
            raise ServiceUnavailable(f"secrets from {source} lack {', '.join(missing)}")
        sign_key = values.get("VOD_SIGN_KEY")
        return cls(
            vod_secret_id=values["VOD_SECRET_ID"],
            vod_secret_key=values["VOD_SECRET_KEY"],
            context_tag_key=values["CONTEXT_TAG_KEY"].encode("utf-8"),
            callback_token=values["VOD_CALLBACK_TOKEN"],
            sign_key=sign_key if isinstance(sign_key, str) and sign_key else None,
        )


class SecretsProvider(Protocol):
    def get(self) -> ServiceSecrets: ...


class EnvSecrets:
    def __init__(self, environ: Mapping[str, str]) -> None:
        self._secrets = ServiceSecrets.from_mapping(environ, "the environment")

    def get(self) -> ServiceSecrets:
        return self._secrets


class SecretsManagerSecrets:
    """Fetches the JSON secret once per `ttl_seconds`; concurrent callers share one fetch.

    A failure is logged with its cause and remembered for `FAILURE_BACKOFF_SECONDS`, so unauthenticated
    traffic cannot turn into a stream of GetSecretValue calls; callers only learn "unavailable"."""

    FAILURE_BACKOFF_SECONDS = 5.0

    def __init__(
        self,
        client_factory: Callable[[], Any],
        secret_name: str,
        ttl_seconds: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._client_factory = client_factory
        self._secret_name = secret_name
        self._ttl = ttl_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._cached: tuple[float, ServiceSecrets] | None = None
        self._failed_at: float | None = None

    def get(self) -> ServiceSecrets:
        with self._lock:
            now = self._clock()
            if self._cached is not None and now - self._cached[0] < self._ttl:
                return self._cached[1]
            if self._failed_at is not None and now - self._failed_at < self.FAILURE_BACKOFF_SECONDS:
                raise ServiceUnavailable(UNAVAILABLE)
            try:
                secrets = self._fetch()
            except ServiceUnavailable as exc:
                self._failed_at = now
                logger.error("service secrets unavailable", extra={"cause": exc.message})
                raise ServiceUnavailable(UNAVAILABLE) from None
            self._failed_at = None
            self._cached = (now, secrets)
            return secrets

    def _fetch(self) -> ServiceSecrets:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            response = self._client_factory().get_secret_value(SecretId=self._secret_name)
        except (BotoCoreError, ClientError) as exc:
            raise ServiceUnavailable(f"cannot read secret {self._secret_name}: {type(exc).__name__}") from None
        try:
            values = json.loads(response["SecretString"])
        except (KeyError, TypeError, json.JSONDecodeError):
            raise ServiceUnavailable(f"secret {self._secret_name} is not a JSON object") from None
        if not isinstance(values, dict):
            raise ServiceUnavailable(f"secret {self._secret_name} is not a JSON object")
        return ServiceSecrets.from_mapping(values, f"secret {self._secret_name}")
