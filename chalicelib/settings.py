"""One typed settings object, read from the environment that `.chalice/config.json` sets per stage."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from chalicelib.identity import LOCAL_ISSUER
from chalicelib.policy import UploadPolicy

# The only stage that may run with the local stack's shortcuts (Settings._unsafe_outside_local).
LOCAL_STAGE = "local"


class SettingsError(RuntimeError):
    """The stage configuration is unusable; the message names the variable."""


class Settings(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    stage: str = Field(min_length=1)
    table_name: str = Field(min_length=3)
    aws_region: str = "us-east-1"
    dynamodb_endpoint_url: str | None = None

    # Secrets VOD_SECRET_ID, VOD_SECRET_KEY, CONTEXT_TAG_KEY, VOD_CALLBACK_TOKEN and VOD_SIGN_KEY come from
    # the environment with "env" (the local stage only) or from one JSON secret with "secretsmanager".
    secrets_source: Literal["env", "secretsmanager"] = "secretsmanager"
    secret_name: str | None = None
    secrets_cache_seconds: int = Field(default=300, ge=0)

    auth_mode: Literal["local", "oidc"] = "oidc"
    local_jwt_key_file: str = ".local/jwt-key.pem"
    local_jwt_issuer: str = LOCAL_ISSUER
    oidc_issuer: str | None = None
    oidc_audience: str | None = None
    oidc_jwks_url: str | None = None
    jwks_cache_seconds: int = Field(default=3600, ge=0)
    jwt_leeway_seconds: int = Field(default=30, ge=0, le=300)

    upload_policy: UploadPolicy = UploadPolicy()
    max_metadata_bytes: int = Field(default=2048, ge=0)
    max_request_body_bytes: int = Field(default=16 * 1024, ge=256)
    callback_max_body_bytes: int = Field(default=256 * 1024, ge=1024)
    # Without a SignKey the callback rests on the path token alone: allowed only when this is false.
    require_callback_sign: bool = True
    # VOD sets a callback's `T` (its expiry) 10 minutes after sending. A `T` further ahead than this is
    # refused: a leaked (Sign, T) pair is replayable until T, so T must not be years away.
    callback_sign_max_lifetime_seconds: int = Field(default=3600, ge=600)

    # How VOD's events arrive: pushed to the callback, or pulled (PullEvents) by the scheduled consumer,
    # which is the mode that loses nothing (docs/events.md). VOD_API_ENDPOINT: an emulator's address.
    event_mode: Literal["push", "pull"] = "push"
    vod_api_endpoint: str | None = None
    # A pulled event that fails to apply this many times is parked as a dead letter and confirmed.
    pull_max_failures: int = Field(default=5, ge=1, le=100)
    # How long VOD accepts a ConfirmEvents after the pull (30 s); vodlocal can be given a shorter one.
    pull_confirm_window_seconds: float = Field(default=30.0, ge=1, le=300)

    # The hourly sweep deletes uploads nobody owns (kept for review) from VOD only with "delete", once they
    # are this old; "dry-run" (the default) only reports them.
    delete_unattributed: Literal["dry-run", "delete"] = "dry-run"
    delete_unattributed_after_seconds: int = Field(default=7 * 86_400, ge=3600)

    # Every answer that waits on DynamoDB comes within this (VOD waits 5 s for a callback): a call is
    # retried only while another attempt of connect plus read timeout still fits.
    request_deadline_seconds: float = Field(default=3.5, gt=0, le=25)
    dynamodb_connect_timeout_seconds: float = Field(default=0.5, gt=0, le=10)
    dynamodb_read_timeout_seconds: float = Field(default=1.2, gt=0, le=10)

    # Origins whose pages may call the API from a browser (CORS), e.g. "https://upload.example.com". Empty: no
    # page may. "*" (any origin) is refused in prod.
    cors_allowed_origins: tuple[str, ...] = ()

    @field_validator("cors_allowed_origins", mode="before")
    @classmethod
    def _origins_from_list(cls, value: Any) -> Any:
        return tuple(part.strip() for part in value.split(",") if part.strip()) if isinstance(value, str) else value

    @field_validator("cors_allowed_origins")
    @classmethod
    def _origins_are_origins(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for origin in value:
            if origin != "*" and not re.fullmatch(r"https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?", origin):
                raise ValueError(f"{origin!r} is not an origin (scheme://host[:port], no path or trailing slash)")
        return value

    @field_validator("upload_policy", mode="before")
    @classmethod
    def _policy_from_json(cls, value: Any) -> Any:
        return json.loads(value) if isinstance(value, str) else value

    @model_validator(mode="after")
    def _mode_requirements(self) -> Settings:
        problems = self._unsafe_outside_local()
        if self.secrets_source == "secretsmanager" and not self.secret_name:
            problems.append("SECRET_NAME is required when SECRETS_SOURCE=secretsmanager")
        if self.auth_mode == "oidc" and not (self.oidc_issuer and self.oidc_jwks_url and self.oidc_audience):
            problems.append("OIDC_ISSUER, OIDC_AUDIENCE and OIDC_JWKS_URL are required when AUTH_MODE=oidc")
        if self.stage == "prod" and "*" in self.cors_allowed_origins:
            problems.append("CORS_ALLOWED_ORIGINS must name the origins in prod, not '*'")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def _unsafe_outside_local(self) -> list[str]:
        """The shortcuts of the local stack: a token any holder of the local key mints, secrets in the function's
        environment, callbacks trusted on the path token alone. A cloud stage that inherits one must not start."""
        if self.stage == LOCAL_STAGE:
            return []
        unsafe = [
            ("AUTH_MODE=local", self.auth_mode == "local", "use AUTH_MODE=oidc"),
            ("SECRETS_SOURCE=env", self.secrets_source == "env", "use SECRETS_SOURCE=secretsmanager"),
            ("REQUIRE_CALLBACK_SIGN=false", not self.require_callback_sign, "set a SignKey and leave it true"),
        ]
        return [f"{setting} is allowed only on stage local ({fix})" for setting, chosen, fix in unsafe if chosen]

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> Settings:
        values = {name: environ[name.upper()] for name in cls.model_fields if name.upper() in environ}
        try:
            return cls.model_validate(values)
        except ValidationError as exc:
            problems = "; ".join(_describe(error) for error in exc.errors())
            raise SettingsError(f"invalid stage configuration: {problems}") from None


def _describe(error: Any) -> str:
    """`UPLOAD_POLICY.default.signatureTtlSeconds: Input should be ...`: the variable, then the path in it."""
    location = [str(part) for part in error["loc"]]
    if location:
        location[0] = location[0].upper()
    return f"{'.'.join(location) or 'settings'}: {error['msg']}"
