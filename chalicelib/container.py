"""Wiring: builds the services for the current stage once per process, on first use.

The heavy modules (pydantic models, PyJWT/cryptography, botocore) are imported by `build_services`,
not at import time, so that `import app` stays cheap and `/health` never pays for them.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING

from chalicelib import aws

if TYPE_CHECKING:
    from chalicelib.auth import TokenVerifier
    from chalicelib.credentials import SecretsProvider
    from chalicelib.event_service import EventService
    from chalicelib.repository import Repository
    from chalicelib.settings import Settings
    from chalicelib.uploads import UploadService
    from chalicelib.videos import VideoService


@dataclass(frozen=True)
class Services:
    settings: Settings
    secrets: SecretsProvider
    verifier: TokenVerifier
    repository: Repository
    uploads: UploadService
    events: EventService
    videos: VideoService


def build_services(settings: Settings, environ: Mapping[str, str] | None = None) -> Services:
    from chalicelib.auth import (
        LOCAL_ALGORITHM,
        LOCAL_AUDIENCE,
        JwksKeys,
        KeyResolver,
        StaticKey,
        TokenVerifier,
        load_or_create_local_key,
    )
    from chalicelib.credentials import EnvSecrets, SecretsManagerSecrets
    from chalicelib.event_service import EventService
    from chalicelib.repository import Repository
    from chalicelib.uploads import UploadService
    from chalicelib.videos import VideoService

    if settings.secrets_source == "env":
        # os.environ is looked up now, not bound at definition: test clients swap the object.
        secrets: SecretsProvider = EnvSecrets(os.environ if environ is None else environ)
    else:
        assert settings.secret_name is not None  # checked by Settings
        secrets = SecretsManagerSecrets(
            lambda: aws.client("secretsmanager", settings.aws_region),
            settings.secret_name,
            settings.secrets_cache_seconds,
        )
    keys: KeyResolver
    if settings.auth_mode == "local":
        keys = StaticKey(load_or_create_local_key(settings.local_jwt_key_file).public_key(), LOCAL_ALGORITHM)
        issuer, audience = settings.local_jwt_issuer, LOCAL_AUDIENCE
    else:
        assert settings.oidc_jwks_url and settings.oidc_issuer and settings.oidc_audience
        keys = JwksKeys(settings.oidc_jwks_url, settings.jwks_cache_seconds)
        issuer, audience = settings.oidc_issuer, settings.oidc_audience
    verifier = TokenVerifier(keys, issuer, audience, settings.jwt_leeway_seconds)
    connect, read = settings.dynamodb_connect_timeout_seconds, settings.dynamodb_read_timeout_seconds
    repository = Repository(
        aws.client("dynamodb", settings.aws_region, settings.dynamodb_endpoint_url, connect, read),
        settings.table_name,
        attempt_seconds=connect + read,
    )
    return Services(
        settings=settings,
        secrets=secrets,
        verifier=verifier,
        repository=repository,
        uploads=UploadService(repository, secrets, settings.upload_policy, settings.max_metadata_bytes),
        events=EventService(
            repository,
            secrets,
            settings.callback_max_body_bytes,
            require_sign=settings.require_callback_sign,
            max_sign_lifetime_seconds=settings.callback_sign_max_lifetime_seconds,
        ),
        videos=VideoService(repository),
    )


@lru_cache(maxsize=1)
def services() -> Services:
    from chalicelib.settings import Settings

    return build_services(Settings.from_env(os.environ))


def reset() -> None:
    """Forget the cached configuration (tests change the environment between cases)."""
    services.cache_clear()
    aws.client.cache_clear()
