"""Everything a deploy needs, checked before it changes anything. Each problem is one line that says what
to do; the deploy runs only when there are none.

Checked: the stage and its committed config (every value a string, no placeholder left, SELF_SIGNUP true or
false), AWS credentials and region, the roles the stage's functions run with (made by the stage's bootstrap
stack, `make bootstrap`), the stage's templates (CloudFormation's ValidateTemplate), its stacks not busy,
the VOD key pair (in the stage's secret, or given in the environment for the first deploy) and VOD accepting
it, VOD's events not already going to another API, and, when the stage names its own OIDC issuer, that
issuer's JWKS and a token for the smoke test.
"""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

from deploy import stack as stack_module
from deploy import stage as stage_module
from deploy import vod_notify

VOD_KEYS = ("VOD_SECRET_ID", "VOD_SECRET_KEY")
VOD_ADMIN_KEYS = ("VOD_ADMIN_SECRET_ID", "VOD_ADMIN_SECRET_KEY")
JWKS_TIMEOUT_SECONDS = 10
BUSY = ("_IN_PROGRESS", "_FAILED", "ROLLBACK_COMPLETE")


@dataclass
class Findings:
    """What the preflight learned, for the deploy to use; `problems` empty means go."""

    problems: list[str] = field(default_factory=list)
    committed_env: dict[str, str] = field(default_factory=dict)
    account: str | None = None
    stack: dict[str, Any] | None = None
    vod_keys: dict[str, str] = field(default_factory=dict)
    vod_keys_to_store: bool = False
    vod_admin: tuple[str, str] = ("", "")
    issuer_jwks_url: str | None = None


def vod_keys_from_environment(environ: Mapping[str, str]) -> dict[str, str]:
    return {key: environ[key] for key in VOD_KEYS if environ.get(key)}


def read_secret(secretsmanager: Any, secret_id: str) -> dict[str, Any]:
    document: dict[str, Any] = json.loads(secretsmanager.get_secret_value(SecretId=secret_id)["SecretString"])
    return document


def run(stage: str, environ: Mapping[str, str], aws: Any) -> Findings:
    """`aws(service)` makes a client for the deploy's account and region."""
    found = Findings()
    try:
        found.committed_env = dict(stage_module.stage_config(stage)["environment_variables"])
    except KeyError as error:
        found.problems.append(f"stage: {error.args[0]}")
        return found
    # Chalice hands the function strings only; a JSON true or 2048 would break every check below.
    not_strings = {name: value for name, value in found.committed_env.items() if not isinstance(value, str)}
    for name, value in not_strings.items():
        found.problems.append(
            f"config: {name} in .chalice/config.json stage {stage} must be a string (in quotes), not {repr(value)[:40]}"
        )
    if not_strings:
        return found
    for name in stage_module.placeholders(found.committed_env):
        found.problems.append(
            f"config: {name} in .chalice/config.json stage {stage} is a placeholder; set it or remove it"
        )
    try:
        stage_module.self_signup(found.committed_env)
    except ValueError as error:
        found.problems.append(f"config: {error} (.chalice/config.json stage {stage})")
    topic = environ.get("ALARM_TOPIC_ARN", "")
    if not stack_module.alarm_topic_is_valid(topic):
        found.problems.append(f"ALARM_TOPIC_ARN: {topic!r} is not an SNS topic ARN (arn:aws:sns:…)")
    if not _aws_identity(found, aws):
        return found  # nothing else can be checked without AWS
    _function_roles(found, stage, aws)
    _stack_state(found, stage, aws)
    _vod_keys(found, stage, environ, aws)
    issuer = stage_module.external_issuer(found.committed_env)
    if issuer:
        check_issuer(found, issuer, environ)
    return found


def _aws_identity(found: Findings, aws: Any) -> bool:
    try:
        found.account = aws("sts").get_caller_identity()["Account"]
    except NoCredentialsError:
        found.problems.append("AWS credentials: none found (configure a profile, or export AWS_ACCESS_KEY_ID/…)")
    except (ClientError, BotoCoreError) as error:
        found.problems.append(f"AWS credentials: {_first_line(error)}")
    return found.account is not None


def _function_roles(found: Findings, stage: str, aws: Any) -> None:
    """The roles .chalice/config.json names for the functions, and the outbox pipe's role (infra/events.json),
    exist: without them `chalice deploy` would stop at the first function, after the stage stack was made, and
    the events stack would fail to make its pipe."""
    settings = stage_module.with_account(stage_module.stage_config(stage), str(found.account))
    roles = [
        (function_settings["iam_role_arn"].rsplit("/", 1)[-1], f"function {function}")
        for function, function_settings in sorted(settings.get("lambda_functions", {}).items())
        if "iam_role_arn" in function_settings
    ]
    roles.append((stack_module.outbox_pipe_role_name(stage), "the outbox pipe"))
    iam = aws("iam")
    for role, user in roles:
        try:
            iam.get_role(RoleName=role)
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") != "NoSuchEntity":
                found.problems.append(f"bootstrap: role {role} cannot be read: {_first_line(error)}")
                continue
            found.problems.append(
                f"bootstrap: role {role} of {user} does not exist; an administrator makes the "
                f"stage's roles first: make bootstrap STAGE={stage} REPOSITORY=<owner>/<repo> (docs/deploy.md, From CI)"
            )


def _stack_state(found: Findings, stage: str, aws: Any) -> None:
    cloudformation = aws("cloudformation")
    for template in (stack_module.TEMPLATE, stack_module.DATA_TEMPLATE, stack_module.EVENTS_TEMPLATE):
        try:
            cloudformation.validate_template(TemplateBody=template.read_text())
        except ClientError as error:
            found.problems.append(f"template {template.name}: CloudFormation refuses it: {_first_line(error)}")
    found.stack = _idle_stack(found, cloudformation, stack_module.stack_name(stage))
    _idle_stack(found, cloudformation, stack_module.data_stack_name(stage))
    _idle_stack(found, cloudformation, stack_module.events_stack_name(stage))


def _idle_stack(found: Findings, cloudformation: Any, name: str) -> dict[str, Any] | None:
    """The stack (None: there is none), with a problem noted when it cannot be read or is busy or broken."""
    try:
        stack = stack_module.describe(cloudformation, name)
    except (ClientError, BotoCoreError) as error:
        found.problems.append(f"stack {name}: cannot be read: {_first_line(error)}")
        return None
    status = stack["StackStatus"] if stack else ""
    if status.endswith(BUSY) and status != "UPDATE_ROLLBACK_COMPLETE":
        found.problems.append(f"stack {name}: is {status}; wait for it, or repair it in the CloudFormation console")
    return stack


def _vod_keys(found: Findings, stage: str, environ: Mapping[str, str], aws: Any) -> None:
    secret_name = f"{stack_module.APP_NAME}/{stage}"
    given = vod_keys_from_environment(environ)
    stored: dict[str, Any] = {}
    if found.stack is not None:
        try:
            stored = read_secret(aws("secretsmanager"), secret_name)
        except (ClientError, BotoCoreError, ValueError) as error:
            found.problems.append(f"secret {secret_name}: cannot be read: {_first_line(error)}")
            return
    if len(given) == len(VOD_KEYS):
        found.vod_keys = given
        found.vod_keys_to_store = any(stored.get(key) != given[key] for key in VOD_KEYS)
    elif given:
        found.problems.append("VOD keys: export both VOD_SECRET_ID and VOD_SECRET_KEY, or neither")
        return
    elif all(isinstance(stored.get(key), str) and stored[key] for key in VOD_KEYS):
        found.vod_keys = {key: stored[key] for key in VOD_KEYS}
    else:
        where = (
            f"secret {secret_name} has no"
            if found.stack is not None
            else f"stack of stage {stage} does not exist yet, so no"
        )
        found.problems.append(
            f"VOD keys: {where} VOD_SECRET_ID/VOD_SECRET_KEY; export both for this deploy (it stores them in the "
            "secret), or put them into the secret (docs/deploy.md)"
        )
        return
    admin = {key: environ[key] for key in VOD_ADMIN_KEYS if environ.get(key)}
    if len(admin) == 1:
        found.problems.append("VOD admin keys: export both VOD_ADMIN_SECRET_ID and VOD_ADMIN_SECRET_KEY, or neither")
        return
    found.vod_admin = vod_admin_pair(environ, found.vod_keys)
    sub_app_id = stage_module.vod_sub_app_id(found.committed_env)
    try:
        current = vod_notify.describe(vod_notify.client(*found.vod_admin, environ), sub_app_id)
    except vod_notify.VodConfigError as error:
        which = "the VOD_ADMIN key pair" if admin else "them"
        found.problems.append(f"VOD keys: VOD refuses {which}: {error}")
        return
    _event_target(found, stage, current, environ, aws)


def _event_target(
    found: Findings, stage: str, current: vod_notify.EventConfig, environ: Mapping[str, str], aws: Any
) -> None:
    """VOD keeps one event config per (sub)application: a stage must not silently take over the events another
    stage, or another app, receives (two stages need two subapplications, `vodSubAppId` in UPLOAD_POLICY)."""
    sending = "ON" in (current.upload_media_complete, current.delete_media_complete)
    if not (current.notification_url and sending) or environ.get("VOD_EVENTS_TAKE_OVER") == "1":
        return
    own = None
    if found.stack is not None:
        bucket = {o["OutputKey"]: o["OutputValue"] for o in found.stack.get("Outputs", [])}.get("StateBucket")
        own = stage_module.recorded_api_url(aws("s3"), bucket, stage) if bucket else None
    if own and current.notification_url.startswith(own.rstrip("/") + "/"):
        return
    where = urlsplit(current.notification_url)
    found.problems.append(
        f"VOD events: this VOD application already sends its events to {where.scheme}://{where.netloc}; give "
        f"stage {stage} its own subapplication (vodSubAppId in UPLOAD_POLICY) or export VOD_EVENTS_TAKE_OVER=1"
    )


def vod_admin_pair(environ: Mapping[str, str], stage_keys: Mapping[str, Any]) -> tuple[str, str]:
    """The key pair that sets VOD's event config: VOD_ADMIN_SECRET_ID/KEY when given (so that the key the
    function holds need not be allowed to redirect events), else the stage's own."""
    if all(environ.get(key) for key in VOD_ADMIN_KEYS):
        return environ["VOD_ADMIN_SECRET_ID"], environ["VOD_ADMIN_SECRET_KEY"]
    return str(stage_keys["VOD_SECRET_ID"]), str(stage_keys["VOD_SECRET_KEY"])


def check_issuer(found: Findings, issuer: str, environ: Mapping[str, str]) -> None:
    if not found.committed_env.get("OIDC_AUDIENCE"):
        found.problems.append("config: OIDC_ISSUER is set but OIDC_AUDIENCE is not (the client id your tokens carry)")
    url = found.committed_env.get("OIDC_JWKS_URL") or _discovered_jwks_url(issuer)
    why_not = fetchable_jwks(url) if url else "no JWKS URL (set OIDC_JWKS_URL, or serve openid-configuration)"
    if why_not:
        found.problems.append(f"OIDC issuer {issuer}: JWKS cannot be fetched from {url}: {why_not}")
    else:
        found.issuer_jwks_url = url
    if not environ.get("SMOKE_TOKEN"):
        found.problems.append("smoke: the stage uses its own OIDC issuer; export SMOKE_TOKEN, a test user's token")


def _discovered_jwks_url(issuer: str) -> str | None:
    try:
        url = _fetch_json(f"{issuer.rstrip('/')}/.well-known/openid-configuration").get("jwks_uri")
    except (OSError, ValueError):
        return None
    return url if isinstance(url, str) else None


def _fetch_json(url: str) -> dict[str, Any]:
    if not url.startswith(("https://", "http://")):
        raise ValueError(f"not an http(s) URL: {url}")
    with urllib.request.urlopen(url, timeout=JWKS_TIMEOUT_SECONDS) as response:  # noqa: S310 - scheme checked
        document = json.loads(response.read())
    if not isinstance(document, dict):
        raise ValueError("not a JSON object")
    return document


def fetchable_jwks(url: str) -> str | None:
    """None when the URL serves a JWKS with keys, else why not (for the stack's own pool, after it exists)."""
    try:
        keys = _fetch_json(url).get("keys")
    except (OSError, ValueError) as error:
        return _first_line(error)
    return None if isinstance(keys, list) and keys else "it holds no keys"


def _first_line(error: BaseException) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0]
