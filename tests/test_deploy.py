"""The deploy script (`make deploy` / `make destroy`) run for real against the rehearsal's emulators: moto
(extended by deploy/rehearsal_moto.py) for AWS and vodlocal for VOD's API 3.0 (`make rehearse`:
tests/test_rehearse.py)."""

from __future__ import annotations

import importlib.util
import json
import marshal
import os
import shlex
import subprocess
import sys
import threading
import zipfile
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import pytest

from chalicelib.credentials import ServiceSecrets
from deploy import bootstrap, package, preflight, rehearse, stack, unpacked, vod_notify
from deploy import stage as stage_module
from deploy.deploy import aws_factory
from deploy.stage import fed_environment, placeholders

ROOT = Path(__file__).resolve().parent.parent
STAGE = "dev"


@pytest.fixture(scope="module")
def emulated() -> Iterator[dict[str, str]]:
    """`python -m deploy.rehearse --serve`: moto and vodlocal, and the `export` lines that point a deploy at them."""
    process = subprocess.Popen(
        [sys.executable, "-m", "deploy.rehearse", "--serve"], cwd=ROOT, stdout=subprocess.PIPE, text=True
    )
    assert process.stdout is not None
    environ: dict[str, str] = {}
    watchdog = threading.Timer(60, process.kill)  # readline would otherwise wait forever on a hung start
    watchdog.start()
    for line in process.stdout:
        if not line.startswith("export "):
            break
        name, _, value = line.removeprefix("export ").strip().partition("=")
        environ[name] = shlex.split(value)[0]
    watchdog.cancel()
    assert process.poll() is None and "AWS_ENDPOINT_URL" in environ, "the rehearsal emulators did not start"
    yield environ
    process.terminate()
    process.wait(timeout=15)


def run(
    command: str, environ: dict[str, str], tmp_path: Path, *extra: str, stage: str = STAGE
) -> subprocess.CompletedProcess[str]:
    """The deploy script as `make deploy`/`make destroy` run it, with nothing of this machine's AWS setup."""
    home = tmp_path / "home"
    home.mkdir(parents=True, exist_ok=True)
    clean = {"PATH": os.environ["PATH"], "HOME": str(home), "AWS_EC2_METADATA_DISABLED": "true"}
    build = str(tmp_path / "build")
    # `package` is deploy/package.py (`make package`); the rest are the deploy script's commands.
    script = ["deploy.package"] if command == "package" else ["deploy.deploy", command, "--smoke-locally"]
    command_line = [*script, "--stage", stage, "--build-dir", build, *extra]
    return subprocess.run(  # noqa: S603
        [sys.executable, "-m", *command_line],
        cwd=ROOT,
        env={**clean, **environ},
        capture_output=True,
        text=True,
        timeout=600,
    )


def aws(environ: dict[str, str], service: str) -> Any:
    return aws_factory(environ)(service)


def nothing_deployed(environ: dict[str, str]) -> bool:
    return (
        stack.describe(aws(environ, "cloudformation"), stack.stack_name(STAGE)) is None
        and not aws(environ, "s3").list_buckets()["Buckets"]
        and not aws(environ, "lambda").list_functions()["Functions"]
    )


def preflight_lines(result: subprocess.CompletedProcess[str]) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.startswith("preflight: ")]


# -- preflight: one line per problem, and nothing changed ---------------------------------------------------


def test_a_first_deploy_without_vod_keys_stops_before_changing_anything(
    emulated: dict[str, str], tmp_path: Path
) -> None:
    without_keys = {k: v for k, v in emulated.items() if k not in preflight.VOD_KEYS}
    result = run("deploy", without_keys, tmp_path)
    assert result.returncode == 2, result.stdout + result.stderr
    assert preflight_lines(result) == [
        "preflight: VOD keys: stack of stage dev does not exist yet, so no VOD_SECRET_ID/VOD_SECRET_KEY; export both "
        "for this deploy (it stores them in the secret), or put them into the secret (docs/deploy.md)"
    ]
    assert "nothing was changed" in result.stderr and "Traceback" not in result.stderr
    assert nothing_deployed(emulated)


def test_a_stage_whose_roles_no_bootstrap_made_stops_before_changing_anything(
    emulated: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As in an account where nobody ran `make bootstrap`: the config names a role that does not exist."""
    config = json.loads(stage_module.CONFIG.read_text())
    function = config["stages"][STAGE]["lambda_functions"]["reconcile"]
    function["iam_role_arn"] = function["iam_role_arn"].replace("-exec", "-unmade")
    committed = tmp_path / "config.json"
    committed.write_text(json.dumps(config))
    monkeypatch.setattr(stage_module, "CONFIG", committed)
    found = preflight.run(STAGE, emulated, aws_factory(emulated))
    assert found.problems == [
        "bootstrap: role vod-upload-backend-dev-reconcile-unmade of function reconcile does not exist; an "
        "administrator makes the stage's roles first: make bootstrap STAGE=dev REPOSITORY=<owner>/<repo> "
        "(docs/deploy.md, From CI)"
    ]
    assert nothing_deployed(emulated)


def test_keys_vod_refuses_missing_credentials_and_region_are_each_one_line(
    emulated: dict[str, str], tmp_path: Path
) -> None:
    wrong_key = run("deploy", {**emulated, "VOD_SECRET_KEY": "not-the-key"}, tmp_path)
    assert wrong_key.returncode == 2
    [line] = preflight_lines(wrong_key)
    assert line.startswith("preflight: VOD keys: VOD refuses them: VOD DescribeEventConfig: AuthFailure")
    assert "not-the-key" not in wrong_key.stdout + wrong_key.stderr
    wrong_admin = run("deploy", {**emulated, "VOD_ADMIN_SECRET_ID": "AKIDother", "VOD_ADMIN_SECRET_KEY": "x"}, tmp_path)
    [line] = preflight_lines(wrong_admin)
    assert line.startswith("preflight: VOD keys: VOD refuses the VOD_ADMIN key pair: VOD DescribeEventConfig: ")
    wrong_topic = run("deploy", {**emulated, "ALARM_TOPIC_ARN": "my-pager"}, tmp_path)
    assert preflight_lines(wrong_topic) == [
        "preflight: ALARM_TOPIC_ARN: 'my-pager' is not an SNS topic ARN (arn:aws:sns:…)"
    ]

    no_credentials = {k: v for k, v in emulated.items() if not k.startswith("AWS_") or k == "AWS_ENDPOINT_URL"}
    result = run("deploy", {**no_credentials, "AWS_REGION": "us-east-1"}, tmp_path)
    assert preflight_lines(result) == [
        "preflight: AWS credentials: none found (configure a profile, or export AWS_ACCESS_KEY_ID/…)"
    ]
    result = run("deploy", no_credentials, tmp_path)
    assert preflight_lines(result) == [
        "preflight: AWS region: not set (export AWS_REGION, or set a region in your AWS profile)"
    ]
    assert nothing_deployed(emulated)


def test_an_unknown_stage_is_one_line(emulated: dict[str, str], tmp_path: Path) -> None:
    result = subprocess.run(  # noqa: S603
        [sys.executable, "-m", "deploy.deploy", "deploy", "--stage", "staging", "--build-dir", str(tmp_path)],
        cwd=ROOT,
        env={"PATH": os.environ["PATH"], "HOME": str(tmp_path), **emulated},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert preflight_lines(result) == [
        "preflight: stage: stage 'staging' is not in .chalice/config.json (stages: dev, local, prod)"
    ]


def test_a_committed_value_that_is_not_a_string_is_one_line_before_any_aws_call(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # `"SELF_SIGNUP": true` (JSON's true, not "true") once ended the preflight in a TypeError traceback.
    committed = {"STAGE": "dev", "SELF_SIGNUP": True, "MAX_METADATA_BYTES": 2048}
    monkeypatch.setattr(preflight.stage_module, "stage_config", lambda _: {"environment_variables": committed})

    def no_aws(service: str) -> Any:
        raise AssertionError(f"AWS ({service}) asked with a config that cannot be read")

    found = preflight.run("dev", {}, no_aws)
    assert found.problems == [
        f"config: {name} in .chalice/config.json stage dev must be a string (in quotes), not {value!r}"
        for name, value in [("SELF_SIGNUP", True), ("MAX_METADATA_BYTES", 2048)]
    ]


def test_placeholders_and_an_issuer_without_keys_are_refused(tmp_path: Path) -> None:
    assert placeholders({"OIDC_AUDIENCE": "REPLACE_WITH_APP_CLIENT_ID", "STAGE": "dev"}) == ["OIDC_AUDIENCE"]

    class Jwks(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = {
                "/good/.well-known/openid-configuration": {"jwks_uri": f"http://127.0.0.1:{port}/good/keys"},
                "/good/keys": {"keys": [{"kty": "RSA", "kid": "k", "n": "AQAB", "e": "AQAB"}]},
                "/empty/.well-known/openid-configuration": {"jwks_uri": f"http://127.0.0.1:{port}/empty/keys"},
                "/empty/keys": {"keys": []},
            }.get(self.path)
            self.send_response(200 if body is not None else 404)
            self.end_headers()
            self.wfile.write(json.dumps(body).encode())

        def log_message(self, *_: Any) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Jwks)
    port = server.server_address[1]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        base = f"http://127.0.0.1:{port}"
        for issuer, expected in [
            (f"{base}/good", []),
            (
                f"{base}/empty",
                [f"OIDC issuer {base}/empty: JWKS cannot be fetched from {base}/empty/keys: it holds no keys"],
            ),
            (
                f"{base}/gone",
                [
                    f"OIDC issuer {base}/gone: JWKS cannot be fetched from None: no JWKS URL (set "
                    "OIDC_JWKS_URL, or serve openid-configuration)"
                ],
            ),
        ]:
            found = preflight.Findings(committed_env={"OIDC_ISSUER": issuer, "OIDC_AUDIENCE": "client"})
            preflight.check_issuer(found, issuer, {"SMOKE_TOKEN": "t"})
            assert found.problems == expected
        found = preflight.Findings(committed_env={"OIDC_ISSUER": f"{base}/good"})
        preflight.check_issuer(found, f"{base}/good", {})
        assert found.problems == [
            "config: OIDC_ISSUER is set but OIDC_AUDIENCE is not (the client id your tokens carry)",
            "smoke: the stage uses its own OIDC issuer; export SMOKE_TOKEN, a test user's token",
        ]
        assert found.issuer_jwks_url == f"{base}/good/keys"
    finally:
        server.shutdown()


def test_outputs_an_emulator_left_unresolved_are_refused() -> None:
    stack_description = {
        "StackName": "vod-upload-dev",
        "Outputs": [
            {"OutputKey": "SecretName", "OutputValue": "${Secret}"},
        ],
    }
    with pytest.raises(stack.StackError) as error:
        stack.checked_outputs(stack_description, expect_user_pool=True)
    message = str(error.value)
    assert "output SecretName is not resolved: ${Secret}" in message
    for missing in ("SecretArn", "StateBucket", "OidcIssuer", "UserPoolId", "UserPoolClientId"):
        assert f"output {missing} is missing" in message


def test_the_callback_token_never_reaches_a_printed_summary() -> None:
    config = vod_notify.wanted("https://abc.execute-api.us-east-1.amazonaws.com/api/", "s3cr3t-path-token")
    assert config.notification_url.endswith("/api/vod/events/s3cr3t-path-token")
    assert "s3cr3t" not in vod_notify.summary(config)


# -- the administrator's bootstrap, made before any deploy ---------------------------------------------------


def test_each_stage_is_bootstrapped_with_its_own_deploy_role_and_the_accounts_one_github_provider(
    emulated: dict[str, str],
) -> None:
    """What `make bootstrap` made in the rehearsal's account for dev, then prod (deploy/rehearse.py)."""
    iam, cloudformation = aws(emulated, "iam"), aws(emulated, "cloudformation")

    def stack_of(name: str) -> dict[str, Any]:
        found: dict[str, Any] = cloudformation.describe_stacks(StackName=bootstrap.stack_name(name))["Stacks"][0]
        return found

    def provider_parameter(name: str) -> str:
        [value] = [
            p["ParameterValue"] for p in stack_of(name)["Parameters"] if p["ParameterKey"] == "GitHubOidcProviderArn"
        ]
        return str(value)

    [provider] = iam.list_open_id_connect_providers()["OpenIDConnectProviderList"]
    # The first stage's stack made the provider; the second names it.
    assert (provider_parameter("dev"), provider_parameter("prod")) == ("", provider["Arn"])
    for name in ("dev", "prod"):
        outputs = {o["OutputKey"]: o["OutputValue"] for o in stack_of(name)["Outputs"]}
        role = iam.get_role(RoleName=outputs["RoleArn"].split("/")[-1])["Role"]
        [statement] = role["AssumeRolePolicyDocument"]["Statement"]
        assert statement["Principal"] == {"Federated": provider["Arn"]}
        assert statement["Condition"]["StringEquals"] == {
            "token.actions.githubusercontent.com:aud": "sts.amazonaws.com",
            "token.actions.githubusercontent.com:sub": f"repo:{rehearse.REPOSITORY}:environment:{name}",
        }
    # Run again, the stack that made the provider keeps it (naming it would make CloudFormation delete it).
    bootstrap.apply(cloudformation, iam, "dev", rehearse.REPOSITORY)
    assert provider_parameter("dev") == ""
    assert iam.list_open_id_connect_providers()["OpenIDConnectProviderList"] == [provider]


# -- deploy, redeploy from a fresh checkout, destroy ---------------------------------------------------------


def test_deploy_redeploy_and_destroy(emulated: dict[str, str], tmp_path: Path) -> None:
    report = tmp_path / "smoke.json"
    # As CI does before it assumes the deploy role: the Lambda package, with no AWS credentials or endpoint.
    packaged = run("package", {"AWS_REGION": "us-east-1"}, tmp_path / "first")
    assert packaged.returncode == 0, packaged.stdout + packaged.stderr
    first = run("deploy", emulated, tmp_path / "first", "--report", str(report))
    assert first.returncode == 0, first.stdout + first.stderr
    assert "Reusing existing deployment package." in first.stdout  # chalice's pip ran in `package` alone
    assert "deploy: changed: stack vod-upload-dev: created" in first.stdout
    assert "deploy: changed: stack vod-upload-dev-events: created (bus vod-upload-dev)" in first.stdout
    assert "deploy: changed: secret vod-upload/dev: VOD key pair stored" in first.stdout
    assert "smoke: 5 passed, 0 failed" in first.stdout
    document = json.loads(report.read_text())
    api_url = document["apiUrl"]
    assert api_url.startswith("https://") and api_url.endswith(".execute-api.us-east-1.amazonaws.com/api/")
    assert [check["passed"] for check in document["checks"]] == [True] * 5

    outputs = {
        o["OutputKey"]: o["OutputValue"]
        for o in aws(emulated, "cloudformation").describe_stacks(StackName="vod-upload-dev")["Stacks"][0]["Outputs"]
    }
    # The functions (the API, the PULL consumer, the sweep) run with the stage's environment completed from
    # the stack, nothing hand-edited.
    functions = {f["FunctionName"]: f for f in aws(emulated, "lambda").list_functions()["Functions"]}
    scheduled = {"vod-upload-backend-dev-pull_vod_events": 60, "vod-upload-backend-dev-reconcile": 120}
    assert set(functions) == {"vod-upload-backend-dev", *scheduled}
    # They run with the roles the stage's bootstrap stack made before any deploy (an administrator's step): the
    # deploy made no role.
    bootstrap_stack = aws(emulated, "cloudformation").describe_stacks(StackName=bootstrap.stack_name(STAGE))["Stacks"][
        0
    ]
    made = {o["OutputKey"]: o["OutputValue"] for o in bootstrap_stack["Outputs"]}
    assert {name: function["Role"] for name, function in functions.items()} == {
        "vod-upload-backend-dev": made["ApiHandlerRoleArn"],
        "vod-upload-backend-dev-pull_vod_events": made["PullVodEventsRoleArn"],
        "vod-upload-backend-dev-reconcile": made["ReconcileRoleArn"],
    }
    roles = {role["Arn"] for role in aws(emulated, "iam").list_roles()["Roles"]}
    assert {made[key] for key in ("ApiHandlerRoleArn", "PullVodEventsRoleArn", "ReconcileRoleArn")} <= roles
    app_roles = [arn for arn in roles if ":role/vod-upload-backend-" in arn]
    assert app_roles and all(arn.endswith("-exec") for arn in app_roles), app_roles  # none of chalice's
    env = functions["vod-upload-backend-dev"]["Environment"]["Variables"]
    for name, timeout in scheduled.items():
        assert functions[name]["Timeout"] == timeout
        assert functions[name]["Environment"]["Variables"] == env
    assert env["OIDC_ISSUER"] == f"https://cognito-idp.us-east-1.amazonaws.com/{outputs['UserPoolId']}"
    assert env["OIDC_AUDIENCE"] == outputs["UserPoolClientId"]
    assert env["TABLE_NAME"] == "vod-upload-dev" and env["SECRET_NAME"] == outputs["SecretName"]
    committed = json.loads((ROOT / ".chalice" / "config.json").read_text())["stages"][STAGE]["environment_variables"]
    assert env == fed_environment(committed, {**outputs, "TableName": "vod-upload-dev"}, env["OIDC_JWKS_URL"])
    assert not any(k in env for k in ("VOD_SECRET_KEY", "CONTEXT_TAG_KEY", "VOD_CALLBACK_TOKEN", "STAGE_KEY"))
    # Only an administrator creates users in the stage's pool unless its config sets SELF_SIGNUP=true.
    pool = aws(emulated, "cognito-idp").describe_user_pool(UserPoolId=outputs["UserPoolId"])["UserPool"]
    assert pool["AdminCreateUserConfig"]["AllowAdminCreateUserOnly"] is True
    # Chalice's state lives in the stack's bucket, so a fresh checkout finds it.
    state = aws(emulated, "s3").get_object(Bucket=outputs["StateBucket"], Key="chalice/deployed/dev.json")
    assert api_url in state["Body"].read().decode()

    # VOD calls the stage's callback with the path token the app derives from the secret.
    secret = json.loads(aws(emulated, "secretsmanager").get_secret_value(SecretId="vod-upload/dev")["SecretString"])
    vod = vod_notify.client(secret["VOD_SECRET_ID"], secret["VOD_SECRET_KEY"], emulated)

    service = ServiceSecrets.from_mapping(secret, "test")
    assert vod_notify.describe(vod) == vod_notify.wanted(api_url, service.callback_token)

    # VOD keeps one event config per (sub)application: another stage may not silently take it over.
    prod = run("deploy", emulated, tmp_path / "prod", stage="prod")
    assert prod.returncode == 2, prod.stdout + prod.stderr
    host = api_url.split("/")[2]
    assert preflight_lines(prod) == [
        f"preflight: VOD events: this VOD application already sends its events to https://{host}; give stage prod "
        "its own subapplication (vodSubAppId in UPLOAD_POLICY) or export VOD_EVENTS_TAKE_OVER=1"
    ]
    assert stack.describe(aws(emulated, "cloudformation"), "vod-upload-prod") is None

    # The stage's alarms (parked events, consumer errors and failures) change state only, until a topic is given.
    alarms = {a["AlarmName"]: a for a in aws(emulated, "cloudwatch").describe_alarms()["MetricAlarms"]}
    names = {f"vod-upload-dev-{what}" for what in ("parked-events", "consumer-errors", "consumer-failures")}
    assert set(alarms) == names and all(not alarm["AlarmActions"] for alarm in alarms.values())

    topic = aws(emulated, "sns").create_topic(Name="vod-upload-pager")["TopicArn"]
    without_keys = {k: v for k, v in emulated.items() if k not in preflight.VOD_KEYS}
    second = run("deploy", {**without_keys, "ALARM_TOPIC_ARN": topic}, tmp_path / "second")
    assert second.returncode == 0, second.stdout + second.stderr
    assert "VOD key pair stored" not in second.stdout and "VOD event config: unchanged" in second.stdout
    assert "deploy: changed: stack vod-upload-dev: updated" in second.stdout
    alarms = {a["AlarmName"]: a for a in aws(emulated, "cloudwatch").describe_alarms()["MetricAlarms"]}
    assert set(alarms) == names and all(alarm["AlarmActions"] == [topic] for alarm in alarms.values())
    third = run("deploy", {**without_keys, "ALARM_TOPIC_ARN": topic}, tmp_path / "second")
    assert "deploy: changed: stack vod-upload-dev: unchanged" in third.stdout
    assert f"deploy: API URL {api_url}" in third.stdout
    assert len(aws(emulated, "apigateway").get_rest_apis()["items"]) == 1

    marker = {"pk": {"S": "REHEARSAL#kept"}, "sk": {"S": "REHEARSAL"}}
    aws(emulated, "dynamodb").put_item(TableName="vod-upload-dev", Item=marker)
    gone = run("destroy", emulated, tmp_path / "third")
    assert gone.returncode == 0, gone.stdout + gone.stderr
    assert (
        "deploy: table vod-upload-dev: KEPT with its data (in stack vod-upload-dev-data); the next deploy of stage "
        "dev uses it. `make destroy STAGE=dev DELETE_DATA=1` deletes it"
    ) in gone.stdout
    assert stack.describe(aws(emulated, "cloudformation"), "vod-upload-dev") is None
    assert stack.describe(aws(emulated, "cloudformation"), "vod-upload-dev-data") is not None
    # The events stack went with the stage (bus, pipe, dead-letter queue); the table's stream stayed with it.
    assert "deploy: stack vod-upload-dev-events: deleted (bus, outbox pipe, dead-letter queue)" in gone.stdout
    assert rehearse.event_delivery(lambda service: aws(emulated, service), STAGE) == rehearse.EventDelivery(
        None,
        None,
        None,
        None,
        aws(emulated, "dynamodb").describe_table(TableName="vod-upload-dev")["Table"]["LatestStreamArn"],
    )
    assert aws(emulated, "dynamodb").describe_table(TableName="vod-upload-dev")["Table"]["TableStatus"] == "ACTIVE"
    assert not aws(emulated, "lambda").list_functions()["Functions"]
    assert aws(emulated, "iam").get_role(RoleName=made["ApiHandlerRoleArn"].split("/")[-1])  # the bootstrap's: kept
    assert not aws(emulated, "cloudwatch").describe_alarms()["MetricAlarms"]
    assert not aws(emulated, "apigateway").get_rest_apis()["items"]
    assert vod_notify.describe(vod).upload_media_complete == "OFF"

    # Deployed again, the stage finds its data; DELETE_DATA=1 then removes it with the rest.
    again = run("deploy", emulated, tmp_path / "again")
    assert again.returncode == 0, again.stdout + again.stderr
    assert "deploy: changed: stack vod-upload-dev-data: unchanged" in again.stdout
    assert aws(emulated, "dynamodb").get_item(TableName="vod-upload-dev", Key=marker)["Item"] == marker
    wiped = run("destroy", emulated, tmp_path / "wiped", "--delete-data")
    assert wiped.returncode == 0, wiped.stdout + wiped.stderr
    assert "deploy: stack vod-upload-dev-data: deleted" in wiped.stdout
    assert "deploy: table vod-upload-dev: DELETED with its data (DELETE_DATA)" in wiped.stdout
    assert nothing_deployed(emulated) and not aws(emulated, "dynamodb").list_tables()["TableNames"]

    # prod consumes VOD's events in PULL mode (EVENT_MODE=pull), and its deploy sets VOD's mode to match.
    prod = run("deploy", emulated, tmp_path / "prod-deploy", stage="prod")
    assert prod.returncode == 0, prod.stdout + prod.stderr
    assert vod_notify.describe(vod).mode == "PULL"
    assert run("destroy", emulated, tmp_path / "prod-destroy", "--delete-data", stage="prod").returncode == 0


def test_a_table_left_without_its_stack_is_adopted_with_its_data(emulated: dict[str, str]) -> None:
    """A stage stack made before the data stack existed held the table; an older destroy, or a data stack deleted
    by hand, left it without any. The deploy's order (stage stack, then data stack) adopts it either way."""
    cloudformation, dynamodb = aws(emulated, "cloudformation"), aws(emulated, "dynamodb")
    marker = {"pk": {"S": "VIDEO#1"}, "sk": {"S": "VIDEO"}}
    template = json.loads(stack.TEMPLATE.read_text())
    template["Resources"].update(json.loads(stack.DATA_TEMPLATE.read_text())["Resources"])
    del template["Resources"]["Table"]["Properties"]["StreamSpecification"]  # made before the outbox had one
    parameters = [{"ParameterKey": "Stage", "ParameterValue": "legacy"}]
    cloudformation.create_stack(StackName="vod-upload-legacy", TemplateBody=json.dumps(template), Parameters=parameters)
    dynamodb.put_item(TableName="vod-upload-legacy", Item=marker)
    try:
        assert stack.apply(cloudformation, "legacy", "").action == "updated"  # lets go of the table, retained
        assert stack.describe(cloudformation, "vod-upload-legacy-data") is None
        adopted = stack.apply_data(cloudformation, dynamodb, "legacy")
        assert adopted.action == "created around the existing table vod-upload-legacy (imported, data kept)"
        assert adopted.outputs == {"TableName": "vod-upload-legacy"}
        assert dynamodb.get_item(TableName="vod-upload-legacy", Key=marker)["Item"] == marker
        assert stack.apply_data(cloudformation, dynamodb, "legacy").action == "unchanged"
        resources = cloudformation.describe_stack_resources(StackName="vod-upload-legacy-data")["StackResources"]
        assert [(r["LogicalResourceId"], r["PhysicalResourceId"]) for r in resources] == [
            ("Table", "vod-upload-legacy")
        ]
        # The import kept the table as it was, without a stream: the events stack's deploy switches it on.
        assert "LatestStreamArn" not in dynamodb.describe_table(TableName="vod-upload-legacy")["Table"]
        stream = stack.table_stream_arn(dynamodb, "vod-upload-legacy")
        described = dynamodb.describe_table(TableName="vod-upload-legacy")["Table"]
        assert described["LatestStreamArn"] == stream
        assert described["StreamSpecification"] == {"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"}
        assert stack.table_stream_arn(dynamodb, "vod-upload-legacy") == stream  # once
    finally:
        stack.delete(cloudformation, "vod-upload-legacy")
        stack.delete(cloudformation, "vod-upload-legacy-data")
        dynamodb.delete_table(TableName="vod-upload-legacy")


def test_a_stage_that_sets_self_signup_gets_an_open_pool(emulated: dict[str, str]) -> None:
    cloudformation = aws(emulated, "cloudformation")
    result = stack.apply(cloudformation, "signup", "", self_signup=True)
    try:
        pool = aws(emulated, "cognito-idp").describe_user_pool(UserPoolId=result.outputs["UserPoolId"])["UserPool"]
        assert pool["AdminCreateUserConfig"]["AllowAdminCreateUserOnly"] is False
    finally:
        stack.delete(cloudformation, stack.stack_name("signup"))


# -- the deploy role allows what the deploy script really calls ----------------------------------------------

# botocore operations whose IAM action has another name.
IAM_ACTION_OF = {
    ("s3", "ListObjectVersions"): ["s3:ListBucketVersions"],
    ("s3", "DeleteObjects"): ["s3:DeleteObject", "s3:DeleteObjectVersion"],
}
NO_PERMISSION_NEEDED = {("sts", "GetCallerIdentity")}


def test_the_deploy_role_lists_every_call_the_deploy_script_makes(emulated: dict[str, str], tmp_path: Path) -> None:
    """Records the deploy script's own AWS calls (`chalice deploy` runs in a child; tests/test_deploy_role.py
    derives its calls from chalice's planner) through a first deploy and a destroy, and checks each against
    the list infra/deploy-role.json is proven to allow."""
    from deploy import deploy, rehearse
    from tests.aws_calls import CallRecorder
    from tests.test_deploy_role import script_needs

    with CallRecorder().installed() as recorder:
        environ = {**emulated, "HOME": str(tmp_path), "AWS_EC2_METADATA_DISABLED": "true"}
        outcome = deploy.deploy(STAGE, environ, None, rehearse.served_locally(environ), tmp_path / "build")
        assert outcome.smoke_passed
        deploy.destroy(STAGE, environ, tmp_path / "build")
    deploy.destroy(STAGE, environ, tmp_path / "build", delete_data=True)  # an operator's step, not CI's
    called = {(call.service, call.operation) for call in recorder.calls} - NO_PERMISSION_NEEDED
    assert ("cloudformation", "CreateStack") in called and ("s3", "DeleteObjects") in called
    granted = {need.action for need in script_needs(STAGE)}
    missing = {
        (service, operation, action)
        for service, operation in called
        for action in IAM_ACTION_OF.get((service, operation), [f"{service}:{operation}"])
        if action not in granted
    }
    assert not missing, f"add these to script_needs in tests/test_deploy_role.py and to the role: {sorted(missing)}"


# -- the package the deploy uploads: bytecode for every module, read without compiling ---------------------------

# The first request of a cold function, run from the unpacked package under `-v`, which names each module's
# origin: "# <pyc> matches <py>" then "# code object from '<pyc>'" when the bytecode was used, "# code object
# from '<py>'" when it compiled the source.
FIRST_REQUEST = (
    unpacked.BOOT
    + "import json, time\n"
    + unpacked.CONTEXT
    + unpacked.FOREIGN_MODULES
    + """
event = json.loads(os.environ["PROBE_EVENT"])
import app
response = app.app(event, LambdaContext(event, time.perf_counter() + 10))
task = os.getcwd() + os.sep
files = [getattr(module, "__file__", None) or "" for module in list(sys.modules.values())]
print("PROBE " + json.dumps({
    "status": response["statusCode"],
    "dont_write_bytecode": sys.flags.dont_write_bytecode,
    "foreign": foreign_modules(),
    "sources": sorted(file for file in files if file.startswith(task) and file.endswith(".py")),
}))
"""
)


def test_make_package_ships_bytecode_that_a_read_only_copy_runs_without_compiling(
    stage_env: dict[str, str], token_for: Any, tmp_path: Path
) -> None:
    built = subprocess.run(  # noqa: S603
        ["make", "--no-print-directory", "package", "STAGE=dev", f"BUILD_DIR={tmp_path / 'build'}"],  # noqa: S607
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert built.returncode == 0, built.stdout + built.stderr
    zip_path = Path(built.stdout.strip().splitlines()[-1])
    with zipfile.ZipFile(zip_path) as archive:
        names = set(archive.namelist())
        headers = {name: archive.read(name)[:8] for name in names if name.endswith(".pyc")}
    modules = {name for name in names if name.endswith(".py")}
    assert len(modules) > 500  # the dependencies are in it, not only the app
    assert {name for name in modules if package_pyc(name) not in names} == set()
    assert set(headers) == {package_pyc(name) for name in modules}  # no stray bytecode, no other Python's
    unchecked_hash = (1).to_bytes(4, "little")  # PEP 552 flags: hash-based, source not checked
    assert {header[:4] for header in headers.values()} == {importlib.util.MAGIC_NUMBER}
    assert {header[4:8] for header in headers.values()} == {unchecked_hash}

    code = unpacked.unpack(zip_path, tmp_path / "task")
    runtime = unpacked.runtime_libraries()
    env = {**unpacked.child_environment(stage_env, code, runtime), "PROBE_EVENT": json.dumps(_uploads(token_for))}
    done = subprocess.run(  # noqa: S603
        unpacked.command(FIRST_REQUEST, "-v"), cwd=code, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-3000:]
    probe = json.loads(next(line for line in done.stdout.splitlines() if line.startswith("PROBE "))[6:])
    assert probe["status"] == 201 and probe["dont_write_bytecode"] and probe["foreign"] == []
    loaded = [line for line in done.stderr.splitlines() if line.startswith(f"# code object from '{code}")]
    assert [line for line in loaded if line.endswith(".py'")] == []  # compiled from source: none
    assert len(loaded) > 100  # read from bytecode
    used = {line.split(" matches ")[1] for line in done.stderr.splitlines() if " matches " in line}
    assert len(probe["sources"]) > 100 and set(probe["sources"]) <= used
    assert unpacked.bytecode_files(code) == {code / package_pyc(name) for name in modules}
    unpacked.writable(tmp_path)


def package_pyc(module: str) -> str:
    return importlib.util.cache_from_source(module)


def test_the_runtime_libraries_are_copied_once_compiled_and_shared_read_only() -> None:
    first = unpacked.runtime_libraries()
    assert first.parent == unpacked.RUNTIME_CACHE
    module = first / "botocore" / "client.py"
    assert module.is_file() and Path(importlib.util.cache_from_source(str(module))).is_file()
    assert not module.stat().st_mode & 0o222 and not (first / "botocore").stat().st_mode & 0o222
    assert unpacked.runtime_libraries() == first
    assert not list(unpacked.RUNTIME_CACHE.glob("*.building-*"))


def test_a_runtime_copy_another_process_finished_first_is_the_one_used(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(unpacked, "RUNTIME_CACHE", tmp_path)

    def copy_while_another_process_finishes(distributions: Any, destination: Path) -> None:
        (destination / "ours").write_text("")
        finished = tmp_path / destination.name.split(".building-")[0]
        finished.mkdir()
        (finished / "theirs").write_text("")

    monkeypatch.setattr(unpacked, "_copy_compiled", copy_while_another_process_finishes)
    used = unpacked.runtime_libraries()
    assert [path.name for path in tmp_path.iterdir()] == [used.name]
    assert [path.name for path in used.iterdir()] == ["theirs"]


def test_a_runtime_copy_that_fails_midway_leaves_nothing_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(unpacked, "RUNTIME_CACHE", tmp_path)

    def copy_that_fails(distributions: Any, destination: Path) -> None:
        (destination / "half").write_text("")
        raise OSError("disk full")

    monkeypatch.setattr(unpacked, "_copy_compiled", copy_that_fails)
    with pytest.raises(OSError, match="disk full"):
        unpacked.runtime_libraries()
    assert list(tmp_path.iterdir()) == []


def test_compiling_a_zip_replaces_its_bytecode_once_and_names_a_module_that_does_not_compile(tmp_path: Path) -> None:
    zip_path = tmp_path / "deployment.zip"
    with zipfile.ZipFile(zip_path, "w") as archive:
        archive.writestr("pkg/__init__.py", "")
        archive.writestr("pkg/mod.py", "value = 6 * 7\n")
        archive.writestr("pkg/__pycache__/mod.cpython-39.pyc", b"another Python's")
        archive.writestr("pkg/data.json", "{}")
    package.compile_zip(zip_path)
    with zipfile.ZipFile(zip_path) as archive:
        assert (
            archive.namelist()
            == [
                "pkg/__init__.py",
                "pkg/__pycache__/__init__.cpython-311.pyc",
                "pkg/__pycache__/mod.cpython-311.pyc",
                "pkg/data.json",
                "pkg/mod.py",
            ]
            == sorted(archive.namelist(), key=lambda name: Path(name).parts)
        )
        pyc = archive.read(package_pyc("pkg/mod.py"))
    assert pyc[:8] == importlib.util.MAGIC_NUMBER + (1).to_bytes(4, "little")  # PEP 552: unchecked hash
    assert pyc[8:16] == importlib.util.source_hash(b"value = 6 * 7\n")
    code = marshal.loads(pyc[16:])  # noqa: S302  # the bytecode this test just compiled
    assert code.co_filename == "/var/task/pkg/mod.py"  # where Lambda unpacks it, not where it was built
    namespace: dict[str, Any] = {}
    exec(code, namespace)  # noqa: S102
    assert namespace["value"] == 42

    # Chalice reuses its cached zip when nothing changed: compiling it again leaves the file as it is.
    before = zip_path.stat()
    package.compile_zip(zip_path)
    assert (zip_path.stat().st_ino, zip_path.stat().st_mtime_ns) == (before.st_ino, before.st_mtime_ns)

    broken = tmp_path / "broken.zip"
    with zipfile.ZipFile(broken, "w") as archive:
        archive.writestr("ok.py", "")
        archive.writestr("lib/bad.py", "def (:\n")
    with pytest.raises(package.PackageError) as refused:
        package.compile_zip(broken)
    assert str(refused.value) == "package: 1 modules do not compile, e.g. ['lib/bad.py']"
    assert zipfile.ZipFile(broken).namelist() == ["ok.py", "lib/bad.py"]  # left as it was


def _uploads(token_for: Any) -> dict[str, Any]:
    from bench.cold_start import create_upload_event

    return create_upload_event(token_for("alice"))


def test_a_package_for_another_python_is_refused_in_one_line() -> None:
    here = f"python{sys.version_info.major}.{sys.version_info.minor}"
    other = "python3.12" if here != "python3.12" else "python3.13"
    with pytest.raises(package.PackageError) as refused:
        package.require_interpreter(other)
    assert str(refused.value) == (
        f"package: the stage's Lambda runtime is {other} but this is {here}; its bytecode would never be read "
        f"there: build with {other}"
    )
