"""One stage's Chalice side: the environment the stack's outputs feed, the project `chalice deploy` runs in,
and Chalice's deployment state kept in the stage's bucket.

`chalice deploy` reads the stage's environment from `.chalice/config.json` and records what it made in
`.chalice/deployed/<stage>.json`. Neither may live only on the machine that deploys: the committed config
holds no account-specific value (no ARN, pool or client id), and a fresh CI checkout must update the API
the last deploy made rather than make a second one. So each deploy builds a project under
`.deploy/<stage>/project` (git-ignored): the app's code, the committed config with the stage's environment
completed from the stack's outputs, and the deployment state restored from the state bucket, which is
saved back after `chalice deploy`, whatever its outcome.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from botocore.exceptions import ClientError

from chalicelib.policy import UploadPolicy
from chalicelib.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / ".chalice" / "config.json"
BUILD_ROOT = ROOT / ".deploy"
APP_FILES = ("app.py", "requirements.txt")
APP_PACKAGES = ("chalicelib",)
PLACEHOLDER_MARKERS = ("REPLACE", "CHANGEME", "TODO", "<", "example.com")
CHALICE_TIMEOUT_SECONDS = 1800
# The functions' roles are the stage's bootstrap stack's (infra/deploy-role.json): the committed config names
# them by ARN with the account left as this, which the deploy fills in with the account it deploys to.
ACCOUNT_PLACEHOLDER = "${AWS::AccountId}"


@dataclass(frozen=True)
class Deployed:
    """What `.chalice/deployed/<stage>.json` says chalice made."""

    rest_api_id: str
    api_url: str  # ends with "/"
    function_arn: str


def stage_config(stage: str) -> dict[str, Any]:
    stages: dict[str, Any] = json.loads(CONFIG.read_text())["stages"]
    if stage not in stages:
        raise KeyError(f"stage {stage!r} is not in .chalice/config.json (stages: {', '.join(sorted(stages))})")
    return dict(stages[stage])


def placeholders(env: Mapping[str, str]) -> list[str]:
    """Variables of a committed stage environment whose value is an unfilled placeholder."""
    return [name for name, value in env.items() if any(marker in value for marker in PLACEHOLDER_MARKERS)]


def external_issuer(env: Mapping[str, str]) -> str:
    """The stage's own OIDC issuer, when its config names one; empty: the stack makes a Cognito pool."""
    return env.get("OIDC_ISSUER", "")


def self_signup(env: Mapping[str, str]) -> bool:
    """Whether anyone may register in the stage's own user pool: only when its config sets SELF_SIGNUP=true
    (docs/security.md says what that opens); ValueError for anything but true/false."""
    value = env.get("SELF_SIGNUP", "false")
    if value not in ("true", "false"):
        raise ValueError(f"SELF_SIGNUP must be true or false, not {value[:20]!r}")
    return value == "true"


def cognito_jwks_url(outputs: Mapping[str, str], aws_endpoint: str | None) -> str:
    """Cognito serves a pool's keys under its issuer; an emulator (AWS_ENDPOINT_URL) under its own address,
    while still issuing tokens whose `iss` is the AWS form."""
    if aws_endpoint:
        return f"{aws_endpoint.rstrip('/')}/{outputs['UserPoolId']}/.well-known/jwks.json"
    return f"{outputs['OidcIssuer']}/.well-known/jwks.json"


# What a stage's stacks output, stood in where no stack is at hand (`make package`, `make cost`): neither the
# zip nor the month depends on these values, but the settings check does.
PLACEHOLDER_OUTPUTS = {
    "TableName": "table",
    "SecretName": "secret",
    "OidcIssuer": "https://cognito-idp.us-east-1.amazonaws.com/pool",
    "UserPoolClientId": "client",
}
PLACEHOLDER_JWKS_URL = "https://cognito-idp.us-east-1.amazonaws.com/pool/.well-known/jwks.json"


def fed_environment(
    committed: Mapping[str, str], outputs: Mapping[str, str], jwks_url: str | None = None
) -> dict[str, str]:
    """The stage's environment: the committed one, with what the stack made filled in.

    With the stack's own pool, the issuer, audience (the app client) and JWKS come from it; an external
    issuer's come from the committed config (`jwks_url`: the discovered one, when the config names none)."""
    env = {**committed, "TABLE_NAME": outputs["TableName"], "SECRET_NAME": outputs["SecretName"]}
    if "UserPoolClientId" in outputs:
        env.update(OIDC_ISSUER=outputs["OidcIssuer"], OIDC_AUDIENCE=outputs["UserPoolClientId"])
    if jwks_url:
        env["OIDC_JWKS_URL"] = jwks_url
    Settings.from_env(env)  # the app would refuse to start otherwise: refuse to deploy it
    return env


def with_account(stage_settings: Mapping[str, Any], account: str) -> dict[str, Any]:
    """The stage's chalice settings with `account` in each function's role ARN."""
    functions = {
        name: {
            key: value.replace(ACCOUNT_PLACEHOLDER, account) if key == "iam_role_arn" else value
            for key, value in settings.items()
        }
        for name, settings in stage_settings.get("lambda_functions", {}).items()
    }
    return {**stage_settings, "lambda_functions": functions}


def build_project(stage: str, env: Mapping[str, str], build_dir: Path, account: str) -> Path:
    """The project `chalice deploy` runs in, for `account`. Chalice's package cache (`.chalice/deployments`)
    survives between builds; the deployment state does not: it comes only from the bucket."""
    project = build_dir / "project"
    chalice_dir = project / ".chalice"
    chalice_dir.mkdir(parents=True, exist_ok=True)
    for name in APP_FILES:
        shutil.copy2(ROOT / name, project / name)
    for package in APP_PACKAGES:
        shutil.rmtree(project / package, ignore_errors=True)
        shutil.copytree(ROOT / package, project / package, ignore=shutil.ignore_patterns("__pycache__"))
    config = json.loads(CONFIG.read_text())
    stage_settings = {**with_account(config["stages"][stage], account), "environment_variables": dict(env)}
    config["stages"] = {stage: stage_settings}
    (chalice_dir / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    shutil.rmtree(chalice_dir / "deployed", ignore_errors=True)
    return project


def state_key(stage: str) -> str:
    return f"chalice/deployed/{stage}.json"


def state_file(project: Path, stage: str) -> Path:
    return project / ".chalice" / "deployed" / f"{stage}.json"


def restore_state(s3: Any, bucket: str, stage: str, project: Path) -> bool:
    """Chalice's record of the stage's last deploy, from the bucket into the project; False: first deploy."""
    try:
        body = s3.get_object(Bucket=bucket, Key=state_key(stage))["Body"].read()
    except ClientError as error:
        if error.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
            return False
        raise
    json.loads(body)  # a corrupt record must stop the deploy, not make chalice start over
    path = state_file(project, stage)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(body)
    return True


def save_state(s3: Any, bucket: str, stage: str, project: Path) -> bool:
    path = state_file(project, stage)
    if not path.exists():
        return False
    s3.put_object(
        Bucket=bucket,
        Key=state_key(stage),
        Body=path.read_bytes(),
        ContentType="application/json",
        ServerSideEncryption="AES256",
    )
    return True


def deployed(project: Path, stage: str) -> Deployed | None:
    path = state_file(project, stage)
    return parse_deployed(path.read_bytes()) if path.exists() else None


def function_arns(project: Path, stage: str) -> list[str]:
    """The ARNs of every function `.chalice/deployed/<stage>.json` says chalice made."""
    resources = json.loads(state_file(project, stage).read_bytes()).get("resources", [])
    return [r["lambda_arn"] for r in resources if r["resource_type"] == "lambda_function"]


def parse_deployed(document: bytes) -> Deployed | None:
    resources = {r["resource_type"]: r for r in json.loads(document).get("resources", [])}
    if "rest_api" not in resources or "lambda_function" not in resources:
        return None
    api = resources["rest_api"]
    return Deployed(api["rest_api_id"], api["rest_api_url"], resources["lambda_function"]["lambda_arn"])


def recorded_api_url(s3: Any, bucket: str, stage: str) -> str | None:
    """The API URL the stage's last deploy recorded in its bucket, if any."""
    try:
        document = s3.get_object(Bucket=bucket, Key=state_key(stage))["Body"].read()
    except ClientError:
        return None
    recorded = parse_deployed(document)
    return recorded.api_url if recorded else None


def vod_sub_app_id(env: Mapping[str, str]) -> int | None:
    """The VOD subapplication the stage's default upload tier uploads into (None: the main application)."""
    return UploadPolicy.model_validate(json.loads(env.get("UPLOAD_POLICY", "{}"))).default.vod_sub_app_id


def run_chalice(project: Path, command: str, stage: str, environ: Mapping[str, str], *arguments: str) -> None:
    """`chalice <command> --stage <stage> [arguments]` in the built project, its output streamed to ours; the
    API it imports carries the stage's gateway responses (deploy/gateway_responses.py)."""
    result = subprocess.run(  # noqa: S603 - chalice from our own virtualenv
        [
            sys.executable,
            "-m",
            "deploy.gateway_responses",
            "--project-dir",
            str(project),
            command,
            "--stage",
            stage,
            *arguments,
        ],
        cwd=ROOT,
        env=dict(environ),
        stdout=sys.stdout,
        stderr=sys.stderr,
        timeout=CHALICE_TIMEOUT_SECONDS,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"chalice {command} --stage {stage} failed (exit {result.returncode}); its output is above")
