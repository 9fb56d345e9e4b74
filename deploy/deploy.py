"""`make deploy STAGE=dev` / `make destroy STAGE=dev`: one stage, from a fresh clone to a working stack.

    python -m deploy.deploy deploy --stage dev [--report smoke-dev.json]
    python -m deploy.deploy destroy --stage dev [--delete-data]
    python -m deploy.package --stage dev   (`make package`: the Lambda package alone, no AWS needed)

A deploy:
  1. preflights (deploy/preflight.py) and stops, having changed nothing, if anything is wrong;
  2. creates or updates the stage stack (infra/stage.json), then the data stack (infra/data.json: the table,
     kept by `make destroy` unless DELETE_DATA=1, adopted when it exists without its stack), then the events
     stack (infra/events.json: the bus and the pipe from the table's stream to it), and stores the VOD key pair
     in the secret when this deploy was given one;
  3. builds the Chalice project with the stage's environment completed from the stack's outputs and its
     package with bytecode (deploy/package.py), restores Chalice's deployment state from the stack's bucket,
     runs `chalice deploy` (which uploads that package), saves the state back, and checks that every
     function holds the package (CodeSha256);
  4. points VOD's event notification at the stage's callback (ModifyEventConfig) and reads it back;
  5. runs the smoke test (deploy/smoke.py) as a throw-away user of the stage's Cognito pool (or with
     SMOKE_TOKEN when the stage names its own issuer);
and prints the API URL, what it created or changed, and the smoke results. Exit status 0 only if all passed.

AWS comes from the usual environment (credentials, AWS_REGION or AWS_DEFAULT_REGION; AWS_ENDPOINT_URL for
an emulator), VOD's API from VOD_API_ENDPOINT (for an emulator). No secret value is ever printed.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from chalicelib.credentials import ServiceSecrets
from deploy import cognito, package, preflight, smoke, stack, stage, vod_notify

AWS_CLIENT_CONFIG = Config(connect_timeout=10, read_timeout=60, retries={"mode": "standard", "max_attempts": 5})

# Where the smoke test reaches the deployed API: by default its URL. The rehearsal cannot run API Gateway
# or Lambda, so it runs the deployed zip with the function's environment locally instead (deploy/rehearse.py).
SmokeTarget = Callable[[stage.Deployed, Path, str], AbstractContextManager[str]]


class DeployError(RuntimeError):
    pass


# What a deploy step raises when AWS, VOD, chalice or the stack refuses: reported in one line, not a traceback.
FAILURES = (stack.StackError, vod_notify.VodConfigError, RuntimeError, ClientError, BotoCoreError)


@dataclass
class Outcome:
    api_url: str = ""
    rest_api_id: str = ""
    changes: list[str] = field(default_factory=list)
    event_config: str = ""
    smoke_passed: bool = False


def aws_factory(environ: Mapping[str, str]) -> Callable[[str], Any]:
    """Clients for the account, region and endpoint `environ` names (the default chain fills the rest)."""
    session = boto3.session.Session(
        aws_access_key_id=environ.get("AWS_ACCESS_KEY_ID"),
        aws_secret_access_key=environ.get("AWS_SECRET_ACCESS_KEY"),
        aws_session_token=environ.get("AWS_SESSION_TOKEN"),
        region_name=region(environ),
        profile_name=environ.get("AWS_PROFILE"),
    )
    endpoint = environ.get("AWS_ENDPOINT_URL")

    def client(service: str) -> Any:
        return session.client(service, endpoint_url=endpoint, config=AWS_CLIENT_CONFIG)

    return client


def region(environ: Mapping[str, str]) -> str | None:
    named = environ.get("AWS_REGION") or environ.get("AWS_DEFAULT_REGION")
    return named or boto3.session.Session(profile_name=environ.get("AWS_PROFILE")).region_name


def region_problem(environ: Mapping[str, str]) -> str | None:
    if region(environ):
        return None
    return "AWS region: not set (export AWS_REGION, or set a region in your AWS profile)"


@contextlib.contextmanager
def direct(deployed: stage.Deployed, _project: Path, _stage_name: str) -> Iterator[str]:
    yield deployed.api_url


def say(message: str) -> None:
    print(f"deploy: {message}", flush=True)


def deploy(
    stage_name: str,
    environ: Mapping[str, str],
    report: Path | None = None,
    smoke_target: SmokeTarget = direct,
    build_root: Path = stage.BUILD_ROOT,
) -> Outcome:
    problem = region_problem(environ)
    if problem:
        raise DeployError(f"preflight: {problem}")
    aws = aws_factory(environ)
    found = preflight.run(stage_name, environ, aws)
    if found.problems:
        raise DeployError("\n".join(f"preflight: {line}" for line in found.problems) + "\nnothing was changed")
    say(f"preflight passed (account {found.account}, stage {stage_name})")
    assert found.account is not None  # the preflight reports a problem when it cannot tell
    outcome = Outcome()

    issuer = stage.external_issuer(found.committed_env)
    result = stack.apply(
        aws("cloudformation"),
        stage_name,
        issuer,
        environ.get("ALARM_TOPIC_ARN", ""),
        self_signup=stage.self_signup(found.committed_env),
    )
    outcome.changes.append(f"stack {result.name}: {result.action}")
    # After the stage stack: one made before the data stack existed held the table, and its update lets go of it.
    data = stack.apply_data(aws("cloudformation"), aws("dynamodb"), stage_name)
    outcome.changes.append(f"stack {data.name}: {data.action}")
    events = stack.apply_events(aws("cloudformation"), aws("dynamodb"), stage_name)
    outcome.changes.append(f"stack {events.name}: {events.action} (bus {events.outputs.get('BusName', '?')})")
    outputs = {**result.outputs, **data.outputs}
    secrets_manager = aws("secretsmanager")
    secret = preflight.read_secret(secrets_manager, outputs["SecretArn"])
    if found.vod_keys_to_store:
        secret = {**secret, **found.vod_keys}
        secrets_manager.put_secret_value(SecretId=outputs["SecretArn"], SecretString=json.dumps(secret))
        outcome.changes.append(f"secret {outputs['SecretName']}: VOD key pair stored")
    service = ServiceSecrets.from_mapping(secret, f"secret {outputs['SecretName']}")

    jwks_url = found.issuer_jwks_url
    if not issuer:
        jwks_url = stage.cognito_jwks_url(outputs, environ.get("AWS_ENDPOINT_URL"))
        why_not = preflight.fetchable_jwks(jwks_url)
        if why_not:
            raise DeployError(f"user pool {outputs['UserPoolId']}: JWKS cannot be fetched from {jwks_url}: {why_not}")
    env = stage.fed_environment(found.committed_env, outputs, jwks_url)

    built = package.build(stage_name, env, build_root / stage_name, _chalice_environ(environ), found.account)
    say(f"package {built.zip}: {built.runtime}, bytecode for every module, CodeSha256 {built.code_sha256}")
    project = built.project
    s3 = aws("s3")
    restored = stage.restore_state(s3, outputs["StateBucket"], stage_name, project)
    before = stage.deployed(project, stage_name)
    try:
        stage.run_chalice(project, "deploy", stage_name, _chalice_environ(environ))
    finally:
        stage.save_state(s3, outputs["StateBucket"], stage_name, project)
    after = stage.deployed(project, stage_name)
    if after is None:
        raise DeployError("chalice deploy made no REST API (see its output above)")
    outcome.api_url, outcome.rest_api_id = after.api_url, after.rest_api_id
    if before is None:
        outcome.changes.append(f"API {after.rest_api_id}: created" + (" (state restored)" if restored else ""))
    elif before.rest_api_id == after.rest_api_id:
        outcome.changes.append(f"API {after.rest_api_id}: updated")
    else:
        raise DeployError(f"chalice made API {after.rest_api_id} although the state named {before.rest_api_id}")
    _require_uploaded(aws("lambda"), project, stage_name, built)

    vod = vod_notify.client(*found.vod_admin, environ)
    sub_app_id = stage.vod_sub_app_id(env)
    if service.sign_key is None:
        raise DeployError(f"secret {outputs['SecretName']}: no SignKey for VOD (STAGE_KEY or VOD_SIGN_KEY)")
    wanted = vod_notify.wanted(after.api_url, service.callback_token, env.get("EVENT_MODE", "push"))
    previous, current = vod_notify.configure(vod, wanted, service.sign_key, sub_app_id)
    outcome.event_config = vod_notify.summary(current)
    outcome.changes.append(
        "VOD event config: " + ("unchanged" if previous == current else f"set (was {vod_notify.summary(previous)})")
    )

    say(f"API URL {outcome.api_url}")
    for change in outcome.changes:
        say(f"changed: {change}")
    say(f"VOD event config read back: {outcome.event_config}")
    with smoke_target(after, project, stage_name) as base, _smoke_token(environ, outputs, aws) as token:
        results = smoke.run(base, stage_name, token)
        outcome.smoke_passed = smoke.show(
            results,
            base,
            stage_name,
            report,
            apiUrl=outcome.api_url,
            changes=outcome.changes,
            eventConfig=outcome.event_config,
        )
    return outcome


def _require_uploaded(lambda_client: Any, project: Path, stage_name: str, built: package.Package) -> None:
    """Every function of the stage runs the zip built here: `chalice deploy` took it from its cache."""
    for arn in stage.function_arns(project, stage_name):
        uploaded = lambda_client.get_function_configuration(FunctionName=arn)["CodeSha256"]
        if uploaded != built.code_sha256:
            raise DeployError(
                f"function {arn} holds code {uploaded}, not the package built with bytecode ({built.code_sha256}): "
                "chalice deploy did not reuse it"
            )


def _chalice_environ(environ: Mapping[str, str]) -> dict[str, str]:
    """Chalice reads the region from AWS_DEFAULT_REGION only."""
    return {**environ, "AWS_DEFAULT_REGION": str(region(environ))}


@contextlib.contextmanager
def _smoke_token(environ: Mapping[str, str], outputs: Mapping[str, str], aws: Callable[[str], Any]) -> Iterator[str]:
    if environ.get("SMOKE_TOKEN"):
        yield environ["SMOKE_TOKEN"]
        return
    with cognito.smoke_user_token(aws("cognito-idp"), outputs["UserPoolId"], outputs["UserPoolClientId"]) as token:
        yield token


def destroy(
    stage_name: str, environ: Mapping[str, str], build_root: Path = stage.BUILD_ROOT, delete_data: bool = False
) -> list[str]:
    """Remove what deploy made, except the data stack and its table unless `delete_data`. Returns what it did."""
    problem = region_problem(environ)
    if problem:
        raise DeployError(problem)
    aws = aws_factory(environ)
    events = stack.events_stack_name(stage_name)
    # First: its pipe reads the table, which stays, and delivers to the bus, which goes with it.
    done = (
        [f"stack {events}: deleted (bus, outbox pipe, dead-letter queue)"]
        if stack.delete(aws("cloudformation"), events)
        else []
    )
    existing = stack.describe(aws("cloudformation"), stack.stack_name(stage_name))
    if existing is None:
        done.append(f"stack {stack.stack_name(stage_name)} does not exist: nothing of it to remove")
    else:
        done += _destroy_stage(stage_name, environ, aws, build_root, existing)
    return done + _destroy_data(stage_name, aws, delete_data)


def _destroy_stage(
    stage_name: str, environ: Mapping[str, str], aws: Callable[[str], Any], build_root: Path, existing: dict[str, Any]
) -> list[str]:
    outputs = stack.checked_outputs(existing, expect_user_pool=False)
    done: list[str] = []
    s3 = aws("s3")
    committed_env = stage.stage_config(stage_name)["environment_variables"]
    account = aws("sts").get_caller_identity()["Account"]
    project = stage.build_project(stage_name, committed_env, build_root / stage_name, account)
    if stage.restore_state(s3, outputs["StateBucket"], stage_name, project):
        deployed = stage.deployed(project, stage_name)
        if deployed is not None:
            secret = preflight.read_secret(aws("secretsmanager"), outputs["SecretArn"])
            try:
                vod = vod_notify.client(*preflight.vod_admin_pair(environ, secret), environ)
            except KeyError:
                done.append("VOD event notification: left as it is (no VOD key pair in the secret or environment)")
            else:
                if vod_notify.disable(vod, deployed.api_url, stage.vod_sub_app_id(committed_env)):
                    done.append("VOD event notification to this stage: switched off")
        stage.run_chalice(project, "delete", stage_name, _chalice_environ(environ))
        done.append("chalice: API and functions deleted (their roles are the bootstrap stack's: kept)")
    _empty_bucket(s3, outputs["StateBucket"])
    stack.delete(aws("cloudformation"), stack.stack_name(stage_name))
    done.append(f"stack {stack.stack_name(stage_name)}: deleted (secret, state bucket, user pool)")
    return done


def _destroy_data(stage_name: str, aws: Callable[[str], Any], delete_data: bool) -> list[str]:
    """The data stack stays unless asked; its table is retained by its DeletionPolicy even when the stack goes,
    so deleting the data means deleting the table after it."""
    name, table = stack.data_stack_name(stage_name), stack.table_name(stage_name)
    cloudformation, dynamodb = aws("cloudformation"), aws("dynamodb")
    if not delete_data:
        if not stack.table_exists(dynamodb, table):
            return []
        held = f"in stack {name}" if stack.describe(cloudformation, name) else "without a stack; a deploy adopts it"
        return [
            f"table {table}: KEPT with its data ({held}); the next deploy of stage {stage_name} uses it. "
            f"`make destroy STAGE={stage_name} DELETE_DATA=1` deletes it"
        ]
    done = []
    if stack.delete(cloudformation, name):
        done.append(f"stack {name}: deleted")
    if stack.table_exists(dynamodb, table):
        dynamodb.delete_table(TableName=table)
        dynamodb.get_waiter("table_not_exists").wait(TableName=table, WaiterConfig=stack.WAITER)
        done.append(f"table {table}: DELETED with its data (DELETE_DATA)")
    return done


def _empty_bucket(s3: Any, bucket: str) -> None:
    """CloudFormation deletes only an empty bucket; the state bucket is versioned."""
    paginator = s3.get_paginator("list_object_versions")
    for page in paginator.paginate(Bucket=bucket):
        objects = [
            {"Key": v["Key"], "VersionId": v["VersionId"]}
            for v in page.get("Versions", []) + page.get("DeleteMarkers", [])
        ]
        if objects:
            s3.delete_objects(Bucket=bucket, Delete={"Objects": objects, "Quiet": True})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["deploy", "destroy"])
    parser.add_argument("--stage", required=True)
    parser.add_argument("--report", type=Path, help="write the smoke results (and what changed) as JSON here")
    parser.add_argument(
        "--delete-data", action="store_true", help="destroy: also delete the stage's table and its data stack"
    )
    parser.add_argument("--build-dir", type=Path, default=stage.BUILD_ROOT, help="where projects are built [.deploy]")
    parser.add_argument(
        "--smoke-locally",
        action="store_true",
        help="against emulated AWS, which cannot execute the function: smoke-test its zip run on this machine with "
        "the environment Lambda holds (deploy/rehearse.py)",
    )
    args = parser.parse_args(argv)
    try:
        if args.command == "destroy":
            for line in destroy(args.stage, os.environ, args.build_dir, args.delete_data):
                say(line)
            return 0
        smoke_target: SmokeTarget = direct
        if args.smoke_locally:
            from deploy.rehearse import served_locally

            smoke_target = served_locally(os.environ)
        outcome = deploy(args.stage, os.environ, args.report, smoke_target, args.build_dir)
    except DeployError as error:
        print(error, file=sys.stderr, flush=True)
        return 2
    except FAILURES as error:
        print(f"deploy: FAILED: {error}", file=sys.stderr, flush=True)
        return 1
    return 0 if outcome.smoke_passed else 1


if __name__ == "__main__":
    sys.exit(main())
