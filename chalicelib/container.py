"""Wiring: the services of the current stage, each built on first use and kept for the process.

Each service imports its modules when it is first used, so a request imports only what its route
needs: the signing routes never import the notification parsers and the event service, the callback
never imports the token verifier (PyJWT, cryptography), and `/health` imports none of them.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from functools import cached_property, lru_cache
from typing import TYPE_CHECKING, TypeVar

from chalicelib import aws

if TYPE_CHECKING:
    from chalicelib.auth import TokenVerifier
    from chalicelib.completion import CompletionService, MediaCatalog
    from chalicelib.cors import CorsPolicy
    from chalicelib.credentials import SecretsProvider
    from chalicelib.deletion import MediaLibrary, VideoDeletion
    from chalicelib.event_service import EventService
    from chalicelib.pull_consumer import PullConsumer
    from chalicelib.quotas import AccountService
    from chalicelib.settings import Settings
    from chalicelib.storage import Storage
    from chalicelib.sweep import ReconciliationSweep
    from chalicelib.uploads import UploadService
    from chalicelib.videos import VideoService
    from chalicelib.vod_api import CurrentKeysClient, VodApi, VodMediaCatalog

Api = TypeVar("Api", bound="VodApi")


class Services:
    def __init__(self, settings: Settings, environ: Mapping[str, str] | None = None) -> None:
        self.settings = settings
        self._environ = environ

    @cached_property
    def secrets(self) -> SecretsProvider:
        from chalicelib.credentials import EnvSecrets, SecretsManagerSecrets

        settings = self.settings
        if settings.secrets_source == "env":
            # os.environ is looked up now, not bound at definition: test clients swap the object.
            return EnvSecrets(os.environ if self._environ is None else self._environ)
        assert settings.secret_name is not None  # checked by Settings
        return SecretsManagerSecrets(
            lambda: aws.client("secretsmanager", settings.aws_region),
            settings.secret_name,
            settings.secrets_cache_seconds,
        )

    @cached_property
    def cors(self) -> CorsPolicy:
        from chalicelib.cors import CorsPolicy

        return CorsPolicy(self.settings.cors_allowed_origins)

    @cached_property
    def verifier(self) -> TokenVerifier:
        from chalicelib.auth import JwksKeys, KeyResolver, StaticKey, TokenVerifier, load_or_create_local_key
        from chalicelib.identity import LOCAL_ALGORITHM, LOCAL_AUDIENCE

        settings = self.settings
        keys: KeyResolver
        if settings.auth_mode == "local":
            keys = StaticKey(load_or_create_local_key(settings.local_jwt_key_file).public_key(), LOCAL_ALGORITHM)
            issuer, audience = settings.local_jwt_issuer, LOCAL_AUDIENCE
        else:
            assert settings.oidc_jwks_url and settings.oidc_issuer and settings.oidc_audience
            keys = JwksKeys(settings.oidc_jwks_url, settings.jwks_cache_seconds)
            issuer, audience = settings.oidc_issuer, settings.oidc_audience
        return TokenVerifier(keys, issuer, audience, settings.jwt_leeway_seconds)

    @cached_property
    def storage(self) -> Storage:
        from chalicelib.storage import Storage

        settings = self.settings
        connect, read = settings.dynamodb_connect_timeout_seconds, settings.dynamodb_read_timeout_seconds
        return Storage.over(
            aws.client("dynamodb", settings.aws_region, settings.dynamodb_endpoint_url, connect, read),
            settings.table_name,
            attempt_seconds=connect + read,
        )

    @cached_property
    def uploads(self) -> UploadService:
        from chalicelib.uploads import UploadService

        settings = self.settings
        return UploadService(
            self.storage.intents, self.secrets, settings.upload_policy, settings.max_metadata_bytes, self.storage.usage
        )

    @cached_property
    def accounts(self) -> AccountService:
        from chalicelib.quotas import AccountService

        return AccountService(self.storage.usage, self.settings.upload_policy)

    @cached_property
    def events(self) -> EventService:
        from chalicelib.event_service import EventService

        settings = self.settings
        return EventService(
            self.storage,
            self.secrets,
            settings.upload_policy,
            settings.callback_max_body_bytes,
            require_sign=settings.require_callback_sign,
            max_sign_lifetime_seconds=settings.callback_sign_max_lifetime_seconds,
        )

    @cached_property
    def pull_consumer(self) -> PullConsumer:
        from chalicelib.pull_consumer import PullConsumer
        from chalicelib.vod_api import CurrentKeysEventQueue

        settings = self.settings
        return PullConsumer(
            CurrentKeysEventQueue(self._vod_keys, settings.vod_api_endpoint, self._vod_sub_app_id),
            self.events,
            self.storage.vod_events,
            settings.pull_max_failures,
            settings.request_deadline_seconds,
            settings.pull_confirm_window_seconds,
        )

    @cached_property
    def sweep(self) -> ReconciliationSweep:
        from chalicelib.sweep import ReconciliationSweep

        def media() -> MediaLibrary:
            from chalicelib.vod_api import VodMediaLibrary

            return self._vod_api(VodMediaLibrary)

        settings = self.settings
        return ReconciliationSweep(
            self.storage,
            media,
            settings.delete_unattributed,
            settings.delete_unattributed_after_seconds,
            settings.request_deadline_seconds,
        )

    @cached_property
    def deletion(self) -> VideoDeletion:
        from chalicelib.deletion import VideoDeletion

        def media() -> MediaLibrary:
            from chalicelib.vod_api import VodMediaLibraryInRequest

            return self._vod_api(VodMediaLibraryInRequest)

        return VideoDeletion(self.storage.videos, media)

    @cached_property
    def completion(self) -> CompletionService:
        from chalicelib.completion import CompletionService

        catalogs: dict[int | None, CurrentKeysClient[VodMediaCatalog]] = {}

        def catalog_for(sub_app_id: int | None) -> MediaCatalog:
            from chalicelib.vod_api import CurrentKeysClient, VodMediaCatalog

            if sub_app_id not in catalogs:
                endpoint = self.settings.vod_api_endpoint
                catalogs[sub_app_id] = CurrentKeysClient(VodMediaCatalog, self._vod_keys, endpoint, sub_app_id)
            return catalogs[sub_app_id].current()

        return CompletionService(self.uploads, self.events, self.secrets, catalog_for)

    def _vod_api(self, api: type[Api]) -> Api:
        """VOD's API 3.0 for the stage's application, with its current key pair."""
        return api(*self._vod_keys(), self.settings.vod_api_endpoint, self._vod_sub_app_id)

    def _vod_keys(self) -> tuple[str, str]:
        """The stage's VOD key pair as the secrets provider has it now (re-read every SECRETS_CACHE_SECONDS)."""
        secrets = self.secrets.get()
        return secrets.vod_secret_id, secrets.vod_secret_key

    @property
    def _vod_sub_app_id(self) -> int | None:
        return self.settings.upload_policy.default.vod_sub_app_id

    @cached_property
    def videos(self) -> VideoService:
        from chalicelib.videos import VideoService

        return VideoService(self.storage.videos)


def build_services(settings: Settings, environ: Mapping[str, str] | None = None) -> Services:
    return Services(settings, environ)


@lru_cache(maxsize=1)
def services() -> Services:
    from chalicelib.settings import Settings

    return build_services(Settings.from_env(os.environ))


def reset() -> None:
    """Forget the cached configuration (tests change the environment between cases)."""
    services.cache_clear()
    aws.reset()
