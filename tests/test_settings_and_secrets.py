"""Stage settings and the secrets providers (Secrets Manager through moto)."""

from __future__ import annotations

import importlib
import json
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from moto import mock_aws

from chalicelib.credentials import EnvSecrets, SecretsManagerSecrets
from chalicelib.errors import ServiceUnavailable
from chalicelib.settings import Settings, SettingsError
from deploy.stage import cognito_jwks_url, fed_environment, placeholders
from devstack.token import local_stage_env

SECRET = {
    "VOD_SECRET_ID": "AKIDcloud",
    "VOD_SECRET_KEY": "cloud-secret-key-value-123",
    "CONTEXT_TAG_KEY": "cloud-context-key-value-456",
    "VOD_CALLBACK_TOKEN": "cloud-callback-token-789",
}


def test_every_stage_of_the_chalice_config_is_valid() -> None:
    """Committed, a cloud stage lacks only what its stack makes (the deploy fills it in); no placeholder."""
    config = json.loads(open(".chalice/config.json").read())
    for name, stage in config["stages"].items():
        env = stage["environment_variables"]
        assert not placeholders(env), name
        if name != "local":
            with pytest.raises(SettingsError, match="OIDC_ISSUER"):
                Settings.from_env(env)
            env = cloud_stage_env(name)
        settings = Settings.from_env(env)
        assert settings.stage == name
        assert settings.table_name == f"vod-upload-{name}"
        assert (settings.secrets_source == "env") == (name == "local")
    assert config["autogen_policy"] is False


@pytest.mark.parametrize(
    ("overrides", "variable"),
    [
        ({"TABLE_NAME": ""}, "TABLE_NAME"),
        ({"UPLOAD_POLICY": "{not json"}, "UPLOAD_POLICY"),
        ({"UPLOAD_POLICY": json.dumps({"default": {"signatureTtlSeconds": 7776001}})}, "signatureTtlSeconds"),
        ({"UPLOAD_POLICY": json.dumps({"default": {"bogus": 1}})}, "bogus"),
        ({"UPLOAD_POLICY": json.dumps({"tiers": {"gold": {"taskPriority": 11}}})}, "taskPriority"),
        ({"UPLOAD_POLICY": json.dumps({"default": {"defaultProcedure": "X"}})}, "defaultProcedure"),
        ({"UPLOAD_POLICY": json.dumps({"tiers": {"gold": {"vodSubAppId": 1500}}})}, "tiers.gold.vodSubAppId"),
        (
            {"UPLOAD_POLICY": json.dumps({"default": {"vodSubAppId": 1500}, "tiers": {"gold": {"vodSubAppId": None}}})},
            "tiers.gold.vodSubAppId",
        ),
        ({"SECRETS_SOURCE": "secretsmanager"}, "SECRET_NAME"),
        ({"AUTH_MODE": "oidc"}, "OIDC_ISSUER"),
        ({"CORS_ALLOWED_ORIGINS": "https://app.example.com/"}, "CORS_ALLOWED_ORIGINS"),
        ({"CORS_ALLOWED_ORIGINS": "app.example.com"}, "CORS_ALLOWED_ORIGINS"),
        ({"STAGE": "prod", "CORS_ALLOWED_ORIGINS": "https://app.example.com, *"}, "CORS_ALLOWED_ORIGINS"),
    ],
)
def test_bad_stage_configuration_fails_fast_naming_the_setting(overrides: dict[str, str], variable: str) -> None:
    env = {**local_stage_env(), **overrides}
    with pytest.raises(SettingsError, match=variable):
        Settings.from_env(env)


def cloud_stage_env(stage: str) -> dict[str, str]:
    """A cloud stage's committed environment, completed as the deploy completes it from its stack."""
    committed = json.loads(open(".chalice/config.json").read())["stages"][stage]["environment_variables"]
    pool = "us-east-1_Example"
    outputs = {
        "TableName": f"vod-upload-{stage}",
        "SecretName": f"vod-upload/{stage}",
        "OidcIssuer": f"https://cognito-idp.us-east-1.amazonaws.com/{pool}",
        "UserPoolId": pool,
        "UserPoolClientId": "exampleclientid",
    }
    return fed_environment(committed, outputs, cognito_jwks_url(outputs, None))


@pytest.mark.parametrize("stage", ["dev", "prod", "staging"])
@pytest.mark.parametrize(
    ("setting", "overrides"),
    [
        ("AUTH_MODE=local", {"AUTH_MODE": "local"}),
        ("SECRETS_SOURCE=env", {"SECRETS_SOURCE": "env", **SECRET}),
        ("REQUIRE_CALLBACK_SIGN=false", {"REQUIRE_CALLBACK_SIGN": "false"}),
    ],
)
def test_local_shortcuts_refuse_to_start_outside_local(stage: str, setting: str, overrides: dict[str, str]) -> None:
    env = {**cloud_stage_env("dev"), "STAGE": stage}
    assert Settings.from_env(env).stage == stage
    with pytest.raises(SettingsError) as error:
        Settings.from_env({**env, **overrides})
    message = str(error.value)
    assert "\n" not in message
    assert message.endswith(f"{setting} is allowed only on stage local ({UNSAFE_FIX[setting]})")
    local = {**env, **overrides, "STAGE": "local"}
    assert Settings.from_env(local).stage == "local"


UNSAFE_FIX = {
    "AUTH_MODE=local": "use AUTH_MODE=oidc",
    "SECRETS_SOURCE=env": "use SECRETS_SOURCE=secretsmanager",
    "REQUIRE_CALLBACK_SIGN=false": "set a SignKey and leave it true",
}


def test_env_secrets_require_every_key_and_never_show_them() -> None:
    secrets = EnvSecrets({**SECRET, "VOD_SIGN_KEY": "sign-key-value"}).get()
    assert secrets.vod_secret_key == SECRET["VOD_SECRET_KEY"]
    shown = repr(secrets) + repr(secrets.__rich_repr__())
    for value in (*SECRET.values(), "sign-key-value"):
        if value != SECRET["VOD_SECRET_ID"]:
            assert value not in shown
    with pytest.raises(ServiceUnavailable, match="VOD_SECRET_KEY"):
        EnvSecrets({k: v for k, v in SECRET.items() if k != "VOD_SECRET_KEY"})


@pytest.fixture
def secretsmanager() -> Iterator[Any]:
    with mock_aws():
        yield boto3.client("secretsmanager", region_name="us-east-1")


def test_secrets_manager_is_read_once_per_ttl(secretsmanager: Any) -> None:
    secretsmanager.create_secret(Name="vod-upload/dev", SecretString=json.dumps(SECRET))
    calls = []
    now = [1000.0]

    def factory() -> Any:
        calls.append(1)
        return secretsmanager

    provider = SecretsManagerSecrets(factory, "vod-upload/dev", ttl_seconds=300, clock=lambda: now[0])
    assert provider.get().callback_token == SECRET["VOD_CALLBACK_TOKEN"]
    now[0] += 299
    provider.get()
    assert len(calls) == 1
    secretsmanager.put_secret_value(
        SecretId="vod-upload/dev", SecretString=json.dumps({**SECRET, "VOD_SECRET_KEY": "rotated"})
    )
    now[0] += 2
    assert provider.get().vod_secret_key == "rotated"
    assert len(calls) == 2


@pytest.mark.parametrize(
    "content", ["not json", json.dumps(["a"]), json.dumps({"VOD_SECRET_ID": "AKIDx", "VOD_SECRET_KEY": "kkk"})]
)
def test_unusable_secret_is_a_generic_503_with_the_cause_logged(secretsmanager: Any, content: str, capfd: Any) -> None:
    importlib.import_module("chalicelib.observability")  # configures the log, as the app's import does
    secretsmanager.create_secret(Name="vod-upload/dev", SecretString=content)
    provider = SecretsManagerSecrets(lambda: secretsmanager, "vod-upload/dev", ttl_seconds=300)
    with pytest.raises(ServiceUnavailable) as info:
        provider.get()
    assert info.value.message == "service secrets are unavailable"
    logged = capfd.readouterr().out
    assert "vod-upload/dev" in logged and "kkk" not in logged


def test_missing_secret_is_503_and_failures_are_not_retried_at_once(secretsmanager: Any) -> None:
    calls = []
    now = [1000.0]

    def factory() -> Any:
        calls.append(1)
        return secretsmanager

    provider = SecretsManagerSecrets(factory, "vod-upload/none", ttl_seconds=300, clock=lambda: now[0])
    for _ in range(3):
        with pytest.raises(ServiceUnavailable, match="unavailable"):
            provider.get()
    assert len(calls) == 1
    secretsmanager.create_secret(Name="vod-upload/none", SecretString=json.dumps(SECRET))
    now[0] += SecretsManagerSecrets.FAILURE_BACKOFF_SECONDS
    assert provider.get().callback_token == SECRET["VOD_CALLBACK_TOKEN"]
