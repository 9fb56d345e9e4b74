"""Least privilege, proven: every AWS operation the app really sends is allowed by each stage's IAM policy
on that stage's own resources, every grant of the policy is needed, and removing any needed action from
a policy makes the check fail. The policy is the one the stage's bootstrap stack (infra/deploy-role.json,
made by an administrator) gives its functions' roles, which .chalice/config.json names.

The operations come from one recording run: the whole API (every route, the VOD callback's outcomes)
through the Chalice test client against the local DynamoDB endpoint, with the service secrets read from
Secrets Manager (moto's server, on the same endpoint) through `SecretsManagerSecrets`, as in dev/prod.
botocore requests are recorded as they are sent (tests/aws_calls.py) and mapped to IAM actions.
"""

from __future__ import annotations

import ast
import contextlib
import json
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any
from unittest import mock

import boto3
import botocore.session
import pytest
from botocore import xform_name
from chalice.test import Client

from chalicelib import container, vod_signature
from chalicelib.auth import load_or_create_local_key, mint_local_token
from chalicelib.identity import LOCAL_ISSUER
from deploy.bootstrap import bootstrapped_stages
from devstack.pull import RunContext, scheduled_event
from devstack.table import ensure_table, local_client
from devstack.token import local_stage_env
from tests import vod_payloads as vod
from tests.aws_calls import (
    APP_SOURCES,
    ROOT,
    AwsCall,
    CallRecorder,
    Permission,
    StageResources,
    UnsupportedPolicy,
    denied,
    function_policy,
    is_allowed,
    required_permissions,
    runtime_permissions,
    unused_grants,
    without_action,
)
from tests.conftest import bearer
from tests.test_pull_consumer import as_user, commit_through, upload_through
from vodlocal import Config, Handle, start

CONFIG = json.loads((ROOT / ".chalice" / "config.json").read_text())
STAGES = bootstrapped_stages()

# Handlers that are not API routes (schedules, queue/topic/bucket events, pure Lambdas, websockets,
# authorizers) that the recording run exercises. A new one fails
# `test_every_non_route_handler_is_exercised` until the recording run calls it and it is listed here.
EXERCISED_HANDLERS: frozenset[str] = frozenset({"pull_vod_events", "reconcile"})

SECRET_VALUES = {
    "VOD_SECRET_ID": "AKIDiamrecording0000000000000000000",
    "VOD_SECRET_KEY": "iam-recording-vod-secret-key",
    "CONTEXT_TAG_KEY": "iam-recording-context-tag-key",
    "VOD_CALLBACK_TOKEN": "iam-recording-callback-token",
    "VOD_SIGN_KEY": "IamRecordingSignKey0123",
}
FILE_ID = "5285890784273533101"
ORPHAN_FILE_ID = "5285890784273533103"


def stage_resources(stage: str) -> StageResources:
    env = CONFIG["stages"][stage]["environment_variables"]
    return StageResources(
        stage=stage,
        function_name=f"{CONFIG['app_name']}-{stage}",  # Chalice's name for the API handler function
        table=env["TABLE_NAME"],
        secret=env["SECRET_NAME"],
    )


# -- the recording run --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Recording:
    calls: list[AwsCall]
    routes: set[tuple[str, str]]
    unattributed: list[str]
    used: StageResources  # the table and secret the run was configured with

    def needed(self, target: StageResources) -> list[Permission]:
        """What the recorded calls need on `target`'s resources, plus what the Lambda runtime needs for each
        of the stage's functions."""
        recorded = [p for call in self.calls for p in required_permissions(call, self.used, target)]
        runtime = [p for function in lambda_functions(target) for p in runtime_permissions(function)]
        return sorted(set(recorded + runtime))


def lambda_functions(target: StageResources) -> list[StageResources]:
    """The stage's Lambda functions, each writing its own log group `/aws/lambda/<function>`: chalice names
    the API's `<app>-<stage>` and each other handler's `<app>-<stage>-<handler>`."""
    api = target.function_name
    return [target, *(replace(target, function_name=f"{api}-{handler}") for handler in sorted(EXERCISED_HANDLERS))]


def _exercise(http: Any, key_file: str) -> None:
    """Every route, and every outcome of the VOD callback that writes something differently."""
    token = mint_local_token(load_or_create_local_key(key_file), LOCAL_ISSUER, "alice", None, 600)
    alice = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}

    def expect(response: Any, status: int) -> Any:
        assert response.status_code == status, response.body
        return response.json_body

    def deliver(event: dict[str, Any], outcome: str) -> None:
        body = json.dumps(vod.signed(event, SECRET_VALUES["VOD_SIGN_KEY"])).encode()
        path = f"/vod/events/{SECRET_VALUES['VOD_CALLBACK_TOKEN']}"
        answer = expect(http.post(path, headers={"Content-Type": "application/json"}, body=body), 200)
        assert answer["outcome"] == outcome, answer

    def context_of(issued: dict[str, Any]) -> str:
        context = vod_signature.verify(
            issued["signature"], SECRET_VALUES["VOD_SECRET_KEY"]
        ).params.options.sourceContext
        assert context is not None
        return context

    expect(http.get("/health"), 200)
    expect(http.get("/openapi.json"), 200)
    created = expect(http.post("/uploads", headers=alice, body=b'{"title": "IAM", "metadata": {"k": 1}}'), 201)
    upload_id, context = created["uploadId"], context_of(created)
    expect(http.post(f"/uploads/{upload_id}/signature", headers=alice), 200)
    second = expect(http.post("/signature", headers={**alice, "Accept": "application/json"}), 200)

    deliver(vod.new_file_upload("5285890784273533100", context_of(second)), "attributed")
    deliver(vod.new_file_upload(FILE_ID, context), "attributed")
    deliver(vod.new_file_upload(FILE_ID, context), "duplicate")
    deliver(vod.new_file_upload("5285890784273533102", context), "rejected")
    deliver(vod.new_file_upload(ORPHAN_FILE_ID, "not-a-context"), "orphan")
    deliver(vod.procedure_state_changed(FILE_ID, "task-1", "FINISH", [(10, "SUCCESS")]), "updated")
    deliver(vod.procedure_state_changed(FILE_ID, "task-2", "FINISH", [(20, "SUCCESS")]), "updated")
    deliver(vod.procedure_state_changed(FILE_ID, "task-1", "PROCESSING", [(10, "PROCESSING")]), "stale")
    deliver(vod.file_deleted("5285890784273533104"), "deleted")
    deliver(vod.other_event("PersistenceComplete"), "ignored")
    cancelled = expect(http.post("/uploads", headers=alice, body=b"{}"), 201)
    expect(http.delete(f"/uploads/{cancelled['uploadId']}", headers=alice), 200)
    deliver(vod.new_file_upload("5285890784273533105", context_of(cancelled)), "rejected")

    assert expect(http.get(f"/uploads/{upload_id}", headers=alice), 200)["video"]["fileId"] == FILE_ID
    page = expect(http.get("/videos?limit=1", headers=alice), 200)
    assert [v["fileId"] for v in page["videos"]] == [FILE_ID] and page["nextCursor"]
    expect(http.get(f"/videos?limit=1&cursor={page['nextCursor']}", headers=alice), 200)
    expect(http.get(f"/videos/{FILE_ID}", headers=alice), 200)
    assert expect(http.get("/me", headers=alice), 200)["usage"]["videos"] == 2
    deliver(vod.file_deleted("5285890784273533100"), "deleted")  # an attributed video: its usage given back

    # Every browser route's preflight, as the local stage's page sends it (without a token).
    page = local_stage_env()["CORS_ALLOWED_ORIGINS"].split(",")[0]
    for path, method in (
        ("/health", "GET"),
        ("/openapi.json", "GET"),
        ("/uploads", "POST"),
        (f"/uploads/{upload_id}", "GET"),
        (f"/uploads/{upload_id}", "DELETE"),
        (f"/uploads/{upload_id}/signature", "POST"),
        (f"/uploads/{upload_id}/complete", "POST"),
        ("/signature", "POST"),
        ("/videos", "GET"),
        (f"/videos/{FILE_ID}", "GET"),
        (f"/videos/{FILE_ID}", "DELETE"),
        ("/me", "GET"),
    ):
        asked = {
            "Origin": page,
            "Access-Control-Request-Method": method,
            "Access-Control-Request-Headers": "authorization",
        }
        assert http.request("OPTIONS", path, headers=asked).status_code == 204, (path, method)


@contextlib.contextmanager
def vod_queue(work: Path) -> Iterator[Handle]:
    """vodlocal in PULL mode, knowing the recording's VOD key pair."""
    handle = start(
        Config(
            port=0,
            data_dir=work / "vodlocal",
            secrets={SECRET_VALUES["VOD_SECRET_ID"]: SECRET_VALUES["VOD_SECRET_KEY"]},
            mode="PULL",
            pull_wait=0.3,
        )
    )
    try:
        yield handle
    finally:
        handle.stop()


def _exercise_pull_consumer(chalice_app: Any, http: Any, key_file: str, vod: Handle, env: dict[str, str]) -> None:
    """A client reports an upload done (the route asks VOD, not AWS, about the file); the scheduled PULL
    consumer applies a pulled NewFileUpload, as its own Lambda would, and the reported one's as a duplicate;
    the client deletes the reported video (DeleteMedia to VOD, the deletion and its outbox row)."""
    token = mint_local_token(load_or_create_local_key(key_file), LOCAL_ISSUER, "bob", None, 600)
    reported, file_id = commit_through(vod, as_user(http, token))
    answer = http.post(f"/uploads/{reported}/complete", headers=bearer(token), body=json.dumps({"fileId": file_id}))
    assert answer.json_body["outcome"] == "attributed", answer.body
    upload_id = upload_through(vod, as_user(http, token))
    with mock.patch.dict(os.environ, env):
        # The context of one run: long enough for one pull and its confirm.
        result = chalice_app.handler_map["pull_vod_events"](scheduled_event(), RunContext(11))
    assert (result.get("attributed"), result.get("duplicate")) == (1, 1), result
    status = http.get(f"/uploads/{upload_id}", headers={"Authorization": f"Bearer {token}"})
    assert status.json_body["status"] == "completed"
    assert http.delete(f"/videos/{file_id}", headers=bearer(token)).status_code == 204
    assert vod.app.media.get(file_id) is None


def _exercise_sweep(chalice_app: Any, http: Any, key_file: str, seed: Any, table: str, env: dict[str, str]) -> None:
    """The scheduled sweep expires an intent and deletes an old orphan. `seed` (not recorded) moves them back
    in time in the index, as if hours had passed."""
    token = mint_local_token(load_or_create_local_key(key_file), LOCAL_ISSUER, "carol", None, 600)
    upload_id = http.post("/uploads", headers={"Authorization": f"Bearer {token}"}, body=b"{}").json_body["uploadId"]
    for pk, sk in ((f"UPLOAD#{upload_id}", "UPLOAD"), (f"REVIEW#{ORPHAN_FILE_ID}", "REVIEW")):
        key = {"pk": {"S": pk}, "sk": {"S": sk}}
        seed.update_item(
            TableName=table, Key=key, UpdateExpression="SET gsi1sk = :past", ExpressionAttributeValues={
                ":past": {"S": f"0000000001#{pk}"},
            },
        )  # fmt: skip
    with mock.patch.dict(os.environ, {**env, "DELETE_UNATTRIBUTED": "delete"}):
        container.reset()
        result = chalice_app.handler_map["reconcile"](scheduled_event(), RunContext(30))
    assert (result["expired"], result["deleted"], result["failed"]) == (1, 1, 0), result


@pytest.fixture(scope="module")
def recording(dynamodb_endpoint: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Recording]:
    import app as application

    work = tmp_path_factory.mktemp("iam")
    suffix = uuid.uuid4().hex[:12]
    used = StageResources("recording", "recording", table=f"iam-{suffix}", secret=f"vod-upload/iam-{suffix}")
    # Set-up calls are made with clients created before the recorder is installed: they are not recorded.
    seed = local_client(dynamodb_endpoint)
    ensure_table(seed, used.table)
    boto3.client(
        "secretsmanager",
        endpoint_url=dynamodb_endpoint,  # moto's server answers every service
        region_name="us-east-1",
        aws_access_key_id="local",
        aws_secret_access_key="local",
    ).create_secret(Name=used.secret, SecretString=json.dumps(SECRET_VALUES))

    env = {name: value for name, value in local_stage_env().items() if name not in SECRET_VALUES}
    key_file = str(work / "jwt-key.pem")
    env.update(
        TABLE_NAME=used.table,
        DYNAMODB_ENDPOINT_URL=dynamodb_endpoint,
        LOCAL_JWT_KEY_FILE=key_file,
        SECRETS_SOURCE="secretsmanager",
        SECRET_NAME=used.secret,
        AWS_ENDPOINT_URL_SECRETS_MANAGER=dynamodb_endpoint,  # botocore's per-service endpoint setting
    )
    project = work / "project"
    (project / ".chalice").mkdir(parents=True)
    config = {"version": "2.0", "app_name": "iam", "stages": {"test": {"environment_variables": env}}}
    (project / ".chalice" / "config.json").write_text(json.dumps(config))

    recorder = CallRecorder()
    with recorder.installed(), recorder.watching_routes(application.app), vod_queue(work) as vod:
        env.update(EVENT_MODE="pull", VOD_API_ENDPOINT=vod.url)
        (project / ".chalice" / "config.json").write_text(json.dumps(config))
        container.reset()  # the app's clients are created (and hooked) on first use, inside
        try:
            http = Client(application.app, stage_name="test", project_dir=str(project)).http
            _exercise(http, key_file)
            _exercise_pull_consumer(application.app, http, key_file, vod, env)
            _exercise_sweep(application.app, http, key_file, seed, used.table, env)
        finally:
            container.reset()
    yield Recording(list(recorder.calls), set(recorder.routes), list(recorder.unattributed), used)


# -- the recording covers the code -----------------------------------------------------------------------


def test_every_route_is_exercised_by_the_recording(recording: Recording) -> None:
    import app as application

    routes = {(method, path) for path, methods in application.app.routes.items() for method in methods}
    assert routes, "no routes found"
    missing = sorted(routes - recording.routes)
    assert not missing, f"routes not exercised by _exercise(), so their AWS calls are unchecked: {missing}"


def test_every_non_route_handler_is_exercised() -> None:
    """Scheduled functions and other event handlers would call AWS outside any route."""
    import app as application

    chalice_app = application.app
    handlers = {
        *(source.name for source in chalice_app.event_sources),
        *(function.name for function in chalice_app.pure_lambda_functions),
        *(f"websocket:{route}" for route in chalice_app.websocket_handlers),
        *(auth.name for auth in chalice_app.builtin_auth_handlers),
    }
    missing = sorted(handlers - EXERCISED_HANDLERS)
    assert not missing, (
        f"handlers outside the recording run (exercise them, then list in EXERCISED_HANDLERS): {missing}"
    )


def _app_files() -> Iterator[Path]:
    for source in APP_SOURCES:
        yield from [source] if source.is_file() else sorted(source.rglob("*.py"))


def _operations_named_in_code() -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    """Statically: the AWS operations the app's source names (as client methods, or as the operation
    string given to `Table.call`), and the kinds of transaction items it builds. Each with where."""
    trees = {path: ast.parse(path.read_text(), str(path)) for path in _app_files()}
    services = {
        node.args[0].value
        for tree in trees.values()
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and getattr(node.func, "attr", getattr(node.func, "id", "")) in ("client", "create_client")
        and node.args
        and isinstance(node.args[0], ast.Constant)
        and isinstance(node.args[0].value, str)
    }
    assert {"dynamodb", "secretsmanager"} <= services, services
    session = botocore.session.get_session()
    names = {xform_name(op): op for service in services for op in session.get_service_model(service).operation_names}
    operations: dict[str, list[str]] = {}
    kinds: dict[str, list[str]] = {}
    for path, tree in trees.items():
        where = path.relative_to(ROOT)
        for node in ast.walk(tree):
            if isinstance(node, ast.Call):
                method = getattr(node.func, "attr", None)
                if method in names:
                    operations.setdefault(names[method], []).append(f"{where}:{node.lineno}")
                first = node.args[0] if node.args else None
                if method == "call" and isinstance(first, ast.Constant) and first.value in names:
                    operations.setdefault(names[first.value], []).append(f"{where}:{node.lineno}")
            if isinstance(node, ast.Dict):
                for key, value in zip(node.keys, node.values, strict=True):
                    if (
                        isinstance(key, ast.Constant)
                        and key.value in ("Put", "Update", "Delete", "ConditionCheck")
                        and isinstance(value, ast.Dict)
                        and any(isinstance(k, ast.Constant) and k.value == "TableName" for k in value.keys)
                    ):
                        kinds.setdefault(key.value, []).append(f"{where}:{node.lineno}")
    return operations, kinds


def test_every_operation_the_code_names_was_recorded(recording: Recording) -> None:
    """Branches the run cannot reach cheaply (e.g. the compensating writes after a storage stall) still
    send only operations, and transaction item kinds, that the run recorded and the policy check covers."""
    operations, kinds = _operations_named_in_code()
    assert "TransactWriteItems" in operations and "GetSecretValue" in operations, operations
    recorded = {call.operation for call in recording.calls}
    recorded_kinds = {
        kind
        for call in recording.calls
        if call.operation == "TransactWriteItems"
        for item in call.params["TransactItems"]
        for kind in item
    }
    missing = {op: where for op, where in operations.items() if op not in recorded}
    assert not missing, f"operations in the code that the recording run never sent: {missing}"
    missing_kinds = {kind: where for kind, where in kinds.items() if kind not in recorded_kinds}
    assert not missing_kinds, f"transaction items in the code that the recording run never sent: {missing_kinds}"


def test_recorded_calls_are_the_apps_and_each_is_mapped(recording: Recording) -> None:
    assert not recording.unattributed, recording.unattributed
    assert recording.calls
    for call in recording.calls:
        assert call.origin is not None, f"{call.operation} was not sent by app.py/chalicelib code"
        required_permissions(call, recording.used, recording.used)  # raises for an unmapped operation
    operations = {(call.service, call.operation) for call in recording.calls}
    assert ("secretsmanager", "GetSecretValue") in operations
    assert ("dynamodb", "TransactWriteItems") in operations
    assert any(call.operation == "Query" and call.params.get("IndexName") for call in recording.calls)


# -- the policies ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("stage", STAGES)
def test_stage_policy_allows_every_operation_the_code_sends(recording: Recording, stage: str) -> None:
    target = stage_resources(stage)
    missing = denied(function_policy(stage), recording.needed(target))
    assert not missing, f"{stage}: the code needs permissions the policy does not grant: {missing}"


@pytest.mark.parametrize("stage", STAGES)
def test_removing_any_needed_action_from_the_stage_policy_fails_the_check(recording: Recording, stage: str) -> None:
    """The check above is not vacuous: with any one needed action taken out of the policy it finds a
    denied permission, for every resource that action was needed on."""
    policy, needed = function_policy(stage), recording.needed(stage_resources(stage))
    already_denied = set(denied(policy, needed))  # reported by the test above
    actions = sorted({p.action for p in needed})
    assert {"dynamodb:PutItem", "dynamodb:UpdateItem", "secretsmanager:GetSecretValue"} <= set(actions)
    for action in actions:
        newly_denied = sorted(set(denied(without_action(policy, action), needed)) - already_denied)
        expected = sorted(set(p for p in needed if p.action == action) - already_denied)
        assert newly_denied == expected, (
            f"{stage}: removing {action} must deny {expected}, denies {newly_denied}"
            " (an action also granted through a wildcard is not removable)"
        )


@pytest.mark.parametrize("stage", STAGES)
def test_stage_policy_grants_nothing_the_code_does_not_need(recording: Recording, stage: str) -> None:
    unused = unused_grants(function_policy(stage), recording.needed(stage_resources(stage)))
    assert not unused, f"{stage}: grants no recorded call (nor the Lambda runtime) needs: {unused}"


@pytest.mark.parametrize("stage", STAGES)
def test_stage_policy_reaches_no_other_stages_resources(recording: Recording, stage: str) -> None:
    policy = function_policy(stage)
    for other in STAGES:
        if other != stage:
            allowed = [p for p in recording.needed(stage_resources(other)) if is_allowed(policy, p)]
            assert not allowed, f"{stage}'s policy reaches {other}'s resources: {allowed}"


@pytest.mark.parametrize("stage", STAGES)
def test_each_function_needs_its_own_log_group(recording: Recording, stage: str) -> None:
    """A policy narrowed to the API function's log group would cut the scheduled functions' logs."""
    target = stage_resources(stage)
    needed = recording.needed(target)
    app_name = CONFIG["app_name"]
    groups = {f"arn:aws:logs:{target.region}:{target.account}:log-group:/aws/lambda/{app_name}-{stage}{suffix}"
              for suffix in ("", "-pull_vod_events", "-reconcile")}  # fmt: skip
    assert {p.resource.split(":log-stream:")[0] for p in needed if p.action.startswith("logs:")} == groups
    api_group = target.log_group_arn()
    policy = function_policy(stage)

    def narrowed(statement: dict[str, Any]) -> dict[str, Any]:
        actions = [statement["Action"]] if isinstance(statement["Action"], str) else statement["Action"]
        logs_only = all(action.lower().startswith("logs:") for action in actions)
        return {**statement, "Resource": [api_group, f"{api_group}:*"]} if logs_only else statement

    narrowed_policy = {**policy, "Statement": [narrowed(statement) for statement in policy["Statement"]]}
    cut = {p.resource.split(":log-stream:")[0] for p in denied(narrowed_policy, needed)}
    assert cut == groups - {api_group}, cut


def test_cloud_stages_name_their_secret_by_the_convention_local_is_checked_with() -> None:
    for stage in STAGES:
        env = CONFIG["stages"][stage]["environment_variables"]
        if env.get("SECRETS_SOURCE") == "secretsmanager":
            assert env["SECRET_NAME"] == f"vod-upload/{stage}"


# -- the evaluator itself --------------------------------------------------------------------------------

TABLE = "arn:aws:dynamodb:us-east-1:123456789012:table/t"
SECRET_PATTERN = "arn:aws:secretsmanager:*:*:secret:s-??????"


def _policy(*statements: dict[str, Any]) -> dict[str, Any]:
    return {"Version": "2012-10-17", "Statement": list(statements)}


def test_evaluator_matches_actions_and_resources_as_iam_does() -> None:
    policy = _policy(
        {"Effect": "Allow", "Action": ["DynamoDB:get*"], "Resource": "arn:aws:dynamodb:*:*:table/t"},
        {"Effect": "Allow", "Action": "dynamodb:Query", "Resource": ["arn:aws:dynamodb:*:*:table/t/index/*"]},
        {"Effect": "Allow", "Action": "secretsmanager:GetSecretValue", "Resource": SECRET_PATTERN},
    )
    assert is_allowed(policy, Permission("dynamodb:GetItem", TABLE))  # actions ignore case; `*` wildcard
    assert not is_allowed(policy, Permission("dynamodb:PutItem", TABLE))
    assert not is_allowed(policy, Permission("dynamodb:GetItem", TABLE + "2"))
    assert not is_allowed(policy, Permission("dynamodb:GetItem", TABLE + "/index/gsi1"))
    assert not is_allowed(policy, Permission("dynamodb:GetItem", "arn:aws:dynamodb:us-east-1:123456789012:table/T"))
    assert is_allowed(policy, Permission("dynamodb:Query", TABLE + "/index/gsi1"))
    assert not is_allowed(policy, Permission("dynamodb:Query", TABLE))
    assert is_allowed(policy, Permission("secretsmanager:GetSecretValue", "arn:aws:secretsmanager:r:1:secret:s-Ab12Cd"))
    assert not is_allowed(policy, Permission("secretsmanager:GetSecretValue", "arn:aws:secretsmanager:r:1:secret:s-x"))
    # A wildcard in the region or account segment does not reach across a ':'.
    spans = _policy({"Effect": "Allow", "Action": "dynamodb:GetItem", "Resource": "arn:aws:dynamodb:*:table/t"})
    assert not is_allowed(spans, Permission("dynamodb:GetItem", TABLE))
    # Characters that are special to fnmatch are literal in IAM.
    literal = _policy({"Effect": "Allow", "Action": "logs:PutLogEvents", "Resource": "arn:aws:logs:*:*:log-group:[ab]"})
    assert is_allowed(literal, Permission("logs:PutLogEvents", "arn:aws:logs:r:1:log-group:[ab]"))
    assert not is_allowed(literal, Permission("logs:PutLogEvents", "arn:aws:logs:r:1:log-group:a"))


@pytest.mark.parametrize(
    "statement",
    [
        {"Effect": "Deny", "Action": "dynamodb:GetItem", "Resource": "*"},
        {"Effect": "Allow", "NotAction": "dynamodb:GetItem", "Resource": "*"},
        {"Effect": "Allow", "Action": "dynamodb:GetItem", "NotResource": "*"},
        {"Effect": "Allow", "Action": "dynamodb:GetItem", "Resource": "*", "Condition": {"Bool": {"x": "true"}}},
        {"Effect": "Allow", "Action": "dynamodb:GetItem", "Resource": "arn:aws:dynamodb:*:*:table/${aws:username}"},
    ],
)
def test_evaluator_refuses_what_it_does_not_model(statement: dict[str, Any]) -> None:
    with pytest.raises(UnsupportedPolicy):
        is_allowed(_policy(statement), Permission("dynamodb:GetItem", TABLE))


def test_removing_an_action_leaves_wildcard_grants_and_drops_empty_statements() -> None:
    policy = _policy(
        {"Sid": "A", "Effect": "Allow", "Action": ["dynamodb:GetItem"], "Resource": TABLE},
        {"Sid": "B", "Effect": "Allow", "Action": ["dynamodb:PutItem", "dynamodb:UpdateItem"], "Resource": TABLE},
    )
    reduced = without_action(policy, "dynamodb:getitem")
    assert [s["Sid"] for s in reduced["Statement"]] == ["B"]
    assert not is_allowed(reduced, Permission("dynamodb:GetItem", TABLE))
    assert policy["Statement"][0]["Action"] == ["dynamodb:GetItem"]  # the original is untouched
    wildcard = _policy({"Effect": "Allow", "Action": ["dynamodb:*", "dynamodb:GetItem"], "Resource": TABLE})
    assert is_allowed(without_action(wildcard, "dynamodb:GetItem"), Permission("dynamodb:GetItem", TABLE))
    assert unused_grants(wildcard, [Permission("dynamodb:GetItem", TABLE)]) == []
    assert unused_grants(policy, [Permission("dynamodb:GetItem", TABLE)]) == [
        f"B: dynamodb:PutItem on {TABLE}",
        f"B: dynamodb:UpdateItem on {TABLE}",
    ]
