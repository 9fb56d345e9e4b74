"""A stage's CI bootstrap (infra/deploy-role.json, one stack per stage): its deploy role can be assumed only by
GitHub deploy jobs of the repository's environment named after the stage, and allows exactly what that
stage's deploy and destroy do, on that stage's resources; it can make or widen no role, only pass the stage's
functions' roles (made by the same stack) to Lambda.

What a deploy does is derived, not copied, wherever a source says it:

- `chalice deploy` / `chalice delete`: for each resource chalice builds from this app (its application
  graph, built from .chalice/config.json as chalice does), the TypedAWSClient methods chalice's planner
  plans for it (following the planner's helpers, and taking the branch the resource's own fields decide),
  its remote-state check if the plan asks one, and the sweeper's delete for each resource type the plan
  records; from those, every `self._client('svc').op` and `client.op` they reach in chalice/awsclient.py
  (following calls between its methods, resolving waiters through botocore), mapped to IAM actions through
  botocore's service models.
- CloudFormation on infra/stage.json and infra/data.json: it creates the resources with the caller's
  credentials, so for each resource the role needs what that type's handler calls. The handlers' permission
  lists come from the resource-provider schemas cfn-lint ships: the read handler in full (a resource is read
  back after every create and update), the delete handler unless the resource is retained, and the
  create/update actions of the properties the template sets (PROPERTY_ACTIONS; each must be one the schema lists).
- The deploy script's own calls (deploy/*.py) are listed by hand in `script_needs`.

Then, for dev and prod, each with its own role: every needed action is allowed on the stage's real resource
names, every grant of the role is needed, and each action the other stage's deploy needs is denied (but for
the few IAM cannot tell apart, listed in SHARED_ACROSS_STAGES). IAM is decided by a small evaluator (Allow,
Deny, Action/Resource wildcards, StringEquals/StringLike) over the template as CloudFormation resolves it.

Last, `chalice package` for dev and prod makes a SAM template that passes cfn-lint.
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import botocore.session
import cfnlint
import chalice
import pytest
from chalice.cli.factory import CLIFactory
from chalice.deploy import models
from chalice.deploy.appgraph import ApplicationGraphBuilder, DependencyBuilder

from deploy.bootstrap import bootstrapped_stages
from deploy.stack import data_stack_name, events_stack_name, outbox_pipe_role_name, stack_name
from deploy.stage import ACCOUNT_PLACEHOLDER, state_key, with_account
from tests.aws_calls import (
    BOOTSTRAP,
    FAKE_ACCOUNT,
    REGION,
    REPOSITORY,
    action_matches,
    bootstrap_names,
    resolved,
    resource_matches,
)

ROOT = Path(__file__).resolve().parent.parent
TEMPLATE = BOOTSTRAP
STAGE_TEMPLATE: dict[str, Any] = json.loads((ROOT / "infra" / "stage.json").read_text())
DATA_TEMPLATE: dict[str, Any] = json.loads((ROOT / "infra" / "data.json").read_text())
EVENTS_TEMPLATE: dict[str, Any] = json.loads((ROOT / "infra" / "events.json").read_text())
CHALICE_CONFIG: dict[str, Any] = json.loads((ROOT / ".chalice" / "config.json").read_text())
CHALICE_SOURCE = Path(chalice.__file__).parent
CFN_LINT_DATA = Path(cfnlint.__file__).parent / "data"

STAGES = tuple(bootstrapped_stages())
# The app's scheduled functions and their rates (app.py).
SCHEDULES = {"pull_vod_events": "rate(1 minute)", "reconcile": "rate(1 hour)"}
PARAMETERS = bootstrap_names("any")  # the names that do not depend on the stage
GITHUB = "token.actions.githubusercontent.com"

ROLE = TEMPLATE["Resources"]["DeployRole"]
# The functions' execution roles (chalice's config key of the function -> the role's logical id).
FUNCTION_ROLES = {"api_handler": "ApiHandlerRole", "pull_vod_events": "PullVodEventsRole", "reconcile": "ReconcileRole"}
PIPE_ROLE = "OutboxPipeRole"  # the role infra/events.json's pipe runs with


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def role_statements(stage: str) -> list[dict[str, Any]]:
    """The deploy role's policy in `stage`'s bootstrap stack, its names resolved."""
    [policy] = ROLE["Properties"]["Policies"]
    document = resolved(policy["PolicyDocument"], stage)
    assert document["Version"] == "2012-10-17"
    statements: list[dict[str, Any]] = document["Statement"]
    return statements


def function_role_arn(stage: str, function: str) -> str:
    return role_arn(stage, FUNCTION_ROLES[function])


def role_arn(stage: str, logical_id: str) -> str:
    arn: str = resolved({"Fn::GetAtt": [logical_id, "Arn"]}, stage)
    return arn


# -- what IAM would decide ------------------------------------------------------------------------------


@dataclass(frozen=True, order=True)
class Need:
    action: str
    resource: str
    context: tuple[tuple[str, str], ...] = ()  # request context keys, e.g. iam:PassedToService
    why: str = field(default="", compare=False)


def _like(pattern: str, value: str) -> bool:
    return re.fullmatch(".*".join(map(re.escape, pattern.split("*"))), value) is not None


def _conditions_hold(statement: Mapping[str, Any], need: Need) -> bool:
    """StringEquals / StringLike, every key of every operator must hold; a key the request lacks fails."""
    context = dict(need.context)
    for operator, block in statement.get("Condition", {}).items():
        if operator not in ("StringEquals", "StringLike"):
            raise AssertionError(f"condition operator {operator} is not modelled")
        for key, expected in block.items():
            if key not in context:
                return False
            patterns = as_list(expected)
            if operator == "StringEquals" and context[key] not in patterns:
                return False
            if operator == "StringLike" and not any(_like(pattern, context[key]) for pattern in patterns):
                return False
    return True


def statement_applies(statement: Mapping[str, Any], need: Need) -> bool:
    """Whether the (resolved) statement covers the request, whatever its effect."""
    if statement["Effect"] not in ("Allow", "Deny") or {"NotAction", "NotResource", "NotPrincipal"} & set(statement):
        raise AssertionError(f"statement {statement.get('Sid')}: only Allow/Deny + Action + Resource is modelled")
    return (
        any(action_matches(action, need.action) for action in as_list(statement["Action"]))
        and any(resource_matches(resource, need.resource) for resource in as_list(statement["Resource"]))
        and _conditions_hold(statement, need)
    )


def allowed(need: Need, statements: Iterable[Mapping[str, Any]]) -> bool:
    """IAM's decision within one identity policy: an explicit Deny wins, else an Allow allows, else denied."""
    applying = [statement["Effect"] for statement in statements if statement_applies(statement, need)]
    return "Allow" in applying and "Deny" not in applying


# -- IAM's own data (shipped with cfn-lint) -------------------------------------------------------------


@functools.cache
def iam_actions() -> dict[str, Any]:
    services: dict[str, Any] = json.loads((CFN_LINT_DATA / "AdditionalSpecs" / "Policies.json").read_text())
    return services


def resource_types(action: str) -> list[str]:
    """The resource types IAM lets a statement name for `action`; none: only "*" authorises it."""
    service, name = action.split(":")
    entry = iam_actions()[service]["Actions"].get(name.lower())
    assert entry is not None, f"{action} is not an IAM action"
    return list(entry.get("Resources", []))


@functools.cache
def handler_permissions(resource_type: str) -> dict[str, frozenset[str]]:
    schemas = CFN_LINT_DATA / "schemas"
    digest = json.loads((schemas / "providers" / f"{REGION}.json").read_text())[resource_type]
    schema = json.loads((schemas / "resources" / f"{digest}.json").read_text())
    return {name: frozenset(handler.get("permissions", ())) for name, handler in schema["handlers"].items()}


# -- names of one stage's resources ----------------------------------------------------------------------


def arn(service: str, resource: str, *, region: bool = True, account: bool = True) -> str:
    return f"arn:aws:{service}:{REGION if region else ''}:{FAKE_ACCOUNT if account else ''}:{resource}"


def stage_names(stage: str) -> dict[str, str]:
    app = PARAMETERS["AppName"]
    assert stack_name(stage) == f"{app}-{stage}"
    # CloudFormation names a bucket without BucketName `<stack name>-<logical id>-<random>`, lower-cased.
    bucket = f"{stack_name(stage)}-statebucket-1a2b3c4d5e6f"
    return {
        "stack": arn("cloudformation", f"stack/{stack_name(stage)}/0f1e2d3c-aaaa-bbbb-cccc-0123456789ab"),
        "data_stack": arn("cloudformation", f"stack/{data_stack_name(stage)}/1f1e2d3c-aaaa-bbbb-cccc-0123456789ab"),
        "events_stack": arn("cloudformation", f"stack/{events_stack_name(stage)}/2f1e2d3c-aaaa-bbbb-cccc-0123456789ab"),
        "bus": arn("events", f"event-bus/{app}-{stage}"),
        "queue": arn("sqs", f"{app}-{stage}-outbox-dlq"),
        "pipe": arn("pipes", f"pipe/{app}-{stage}-outbox"),
        "table": arn("dynamodb", f"table/{app}-{stage}"),
        "secret": arn("secretsmanager", f"secret:{app}/{stage}-Ab12Cd"),
        "bucket": arn("s3", bucket, region=False, account=False),
        "state": arn("s3", f"{bucket}/{state_key(stage)}", region=False, account=False),
        "user_pool": arn("cognito-idp", f"userpool/{REGION}_AbCdEf123"),
    }


def alarm_arn(resource: Mapping[str, Any], stage: str) -> str:
    """The alarm's ARN: its AlarmName is `${AppName}-${Stage}-<what>`."""
    name = resource["Properties"]["AlarmName"]["Fn::Sub"].replace("${AppName}", PARAMETERS["AppName"])
    return arn("cloudwatch", f"alarm:{name.replace('${Stage}', stage)}")


def function_roles(stage: str) -> dict[str, str]:
    """Each function's role ARN as the deploy gives it to chalice (this tests' account filled in)."""
    functions = [r for r in chalice_resources(stage) if isinstance(r, models.LambdaFunction)]
    assert all(isinstance(f.role, models.PreCreatedIAMRole) for f in functions), "chalice would make a role"
    return {f.function_name: f.role.role_arn.replace(ACCOUNT_PLACEHOLDER, FAKE_ACCOUNT) for f in functions}  # type: ignore[union-attr]


STACK_TAG = "aws:ResourceTag/aws:cloudformation:stack-name"


def tags_of(resource: str, stage: str) -> tuple[tuple[str, str], ...]:
    """The request context IAM sees for `resource`: a user pool carries the system tags CloudFormation gives
    every resource it makes (the pool's schema has cloudFormationSystemTags and tagOnCreate)."""
    return ((STACK_TAG, stack_name(stage)),) if resource == stage_names(stage)["user_pool"] else ()


# -- chalice deploy / delete, from chalice's source -------------------------------------------------------


@functools.cache
def class_methods(module: str, class_name: str) -> dict[str, ast.FunctionDef]:
    tree = ast.parse((CHALICE_SOURCE / module).read_text())
    [cls] = [node for node in tree.body if isinstance(node, ast.ClassDef) and node.name == class_name]
    return {node.name: node for node in cls.body if isinstance(node, ast.FunctionDef)}


@dataclass
class Planned:
    """What one of chalice's instruction builders (a PlanStage `_plan_<kind>`, a ResourceSweeper `_delete_<type>`)
    can put in a plan for one resource."""

    calls: set[str] = field(default_factory=set)  # TypedAWSClient methods: `APICall(method_name='…')`
    recorded: set[str] = field(default_factory=set)  # `Record…(resource_type='…')`: the sweeper deletes by these
    asks_remote_state: bool = False  # `self._remote_state.resource_exists(resource)`


_UNDECIDED = object()


def _resource_attribute(node: ast.expr, resource: Any) -> Any:
    """The value of `resource.<attribute>` in the source, for the resource being planned."""
    if (
        resource is not None
        and isinstance(node, ast.Attribute)
        and isinstance(node.value, ast.Name)
        and node.value.id == "resource"
        and hasattr(resource, node.attr)
    ):
        return getattr(resource, node.attr)
    return _UNDECIDED


def _decide(test: ast.expr, resource: Any) -> bool | None:
    """An `if` test on the planned resource's own fields (`resource.x`, `resource.x is None`, `not …`) as it
    comes out for this resource; None when it depends on anything else (remote state, variables)."""
    if isinstance(test, ast.UnaryOp) and isinstance(test.op, ast.Not):
        inner = _decide(test.operand, resource)
        return None if inner is None else not inner
    if (
        isinstance(test, ast.Compare)
        and len(test.ops) == 1
        and isinstance(test.ops[0], ast.Is | ast.IsNot)
        and isinstance(test.comparators[0], ast.Constant)
        and test.comparators[0].value is None
    ):
        value = _resource_attribute(test.left, resource)
        if value is _UNDECIDED:
            return None
        return (value is None) == isinstance(test.ops[0], ast.Is)
    value = _resource_attribute(test, resource)
    return None if value is _UNDECIDED else bool(value)


def planned(methods: Mapping[str, ast.FunctionDef], name: str, resource: models.ManagedModel | None) -> Planned:
    """The instructions `methods[name]` can produce for `resource`. Follows the class's own helpers
    (`self._helper(resource, …)`, e.g. _plan_scheduledevent -> _create_cloudwatchevent); an `if` on the
    resource's own fields takes the branch it takes for this resource (a REST API's custom domain, a
    function's reserved concurrency), every other `if` both branches. `resource` None: decide nothing."""
    result = Planned()
    seen: set[tuple[str, int]] = set()

    def constant_keyword(call: ast.Call, arg: str) -> str | None:
        for keyword in call.keywords:
            if keyword.arg == arg:
                assert isinstance(keyword.value, ast.Constant) and isinstance(keyword.value.value, str), (
                    f"{name}: {arg}= is not a literal, not modelled"
                )
                return keyword.value.value
        return None

    def visit(node: ast.AST, bound: models.ManagedModel | None) -> None:
        if isinstance(node, ast.If):
            taken = _decide(node.test, bound)
            visit(node.test, bound)
            for branch in [node.body, node.orelse] if taken is None else [node.body if taken else node.orelse]:
                for statement in branch:
                    visit(statement, bound)
            return
        if isinstance(node, ast.Call):
            func = node.func
            if (method := constant_keyword(node, "method_name")) is not None:
                result.calls.add(method)
            if isinstance(func, ast.Attribute) and func.attr.startswith("RecordResource"):
                recorded = constant_keyword(node, "resource_type")
                assert recorded is not None, f"{name}: {func.attr} without resource_type=, not modelled"
                result.recorded.add(recorded)
            if (
                isinstance(func, ast.Attribute)
                and func.attr == "resource_exists"
                and isinstance(func.value, ast.Attribute)
                and func.value.attr == "_remote_state"
            ):
                first = node.args[0] if node.args else None
                assert bound is not None and isinstance(first, ast.Name) and first.id == "resource", (
                    f"{name}: asks RemoteState about another resource than the one planned, not modelled"
                )
                result.asks_remote_state = True
            if (
                isinstance(func, ast.Attribute)
                and isinstance(func.value, ast.Name)
                and func.value.id == "self"
                and func.attr in methods
            ):
                first = node.args[0] if node.args else None
                helper_bound = bound if isinstance(first, ast.Name) and first.id == "resource" else None
                if (func.attr, id(helper_bound)) not in seen:
                    seen.add((func.attr, id(helper_bound)))
                    visit(methods[func.attr], helper_bound)
        for child in ast.iter_child_nodes(node):
            visit(child, bound)

    seen.add((name, id(resource)))
    visit(methods[name], resource)
    return result


def direct_client_calls(function: ast.FunctionDef) -> set[str]:
    """The TypedAWSClient methods used as `self._client.<method>` (RemoteState, Executor)."""
    return {
        node.attr
        for node in ast.walk(function)
        if isinstance(node, ast.Attribute)
        and isinstance(node.value, ast.Attribute)
        and node.value.attr == "_client"
        and isinstance(node.value.value, ast.Name)
        and node.value.value.id == "self"
    }


@functools.cache
def chalice_resources(stage: str) -> tuple[models.ManagedModel, ...]:
    config = CLIFactory(project_dir=str(ROOT)).create_config_obj(chalice_stage_name=stage)
    graph = ApplicationGraphBuilder().build(config, stage)
    return tuple(r for r in DependencyBuilder().build_dependencies(graph) if isinstance(r, models.ManagedModel))


def chalice_entry_points(stage: str) -> dict[str, str]:
    """TypedAWSClient method -> the chalice function that uses it for one of this app's resources.

    For each resource: what PlanStage._plan_<kind> plans for it; RemoteState._resource_exists_<kind> if that
    plan asks whether the resource exists (a scheduled event's does not: put_rule is idempotent); and the
    ResourceSweeper._delete_<type> for each resource type the plan records in deployed.json (a scheduled
    event is recorded as a `cloudwatch_event`), which is what `chalice delete` and a sweep run."""
    planner = class_methods("deploy/planner.py", "PlanStage")
    remote = class_methods("deploy/planner.py", "RemoteState")
    sweeper = class_methods("deploy/sweeper.py", "ResourceSweeper")
    executor = class_methods("deploy/executor.py", "Executor")
    entries: dict[str, str] = {}

    def use(methods: Iterable[str], where: str) -> None:
        for method in methods:
            entries.setdefault(method, where)

    use(direct_client_calls(remote["resource_deployed_values"]), "RemoteState.resource_deployed_values")
    if any(isinstance(resource, models.ManagedIAMRole) for resource in chalice_resources(stage)):
        # It looks up a role chalice manages, and nothing else.
        use(direct_client_calls(remote["_dynamically_lookup_values"]), "RemoteState._dynamically_lookup_values")
    use(direct_client_calls(executor["_do_builtinfunction"]), "Executor._do_builtinfunction")
    unknown = "this analysis does not know that resource type"
    for resource in chalice_resources(stage):
        kind = type(resource).__name__.lower()
        plan_method = f"_plan_{kind}"
        assert plan_method in planner, f"chalice has no PlanStage.{plan_method}: {unknown}"
        plan = planned(planner, plan_method, resource)
        use(plan.calls, f"PlanStage.{plan_method}")
        if plan.asks_remote_state:
            exists = f"_resource_exists_{kind}"
            assert exists in remote, f"chalice has no RemoteState.{exists}: {unknown}"
            use(direct_client_calls(remote[exists]), f"RemoteState.{exists}")
        for recorded in sorted(plan.recorded):
            delete = f"_delete_{recorded}"
            assert delete in sweeper, f"chalice has no ResourceSweeper.{delete}: {unknown}"
            use(planned(sweeper, delete, None).calls, f"ResourceSweeper.{delete}")
    return entries


@dataclass(frozen=True, order=True)
class ClientCall:
    service: str  # botocore service name
    method: str  # botocore client method, or "get_waiter:<name>"
    via: str = field(compare=False)  # the TypedAWSClient method that makes it


_CLIENT_ATTRIBUTES = frozenset({"meta", "exceptions", "get_waiter", "get_paginator", "can_paginate"})


def _service_of(node: ast.AST, clients: Mapping[str, str]) -> str | None:
    """'lambda' for `self._client('lambda')` or a local name bound to it."""
    if isinstance(node, ast.Name):
        return clients.get(node.id)
    if (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == "_client"
        and isinstance(node.func.value, ast.Name)
        and node.func.value.id == "self"
        and len(node.args) == 1
        and isinstance(node.args[0], ast.Constant)
    ):
        return str(node.args[0].value)
    return None


def client_calls(entries: Iterable[str]) -> set[ClientCall]:
    methods = class_methods("awsclient.py", "TypedAWSClient")
    calls: set[ClientCall] = set()
    seen: set[str] = set()
    todo = list(entries)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        assert name in methods, f"TypedAWSClient.{name} not found in chalice/awsclient.py"
        seen.add(name)
        function = methods[name]
        clients = {
            target.id: service
            for node in ast.walk(function)
            if isinstance(node, ast.Assign) and (service := _service_of(node.value, {}))
            for target in node.targets
            if isinstance(target, ast.Name)
        }
        for node in ast.walk(function):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
                service = _service_of(node.func.value, clients)
                if service and node.func.attr in ("get_waiter", "get_paginator"):
                    [argument] = node.args
                    assert isinstance(argument, ast.Constant) and isinstance(argument.value, str)
                    calls.add(ClientCall(service, f"{node.func.attr}:{argument.value}", name))
            if isinstance(node, ast.Attribute):
                service = _service_of(node.value, clients)
                if service is not None:
                    if node.attr not in _CLIENT_ATTRIBUTES:
                        calls.add(ClientCall(service, node.attr, name))
                elif isinstance(node.value, ast.Name) and node.value.id == "self" and node.attr in methods:
                    todo.append(node.attr)
    return calls


@functools.cache
def _botocore_client(service: str) -> Any:
    session = botocore.session.get_session()
    return session.create_client(service, region_name=REGION, aws_access_key_id="x", aws_secret_access_key="x")


def operation_of(call: ClientCall) -> Any:
    client = _botocore_client(call.service)
    kind, _, name = call.method.partition(":")
    if kind == "get_waiter":
        operation = client.get_waiter(name).config.operation
    else:
        method = name if kind == "get_paginator" else call.method
        assert method in client.meta.method_to_api_mapping, f"{call.service}.{method} is not an operation"
        operation = client.meta.method_to_api_mapping[method]
    return client.meta.service_model.operation_model(operation)


def chalice_needs(stage: str) -> list[Need]:
    resources = chalice_resources(stage)
    roles = sorted(set(function_roles(stage).values()))
    functions = [r.function_name for r in resources if isinstance(r, models.LambdaFunction)]
    rules = [r.rule_name for r in resources if isinstance(r, models.CloudWatchEventBase)]
    assert roles and functions
    needs: list[Need] = []
    for call in sorted(client_calls(chalice_entry_points(stage))):
        operation = operation_of(call)
        why = f"chalice TypedAWSClient.{call.via}: {call.service}.{operation.name}"
        if call.service == "lambda":
            needs += [Need(f"lambda:{operation.name}", arn("lambda", f"function:{f}"), why=why) for f in functions]
        elif call.service == "iam":
            raise AssertionError(f"{why}: chalice manages a role; the functions' roles are the bootstrap's")
        elif call.service == "events":
            # Rules on the default event bus: chalice names no EventBusName.
            assert "rule-on-default-event-bus" in resource_types(f"events:{operation.name}"), why
            assert rules, f"{why}: no rule in the app"
            needs += [Need(f"events:{operation.name}", arn("events", f"rule/{r}"), why=why) for r in rules]
        elif call.service == "apigateway":
            # API Gateway's control plane is authorised by HTTP method on the request path.
            path = re.sub(r"\{\w+\}", "a1b2c3d4e5", operation.http["requestUri"].split("?")[0])
            needs.append(
                Need(f"apigateway:{operation.http['method']}", arn("apigateway", path, account=False), why=why)
            )
        else:
            raise AssertionError(f"{why}: no IAM mapping for service {call.service}; add one")
    actions = {need.action for need in needs}
    # Authorised alongside the calls, not calls themselves: handing the role to Lambda, and the tags chalice
    # gives every function at creation (Lambda authorises tags on CreateFunction as lambda:TagResource).
    if actions & {"lambda:CreateFunction", "lambda:UpdateFunctionConfiguration"}:
        passed = (("iam:PassedToService", "lambda.amazonaws.com"),)
        why = "Lambda: the function's role is passed to it"
        needs += [Need("iam:PassRole", role, passed, why) for role in roles]
    if "lambda:CreateFunction" in actions:
        assert all(r.tags for r in resources if isinstance(r, models.LambdaFunction))
        why = "Lambda: CreateFunction with Tags"
        needs += [Need("lambda:TagResource", arn("lambda", f"function:{f}"), why=why) for f in functions]
    return needs


# -- CloudFormation on infra/stage.json and data.json ---------------------------------------------------

# The create/update actions each property of the stage templates needs of its resource's handler; "" is what
# any resource of the type needs (create, update, and the stack tags deploy/stack.py sets, which
# CloudFormation propagates). A property missing here fails the test: map it before using it.
PROPERTY_ACTIONS: dict[str, dict[str, tuple[str, ...]]] = {
    "AWS::DynamoDB::Table": {
        "": ("dynamodb:CreateTable", "dynamodb:UpdateTable", "dynamodb:TagResource", "dynamodb:UntagResource"),
        "TableName": (),
        "BillingMode": (),
        "AttributeDefinitions": (),
        "KeySchema": (),
        "GlobalSecondaryIndexes": (),
        "SSESpecification": (),  # the AWS managed key: no kms permission of the caller's
        "TimeToLiveSpecification": ("dynamodb:UpdateTimeToLive",),
        "StreamSpecification": (),  # part of CreateTable / UpdateTable
        "PointInTimeRecoverySpecification": ("dynamodb:UpdateContinuousBackups",),
    },
    "AWS::SecretsManager::Secret": {
        "": (
            "secretsmanager:CreateSecret",
            "secretsmanager:UpdateSecret",
            "secretsmanager:TagResource",
            "secretsmanager:UntagResource",
        ),
        "Name": (),
        "Description": (),
        "GenerateSecretString": ("secretsmanager:GetRandomPassword",),
    },
    "AWS::S3::Bucket": {
        "": ("s3:CreateBucket", "s3:PutBucketTagging"),
        "VersioningConfiguration": ("s3:PutBucketVersioning",),
        "BucketEncryption": ("s3:PutEncryptionConfiguration",),
        "PublicAccessBlockConfiguration": ("s3:PutBucketPublicAccessBlock",),
        "OwnershipControls": ("s3:PutBucketOwnershipControls",),
    },
    "AWS::Cognito::UserPool": {
        "": (
            "cognito-idp:CreateUserPool",
            "cognito-idp:UpdateUserPool",
            "cognito-idp:SetUserPoolMfaConfig",  # the create handler sets the MFA configuration, even to OFF
            "cognito-idp:TagResource",
            "cognito-idp:UntagResource",
            "cognito-idp:ListTagsForResource",
        ),
        "UserPoolName": (),
        "UsernameAttributes": (),
        "AutoVerifiedAttributes": (),
        "AdminCreateUserConfig": (),
        "Policies": (),
    },
    "AWS::Cognito::UserPoolClient": {
        "": ("cognito-idp:CreateUserPoolClient", "cognito-idp:UpdateUserPoolClient"),
        **dict.fromkeys(
            (
                "UserPoolId",
                "ClientName",
                "GenerateSecret",
                "ExplicitAuthFlows",
                "PreventUserExistenceErrors",
                "AccessTokenValidity",
                "IdTokenValidity",
                "RefreshTokenValidity",
                "TokenValidityUnits",
            ),
            (),
        ),
    },
    "AWS::CloudWatch::Alarm": {
        "": ("cloudwatch:PutMetricAlarm", "cloudwatch:TagResource", "cloudwatch:UntagResource"),
        **dict.fromkeys(
            (
                "AlarmName",
                "AlarmDescription",
                "Namespace",
                "MetricName",
                "Dimensions",
                "Statistic",
                "Period",
                "EvaluationPeriods",
                "DatapointsToAlarm",
                "Threshold",
                "ComparisonOperator",
                "TreatMissingData",
                "AlarmActions",  # an SNS topic: PutMetricAlarm needs no permission on it
            ),
            (),
        ),
    },
}
PROPERTY_ACTIONS |= {
    "AWS::Events::EventBus": {
        "": ("events:CreateEventBus", "events:UpdateEventBus", "events:TagResource", "events:UntagResource"),
        "Name": (),
    },
    "AWS::SQS::Queue": {
        "": ("sqs:CreateQueue", "sqs:GetQueueUrl", "sqs:TagQueue", "sqs:UntagQueue"),
        "QueueName": (),
        "MessageRetentionPeriod": ("sqs:SetQueueAttributes",),  # CreateQueue's attribute, or its update
        "SqsManagedSseEnabled": ("sqs:SetQueueAttributes",),
    },
    "AWS::Pipes::Pipe": {
        "": ("pipes:CreatePipe", "pipes:UpdatePipe", "pipes:TagResource", "pipes:UntagResource"),
        # RoleArn: iam:PassRole of the bootstrap's pipe role, to pipes.amazonaws.com (cloudformation_needs).
        **dict.fromkeys(("Name", "Description", "DesiredState", "RoleArn", "Source", "SourceParameters", "Target"), ()),
        "TargetParameters": (),
    },
}
# Delete-handler actions for what infra/stage.json does not use.
UNUSED_DELETE_ACTIONS = {"secretsmanager:RemoveRegionsFromReplication": "the secret has no ReplicaRegions"}
SERVICE = {
    "AWS::DynamoDB::Table": ("dynamodb", "table"),
    "AWS::SecretsManager::Secret": ("secretsmanager", "secret"),
    "AWS::S3::Bucket": ("s3", "bucket"),
    "AWS::Cognito::UserPool": ("cognito-idp", "user_pool"),
    "AWS::Cognito::UserPoolClient": ("cognito-idp", "user_pool"),
    "AWS::CloudWatch::Alarm": ("cloudwatch", "alarm"),
    "AWS::Events::EventBus": ("events", "bus"),
    "AWS::SQS::Queue": ("sqs", "queue"),
    "AWS::Pipes::Pipe": ("pipes", "pipe"),
}


def cloudformation_needs(stage: str) -> list[Need]:
    names = stage_names(stage)
    needs = []
    templates = (STAGE_TEMPLATE, DATA_TEMPLATE, EVENTS_TEMPLATE)
    for logical_id, resource in {k: v for t in templates for k, v in t["Resources"].items()}.items():
        kind = resource["Type"]
        assert kind in SERVICE, f"{logical_id}: no model of what CloudFormation needs for {kind}; add one"
        service, name = SERVICE[kind]
        handlers = handler_permissions(kind)

        def own(actions: Iterable[str], service: str = service) -> set[str]:
            return {action for action in actions if action.startswith(f"{service}:")}

        actions = own(handlers["read"])
        if resource.get("DeletionPolicy") != "Retain":
            actions |= own(handlers["delete"]) - set(UNUSED_DELETE_ACTIONS)
        table = PROPERTY_ACTIONS[kind]
        unmapped = set(resource["Properties"]) - set(table)
        assert not unmapped, f"{logical_id}: map {sorted(unmapped)} in PROPERTY_ACTIONS (and the role)"
        mapped = {action for key in ("", *resource["Properties"]) for action in table[key]}
        assert mapped <= own(handlers["create"] | handlers["update"]), f"{kind}: not a handler action"
        for action in sorted(actions | mapped):
            target = (alarm_arn(resource, stage) if name == "alarm" else names[name]) if resource_types(action) else "*"
            needs.append(Need(action, target, tags_of(target, stage), f"CloudFormation, {logical_id} ({kind})"))
        if kind == "AWS::Pipes::Pipe":
            passed = (("iam:PassedToService", "pipes.amazonaws.com"),)
            why = f"CloudFormation, {logical_id}: the pipe's RoleArn is passed to it"
            needs.append(Need("iam:PassRole", role_arn(stage, PIPE_ROLE), passed, why))
    return needs


# -- deploy/*.py -----------------------------------------------------------------------------------------


def script_needs(stage: str) -> list[Need]:
    """The deploy script's own calls. sts:GetCallerIdentity (preflight) is left out: it needs no permission."""
    n = stage_names(stage)
    any_key = n["bucket"] + "/any/key"
    listed = [
        (action, n[stack], f"deploy/stack.py: {why} ({stack})")
        for stack in ("data_stack", "events_stack")
        for action, why in (
            ("cloudformation:DescribeStacks", "describe, and the stack waiters"),
            ("cloudformation:CreateStack", "apply_data / apply_events"),
            ("cloudformation:UpdateStack", "apply_data / apply_events"),
            ("cloudformation:DeleteStack", "delete (destroy)"),
            ("cloudformation:DescribeStackEvents", "why a stack failed"),
        )
    ]
    listed += [
        ("dynamodb:UpdateTable", n["table"], "deploy/stack.py: table_stream_arn of a table adopted without a stream"),
        ("cloudformation:DescribeStacks", n["stack"], "deploy/stack.py: describe, and the stack waiters"),
        ("cloudformation:CreateStack", n["stack"], "deploy/stack.py: apply"),
        ("cloudformation:UpdateStack", n["stack"], "deploy/stack.py: apply"),
        ("cloudformation:DeleteStack", n["stack"], "deploy/stack.py: delete (destroy)"),
        ("cloudformation:DescribeStackEvents", n["stack"], "deploy/stack.py: why a stack failed"),
        ("cloudformation:ValidateTemplate", "*", "deploy/preflight.py: the templates before any change"),
        # A table left without its data stack (an older destroy kept it) is adopted by an IMPORT change set.
        ("dynamodb:DescribeTable", n["table"], "deploy/stack.py: table_exists"),
        ("cloudformation:CreateChangeSet", n["data_stack"], "deploy/stack.py: _import_table"),
        ("cloudformation:DescribeChangeSet", n["data_stack"], "deploy/stack.py: _import_table (its waiter)"),
        ("cloudformation:ExecuteChangeSet", n["data_stack"], "deploy/stack.py: _import_table"),
        ("secretsmanager:GetSecretValue", n["secret"], "deploy/preflight.py: read_secret"),
        ("secretsmanager:PutSecretValue", n["secret"], "deploy/deploy.py: first-deploy VOD keys"),
        ("s3:GetObject", n["state"], "deploy/stage.py: restore_state"),
        ("s3:PutObject", n["state"], "deploy/stage.py: save_state"),
        # Without ListBucket, S3 answers a missing key (a first deploy) with AccessDenied, not NoSuchKey.
        ("s3:ListBucket", n["bucket"], "deploy/stage.py: restore_state of a first deploy"),
        ("s3:ListBucketVersions", n["bucket"], "deploy/deploy.py: _empty_bucket (destroy)"),
        ("s3:DeleteObject", any_key, "deploy/deploy.py: _empty_bucket (DeleteObjects)"),
        ("s3:DeleteObjectVersion", any_key, "deploy/deploy.py: _empty_bucket (DeleteObjects with versions)"),
        ("cognito-idp:AdminCreateUser", n["user_pool"], "deploy/cognito.py: the smoke test user"),
        ("cognito-idp:AdminSetUserPassword", n["user_pool"], "deploy/cognito.py: the smoke test user"),
        ("cognito-idp:AdminInitiateAuth", n["user_pool"], "deploy/cognito.py: the smoke test user"),
        ("cognito-idp:AdminDeleteUser", n["user_pool"], "deploy/cognito.py: the smoke test user"),
    ]
    listed += [
        ("iam:GetRole", role, "deploy/preflight.py: the bootstrap's roles exist")
        for role in [*function_roles(stage).values(), role_arn(stage, PIPE_ROLE)]
    ]
    function = arn("lambda", f"function:{CHALICE_CONFIG['app_name']}-{stage}")
    listed.append(("lambda:GetFunctionConfiguration", function, "the deployed function's configuration"))
    return [Need(action, resource, tags_of(resource, stage), why) for action, resource, why in listed]


def all_needs(stage: str) -> list[Need]:
    return chalice_needs(stage) + cloudformation_needs(stage) + script_needs(stage)


# -- the trust policy --------------------------------------------------------------------------------------


def may_assume(stage: str, sub: str, aud: str = "sts.amazonaws.com") -> bool:
    """Whether GitHub's token with these claims gets `stage`'s deploy role."""
    [statement] = ROLE["Properties"]["AssumeRolePolicyDocument"]["Statement"]
    condition = {"Condition": resolved(statement["Condition"], stage)}  # the principal is checked above
    token = Need("sts:AssumeRoleWithWebIdentity", "*", ((f"{GITHUB}:aud", aud), (f"{GITHUB}:sub", sub)))
    return _conditions_hold(condition, token)


def test_the_deploy_role_trusts_one_exact_subject_through_githubs_provider() -> None:
    [statement] = ROLE["Properties"]["AssumeRolePolicyDocument"]["Statement"]
    assert statement["Effect"] == "Allow"
    assert statement["Action"] == "sts:AssumeRoleWithWebIdentity"
    assert statement["Principal"] == {
        "Federated": {"Fn::If": ["MakeOidcProvider", {"Ref": "GitHubOidcProvider"}, {"Ref": "GitHubOidcProviderArn"}]}
    }
    # StringEquals only: no wildcard reaches another environment, branch or repository.
    assert statement["Condition"] == {
        "StringEquals": {
            f"{GITHUB}:aud": "sts.amazonaws.com",
            f"{GITHUB}:sub": {"Fn::Sub": "repo:${GitHubRepository}:environment:${Stage}"},
        }
    }


@pytest.mark.parametrize("stage", STAGES)
def test_only_the_deploy_jobs_of_the_stages_environment_can_assume_its_role(stage: str) -> None:
    assert may_assume(stage, f"repo:{REPOSITORY}:environment:{stage}")
    for other in STAGES:
        if other != stage:
            assert not may_assume(stage, f"repo:{REPOSITORY}:environment:{other}")
    for sub in (
        f"repo:{REPOSITORY}:environment:{stage}-copy",  # a new environment, made unprotected by naming it
        f"repo:{REPOSITORY}:environment:{stage.upper()}",
        f"repo:{REPOSITORY}:environment:*",
        f"repo:{REPOSITORY}:ref:refs/heads/main",  # a job outside any environment
        f"repo:{REPOSITORY}:ref:refs/heads/{stage}",
        f"repo:{REPOSITORY}:ref:refs/tags/v1.0.0",
        f"repo:{REPOSITORY}:pull_request",
        f"repo:someone-else/fork:environment:{stage}",
        f"repo:{REPOSITORY}-fork:environment:{stage}",
    ):
        assert not may_assume(stage, sub), sub
    assert not may_assume(stage, f"repo:{REPOSITORY}:environment:{stage}", aud="https://github.com/example-org")


def test_the_repository_may_be_named_with_immutable_subject_claims() -> None:
    pattern = TEMPLATE["Parameters"]["GitHubRepository"]["AllowedPattern"]
    assert re.fullmatch(pattern, REPOSITORY)
    assert re.fullmatch(pattern, "example-org@1234/vod-upload-backend@5678")
    assert not re.fullmatch(pattern, "example-org/*")
    assert not re.fullmatch(pattern, "example-org/vod:environment:prod")


def test_the_oidc_provider_is_github_and_is_made_only_when_none_is_named() -> None:
    assert TEMPLATE["Conditions"]["MakeOidcProvider"] == {"Fn::Equals": [{"Ref": "GitHubOidcProviderArn"}, ""]}
    provider = TEMPLATE["Resources"]["GitHubOidcProvider"]
    assert provider["Condition"] == "MakeOidcProvider"
    assert provider["Properties"]["Url"] == f"https://{GITHUB}"
    assert provider["Properties"]["ClientIdList"] == ["sts.amazonaws.com"]
    assert TEMPLATE["Parameters"]["GitHubOidcProviderArn"]["Default"] == ""


def test_the_template_makes_roles_and_their_policy_and_no_user_and_no_key() -> None:
    kinds = {logical_id: resource["Type"] for logical_id, resource in TEMPLATE["Resources"].items()}
    roles = {logical_id for logical_id, kind in kinds.items() if kind == "AWS::IAM::Role"}
    assert roles == {"DeployRole", *FUNCTION_ROLES.values(), PIPE_ROLE}
    assert set(kinds.values()) == {"AWS::IAM::Role", "AWS::IAM::OIDCProvider", "AWS::IAM::ManagedPolicy"}
    assert TEMPLATE["Outputs"]["RoleArn"]["Value"] == {"Fn::GetAtt": ["DeployRole", "Arn"]}


def test_the_names_default_to_the_ones_the_stage_stack_and_chalice_use() -> None:
    assert PARAMETERS["AppName"] == STAGE_TEMPLATE["Parameters"]["AppName"]["Default"]
    for name in ("AppName", "Stage"):
        assert TEMPLATE["Parameters"][name]["AllowedPattern"] == STAGE_TEMPLATE["Parameters"][name]["AllowedPattern"]
    assert PARAMETERS["ChaliceAppName"] == CHALICE_CONFIG["app_name"]


# -- the functions' roles ---------------------------------------------------------------------------------


@pytest.mark.parametrize("stage", STAGES)
def test_every_function_runs_with_its_bootstrap_role_and_chalice_makes_none(stage: str) -> None:
    app = f"{CHALICE_CONFIG['app_name']}-{stage}"
    names = {"api_handler": app, **{handler: f"{app}-{handler}" for handler in SCHEDULES}}
    assert set(names) == set(FUNCTION_ROLES)
    assert function_roles(stage) == {name: function_role_arn(stage, key) for key, name in names.items()}
    settings = CHALICE_CONFIG["stages"][stage]
    assert "iam_policy_file" not in settings and "iam_role_arn" not in settings
    for key in names:
        assert settings["lambda_functions"][key]["manage_iam_role"] is False
        # The deploy fills in the account it deploys to; the committed config holds none.
        assert with_account(settings, FAKE_ACCOUNT)["lambda_functions"][key]["iam_role_arn"] == function_role_arn(
            stage, key
        )


def test_the_function_roles_trust_lambda_alone_and_share_the_function_policy() -> None:
    for logical_id in FUNCTION_ROLES.values():
        properties = TEMPLATE["Resources"][logical_id]["Properties"]
        assert properties["AssumeRolePolicyDocument"]["Statement"] == [
            {"Effect": "Allow", "Principal": {"Service": "lambda.amazonaws.com"}, "Action": "sts:AssumeRole"}
        ]
        assert set(properties) == {"RoleName", "Description", "AssumeRolePolicyDocument"}  # no other policy
    policy = TEMPLATE["Resources"]["FunctionPolicy"]["Properties"]
    assert policy["Roles"] == [{"Ref": logical_id} for logical_id in FUNCTION_ROLES.values()]
    # tests/test_iam_policy.py proves this policy against what the app's code sends.


@pytest.mark.parametrize("stage", STAGES)
def test_the_pipe_role_is_assumed_by_its_pipe_alone_and_reads_the_stream_into_the_bus(stage: str) -> None:
    resource = TEMPLATE["Resources"][PIPE_ROLE]["Properties"]
    assert resolved(resource["RoleName"], stage) == outbox_pipe_role_name(stage)
    pipe = EVENTS_TEMPLATE["Resources"]["OutboxPipe"]["Properties"]
    assert pipe["RoleArn"]["Fn::Sub"].endswith("${AppName}-${Stage}-outbox-pipe")  # events.json names it
    [trust] = resolved(resource["AssumeRolePolicyDocument"], stage)["Statement"]
    names = stage_names(stage)
    assert trust == {
        "Effect": "Allow",
        "Principal": {"Service": "pipes.amazonaws.com"},
        "Action": "sts:AssumeRole",
        "Condition": {"StringEquals": {"aws:SourceAccount": FAKE_ACCOUNT, "aws:SourceArn": names["pipe"]}},
    }
    [policy] = resource["Policies"]
    statements = resolved(policy["PolicyDocument"], stage)["Statement"]
    stream = f"{names['table']}/stream/2026-12-02T06:30:00.000"
    wanted = [
        *(Need(f"dynamodb:{a}", stream) for a in ("DescribeStream", "GetRecords", "GetShardIterator")),
        Need("dynamodb:ListStreams", "*"),
        Need("events:PutEvents", names["bus"]),
        Need("sqs:SendMessage", names["queue"]),
    ]
    assert all(allowed(need, statements) for need in wanted)
    granted = {(a, r) for s in statements for a in as_list(s["Action"]) for r in as_list(s["Resource"])}
    assert len(granted) == len(wanted)  # nothing else
    other = "prod" if stage != "prod" else "dev"
    refused = [
        Need("dynamodb:GetRecords", f"{stage_names(other)['table']}/stream/2026-12-02T06:30:00.000"),
        Need("dynamodb:GetItem", names["table"]),
        Need("events:PutEvents", arn("events", "event-bus/default")),
        Need("events:PutEvents", stage_names(other)["bus"]),
        Need("sqs:SendMessage", stage_names(other)["queue"]),
    ]
    assert not [need for need in refused if allowed(need, statements)]


# -- the permissions ---------------------------------------------------------------------------------------


def test_no_statement_grants_every_action_or_a_whole_service() -> None:
    for statement in role_statements("dev"):
        assert statement["Effect"] == "Allow" and "Action" in statement and "Resource" in statement
        assert not {"NotAction", "NotResource"} & set(statement)
        for action in as_list(statement["Action"]):
            assert "*" not in action and "?" not in action, f"{statement['Sid']}: {action}"
            resource_types(action)  # exists


# Resources IAM cannot name after the app: a REST API's and a user pool's ids are random.
UNNAMEABLE = {
    "arn:${AWS::Partition}:apigateway:${AWS::Region}::/restapis",
    "arn:${AWS::Partition}:apigateway:${AWS::Region}::/restapis/*",
    "arn:${AWS::Partition}:apigateway:${AWS::Region}::/restapis/*/deployments",
    "arn:${AWS::Partition}:cognito-idp:${AWS::Region}:${AWS::AccountId}:userpool/*",
}


def test_every_resource_is_named_after_the_app_and_the_stage_wherever_iam_allows_it() -> None:
    [policy] = ROLE["Properties"]["Policies"]
    for statement in policy["PolicyDocument"]["Statement"]:
        for resource in as_list(statement["Resource"]):
            if resource == "*":
                named = {action: resource_types(action) for action in as_list(statement["Action"])}
                assert not any(named.values()), f"{statement['Sid']}: these could be named: {named}"
                continue
            if "Fn::GetAtt" in resource:  # one of this stack's roles
                assert resource["Fn::GetAtt"][0] in {*FUNCTION_ROLES.values(), PIPE_ROLE}, (
                    f"{statement['Sid']}: {resource}"
                )
                continue
            assert set(resource) == {"Fn::Sub"}, f"{statement['Sid']}: {resource}"
            pattern: str = resource["Fn::Sub"]
            assert pattern.startswith("arn:${AWS::Partition}:"), pattern
            service = resolved(resource, "dev").split(":")[2]
            if service not in ("s3", "apigateway"):
                assert f":{service}:${{AWS::Region}}:${{AWS::AccountId}}:" in pattern, pattern
            if pattern not in UNNAMEABLE:
                assert re.search(r"\$\{(AppName|ChaliceAppName)\}[-/]\$\{Stage\}", pattern), (
                    f"{statement['Sid']}: {pattern}"
                )
            elif service == "cognito-idp":
                # Not by name, then by the stack that made the pool: this stage's.
                condition = {"StringEquals": {STACK_TAG: {"Fn::Sub": "${AppName}-${Stage}"}}}
                assert statement.get("Condition") == condition, statement["Sid"]


@pytest.mark.parametrize("stage", STAGES)
def test_the_role_allows_everything_a_deploy_and_a_destroy_do(stage: str) -> None:
    statements = role_statements(stage)
    denied = [f"{n.action} on {n.resource} ({n.why})" for n in all_needs(stage) if not allowed(n, statements)]
    assert not denied, "\n".join(denied)


@pytest.mark.parametrize("stage", STAGES)
def test_every_grant_of_the_role_is_needed(stage: str) -> None:
    needs = all_needs(stage)
    unused = []
    for statement in role_statements(stage):
        for action in as_list(statement["Action"]):
            for resource in as_list(statement["Resource"]):
                narrowed = {**statement, "Action": action, "Resource": resource}
                if not any(statement_applies(narrowed, need) for need in needs):
                    unused.append(f"{statement['Sid']}: {action} on {resource}")
    assert not unused, "granted but needed by nothing:\n" + "\n".join(unused)


@pytest.mark.parametrize("stage", STAGES)
def test_removing_any_granted_action_denies_something_a_deploy_needs(stage: str) -> None:
    needs, statements = all_needs(stage), role_statements(stage)
    for statement in statements:
        for action in as_list(statement["Action"]):
            others = [
                {**s, "Action": [a for a in as_list(s["Action"]) if a != action]}
                for s in statements
                if [a for a in as_list(s["Action"]) if a != action]
            ]
            assert any(not allowed(need, others) for need in needs), f"{action} is granted but never needed"


# What one stage's role may also do of another's deploy, because IAM cannot tell the stages apart there:
# actions that take no resource (they make something new, or read nothing of a stage), and API Gateway's
# control plane (REST API ids are random and chalice gives every stage's API the app's name). The second
# is the one way left from the dev role to prod in a shared account: keep prod in an account of its own.
SHARED_ACROSS_STAGES = {
    "cloudformation:ValidateTemplate": "no resource: checks a template",
    "secretsmanager:GetRandomPassword": "no resource: returns random characters",
    "cognito-idp:CreateUserPool": "no resource: makes a new, empty pool",
    "events:RemovePermission": "no resource: the bus delete handler's (a bus policy statement by bus name)",
    "apigateway:GET": "/restapis/*",
    "apigateway:POST": "/restapis, /restapis/*/deployments",
    "apigateway:PUT": "/restapis/*",
    "apigateway:PATCH": "/restapis/*",
    "apigateway:DELETE": "/restapis/*",
}


@pytest.mark.parametrize(("stage", "other"), [(s, o) for s in STAGES for o in STAGES if s != o])
def test_a_stage_role_is_denied_everything_another_stages_deploy_does(stage: str, other: str) -> None:
    """Each call of `other`'s deploy and destroy, on `other`'s resources, is refused to `stage`'s role, but
    for the listed ones IAM cannot tell apart."""
    statements = role_statements(stage)
    reached = [need for need in all_needs(other) if allowed(need, statements)]
    unexpected = [f"{n.action} on {n.resource} ({n.why})" for n in reached if n.action not in SHARED_ACROSS_STAGES]
    assert not unexpected, f"{stage}'s role reaches {other}'s resources:\n" + "\n".join(unexpected)
    assert {need.action for need in reached} == set(SHARED_ACROSS_STAGES)
    changing = {"Create", "Update", "Delete", "Put", "Tag", "Untag", "Admin", "Set", "Add", "Remove"}
    assert any(word in need.action for need in all_needs(other) for word in changing)  # the check has teeth


# Every IAM action that makes or widens a role, a user or a policy, or removes a limit on them.
ESCALATING = re.compile(
    r"iam:(Create|Put|Attach|Update|Add|Set|Upload|Tag|Untag|Delete\w*Boundary|Delete\w*Policy|Detach|PassRole"
    r"|ChangePassword|ResetServiceSpecificCredential|EnableMFADevice)\w*",
    re.IGNORECASE,
)


@pytest.mark.parametrize("stage", STAGES)
def test_the_deploy_role_can_make_or_widen_no_role_and_pass_only_its_functions_roles(stage: str) -> None:
    statements = role_statements(stage)
    iam_actions_named = {a for s in statements for a in as_list(s["Action"]) if a.lower().startswith("iam:")}
    assert iam_actions_named == {"iam:PassRole", "iam:GetRole"}, iam_actions_named
    every_iam_action = [f"iam:{entry}" for entry in iam_actions()["iam"]["Actions"]]
    escalating = [action for action in every_iam_action if ESCALATING.fullmatch(action)]
    assert (
        len(escalating) > 40 and "iam:createpolicyversion" in escalating and "iam:updateassumerolepolicy" in escalating
    )
    own_roles = [function_role_arn(stage, key) for key in FUNCTION_ROLES]
    targets = [
        *own_roles,
        arn("iam", f"role/{CHALICE_CONFIG['app_name']}-{stage}-attacker", region=False),
        arn("iam", "role/OrganizationAccountAccessRole", region=False),
        arn("iam", f"policy/{PARAMETERS['AppName']}-{stage}-boundary", region=False),
        arn("iam", "user/anyone", region=False),
        "*",
    ]
    lambda_ = (("iam:PassedToService", "lambda.amazonaws.com"),)
    granted = [
        (action, target)
        for action in escalating
        for target in targets
        for context in ((), lambda_)
        if allowed(Need(action, target, context), statements)
    ]
    # PassRole (IAM's list spells it in lower case), to Lambda alone, of the stage's own function roles alone.
    assert sorted(granted) == sorted(("iam:passrole", role) for role in own_roles)
    for role in own_roles:
        for service in ("ec2.amazonaws.com", "cloudformation.amazonaws.com", "events.amazonaws.com"):
            assert not allowed(Need("iam:PassRole", role, (("iam:PassedToService", service),)), statements)
    # And the outbox pipe's role to EventBridge Pipes alone; no function role to Pipes.
    pipe_role = role_arn(stage, PIPE_ROLE)
    to_pipes = (("iam:PassedToService", "pipes.amazonaws.com"),)
    assert allowed(Need("iam:PassRole", pipe_role, to_pipes), statements)
    for service in ("lambda.amazonaws.com", "events.amazonaws.com", "states.amazonaws.com"):
        assert not allowed(Need("iam:PassRole", pipe_role, (("iam:PassedToService", service),)), statements)
    assert not any(allowed(Need("iam:PassRole", role, to_pipes), statements) for role in own_roles)
    assert not allowed(
        Need("iam:CreateRole", arn("iam", f"role/{outbox_pipe_role_name(stage)}-2", region=False)), statements
    )


@pytest.mark.parametrize(
    ("action", "resource", "context"),
    [
        ("lambda:UpdateFunctionCode", arn("lambda", "function:another-app-dev"), ()),
        ("lambda:UpdateFunctionCode", arn("lambda", "function:vod-upload-backend-devx"), ()),
        ("iam:PutRolePolicy", arn("iam", "role/vod-upload-backend-dev-api_handler-exec", region=False), ()),
        ("iam:CreateRole", arn("iam", "role/vod-upload-backend-dev-x", region=False), ()),
        ("iam:PassRole", arn("iam", "role/vod-upload-backend-dev-api_handler", region=False), ()),  # chalice's
        (
            "iam:PassRole",
            arn("iam", "role/vod-upload-backend-dev-api_handler", region=False),
            (("iam:PassedToService", "lambda.amazonaws.com"),),
        ),
        ("iam:CreateUser", arn("iam", "user/vod-upload-backend-x", region=False), ()),
        ("dynamodb:DeleteTable", arn("dynamodb", "table/vod-upload-dev"), ()),  # retained, never deleted
        ("dynamodb:Scan", arn("dynamodb", "table/vod-upload-dev"), ()),  # no reading user data
        ("dynamodb:CreateTable", arn("dynamodb", "table/billing"), ()),
        ("secretsmanager:GetSecretValue", arn("secretsmanager", "secret:another-app/dev-Ab12Cd"), ()),
        ("secretsmanager:GetSecretValue", arn("secretsmanager", "secret:vod-upload/dev-extra-Ab12Cd"), ()),
        ("s3:GetObject", arn("s3", "company-backups/db.dump", region=False, account=False), ()),
        ("s3:PutBucketPolicy", arn("s3", "vod-upload-dev-statebucket-1a2b3c", region=False, account=False), ()),
        ("cloudformation:DeleteStack", arn("cloudformation", "stack/network/0f1e2d3c"), ()),
        ("cloudformation:UpdateStack", arn("cloudformation", "stack/vod-upload-bootstrap-dev/0f1e2d3c"), ()),
        ("cognito-idp:AdminGetUser", arn("cognito-idp", "userpool/us-east-1_AbCdEf123"), ()),
        # Another app's pool: the role must not be able to sign in as its users.
        (
            "cognito-idp:AdminSetUserPassword",
            arn("cognito-idp", "userpool/us-east-1_Other"),
            ((STACK_TAG, "crm-dev"),),
        ),
        ("cognito-idp:AdminInitiateAuth", arn("cognito-idp", "userpool/us-east-1_Other"), ()),
        (
            "cognito-idp:DeleteUserPool",
            arn("cognito-idp", "userpool/us-east-1_Other"),
            ((STACK_TAG, "vod-upload-devx"),),
        ),
        ("apigateway:POST", arn("apigateway", "/domainnames", account=False), ()),
        ("events:PutTargets", arn("events", "rule/billing-nightly"), ()),
        ("events:PutRule", arn("events", "rule/another-app-dev-cron"), ()),
        ("events:DeleteRule", arn("events", "rule/AutoScalingManagedRule"), ()),
        ("events:PutEvents", arn("events", "event-bus/default"), ()),
        ("lambda:AddPermission", arn("lambda", "function:another-app-dev"), ()),
        ("apigateway:PATCH", arn("apigateway", "/account", account=False), ()),
        ("kms:Decrypt", "*", ()),
        ("sts:AssumeRole", "*", ()),
    ],
)
def test_the_dev_role_reaches_nothing_else(action: str, resource: str, context: tuple[tuple[str, str], ...]) -> None:
    assert not allowed(Need(action, resource, context), role_statements("dev"))


def test_the_evaluator_lets_a_deny_win_and_needs_every_condition() -> None:
    table = arn("dynamodb", "table/t")
    allow = {"Effect": "Allow", "Action": "dynamodb:*", "Resource": table}
    deny = {"Effect": "Deny", "Action": "dynamodb:DeleteTable", "Resource": "*"}
    assert allowed(Need("dynamodb:DeleteTable", table), [allow])
    assert not allowed(Need("dynamodb:DeleteTable", table), [allow, deny])
    assert allowed(Need("dynamodb:UpdateTable", table), [allow, deny])
    assert not allowed(Need("dynamodb:UpdateTable", table), [deny])
    both = {**allow, "Condition": {"StringEquals": {"k": "v"}, "StringLike": {"l": "a*"}}}
    assert allowed(Need("dynamodb:UpdateTable", table, (("k", "v"), ("l", "abc"))), [both])
    assert not allowed(Need("dynamodb:UpdateTable", table, (("k", "v"),)), [both])  # a key the request lacks
    assert not allowed(Need("dynamodb:UpdateTable", table, (("k", "v"), ("l", "b"))), [both])
    with pytest.raises(AssertionError, match="not modelled"):
        allowed(Need("dynamodb:UpdateTable", table), [{**allow, "Condition": {"StringNotEquals": {"k": "v"}}}])


@pytest.mark.parametrize("stage", STAGES)
def test_the_inline_policy_fits_iams_limit(stage: str) -> None:
    # A role's inline policies may hold 10,240 characters in all, whitespace not counted.
    document = {"Version": "2012-10-17", "Statement": role_statements(stage)}
    size = len(re.sub(r"\s", "", json.dumps(document)))
    assert size < 10_240, f"{size} characters: move statements into a managed policy before IAM refuses it"


# -- the derivations themselves ----------------------------------------------------------------------------


def test_the_chalice_analysis_finds_the_calls_of_a_deploy_and_a_delete() -> None:
    calls = {(call.service, operation_of(call).name) for call in client_calls(chalice_entry_points("dev"))}
    assert {
        ("lambda", "GetFunction"),
        ("lambda", "CreateFunction"),
        ("lambda", "GetFunctionConfiguration"),  # the function_active waiter
        ("lambda", "UpdateFunctionCode"),
        ("lambda", "AddPermission"),
        ("lambda", "DeleteFunction"),
        ("apigateway", "ImportRestApi"),
        ("apigateway", "PutRestApi"),
        ("apigateway", "CreateDeployment"),
        ("apigateway", "DeleteRestApi"),
        ("events", "PutRule"),  # the schedule's rule: get_or_create_rule_arn
        ("events", "PutTargets"),  # connect_rule_to_lambda
        ("events", "RemoveTargets"),  # delete_rule (chalice delete)
        ("events", "DeleteRule"),
    } <= calls
    # No IAM call: the functions' roles are the bootstrap's (chalice plans none for a pre-created role).
    assert {service for service, _ in calls} == {"lambda", "apigateway", "events"}
    # A rule's lambda:AddPermission (events.amazonaws.com) goes through the function's policy check first.
    entries = chalice_entry_points("dev")
    assert entries["add_permission_for_cloudwatch_event"] == "PlanStage._plan_scheduledevent"
    assert entries["delete_rule"] == "ResourceSweeper._delete_cloudwatch_event"
    permission = client_calls(["add_permission_for_cloudwatch_event"])
    assert {(call.service, operation_of(call).name) for call in permission} == {
        ("lambda", "GetPolicy"),
        ("lambda", "AddPermission"),
    }


def test_the_plan_analysis_takes_the_branches_a_resource_takes() -> None:
    resources = chalice_resources("dev")
    planner = class_methods("deploy/planner.py", "PlanStage")
    [function, *_] = [r for r in resources if isinstance(r, models.LambdaFunction)]
    assert function.reserved_concurrency is None
    assert {"delete_function_concurrency", "put_function_concurrency"} & planned(
        planner, "_plan_lambdafunction", function
    ).calls == {"delete_function_concurrency"}
    limited = dataclasses.replace(function, reserved_concurrency=5)
    assert {"delete_function_concurrency", "put_function_concurrency"} & planned(
        planner, "_plan_lambdafunction", limited
    ).calls == {"put_function_concurrency"}
    # A custom domain's helpers ask RemoteState about the domain, which the analysis does not model.
    [api] = [r for r in resources if isinstance(r, models.RestAPI)]
    assert api.domain_name is None
    with pytest.raises(AssertionError, match="another resource"):
        planned(planner, "_plan_restapi", dataclasses.replace(api, domain_name=object()))
    # A schedule's plan is built by a helper, never asks whether the rule exists, and is recorded (and so
    # swept) as a cloudwatch_event.
    [schedule, *_] = [r for r in resources if isinstance(r, models.ScheduledEvent)]
    plan = planned(planner, "_plan_scheduledevent", schedule)
    assert plan.calls == {"get_or_create_rule_arn", "connect_rule_to_lambda", "add_permission_for_cloudwatch_event"}
    assert not plan.asks_remote_state
    assert plan.recorded == {"cloudwatch_event"}


def test_the_app_is_what_the_chalice_analysis_maps() -> None:
    # What chalice_needs was written for: REST API, functions each with a role of the bootstrap's, schedules.
    # A new kind of resource (queue, layer, domain, log group) must be mapped there (the analysis also fails
    # on a resource type it has no plan method for).
    for stage in STAGES:
        resources = chalice_resources(stage)
        kinds = {type(resource).__name__ for resource in resources}
        assert kinds == {"LambdaFunction", "RestAPI", "ScheduledEvent"}, kinds
        app = f"{CHALICE_CONFIG['app_name']}-{stage}"
        functions = {r.function_name: r for r in resources if isinstance(r, models.LambdaFunction)}
        assert set(functions) == {app, *(f"{app}-{handler}" for handler in SCHEDULES)}
        for function in functions.values():
            assert isinstance(function.role, models.PreCreatedIAMRole), function.function_name
        schedules = {
            r.rule_name: (r.lambda_function.function_name, r.schedule_expression)
            for r in resources
            if isinstance(r, models.ScheduledEvent)
        }
        assert schedules == {
            f"{app}-{handler}-event": (f"{app}-{handler}", expression) for handler, expression in SCHEDULES.items()
        }


def test_the_unused_handler_actions_left_out_are_real_handler_actions() -> None:
    delete = handler_permissions("AWS::SecretsManager::Secret")["delete"]
    assert set(UNUSED_DELETE_ACTIONS) <= delete


# -- chalice package ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def packaged(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    """`chalice package --stage <stage>` of a copy of the project (its package cache stays in the copy), with the
    functions' role ARNs in this tests' account, as the deploy fills them in."""
    project = tmp_path_factory.mktemp("package") / "project"
    project.mkdir()
    shutil.copy(ROOT / "app.py", project / "app.py")
    shutil.copy(ROOT / "requirements.txt", project / "requirements.txt")
    shutil.copytree(ROOT / "chalicelib", project / "chalicelib", ignore=shutil.ignore_patterns("__pycache__"))
    (project / ".chalice").mkdir()
    config = {
        **CHALICE_CONFIG,
        "stages": {name: with_account(settings, FAKE_ACCOUNT) for name, settings in CHALICE_CONFIG["stages"].items()},
    }
    (project / ".chalice" / "config.json").write_text(json.dumps(config))
    environ = {key: value for key, value in os.environ.items() if not key.startswith("AWS_")}
    environ.update(AWS_DEFAULT_REGION=REGION, AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing")
    chalice_cli = Path(sys.executable).with_name("chalice")

    def package(stage: str) -> Path:
        out = project.parent / f"sam-{stage}"
        if not out.exists():
            result = subprocess.run(  # noqa: S603 - chalice from our own venv
                [str(chalice_cli), "--project-dir", str(project), "package", "--stage", stage, str(out)],
                env=environ,
                capture_output=True,
                text=True,
                timeout=600,
            )
            assert result.returncode == 0, result.stdout + result.stderr
        return out

    return package


@pytest.mark.parametrize("stage", STAGES)
def test_chalice_package_makes_a_template_cfn_lint_passes(stage: str, packaged: Callable[[str], Path]) -> None:
    out = packaged(stage)
    sam = json.loads((out / "sam.json").read_text())
    resources = sam["Resources"]
    functions = {r["Properties"]["Handler"]: r for r in resources.values() if r["Type"] == "AWS::Serverless::Function"}
    assert set(functions) == {"app.app", *(f"app.{handler}" for handler in SCHEDULES)}
    config = CHALICE_CONFIG["stages"][stage]
    # The functions run with the bootstrap's roles: the template makes no role of its own.
    assert not [r for r in resources.values() if r["Type"].startswith("AWS::IAM::")]
    handlers = {"app.app": "api_handler", **{f"app.{handler}": handler for handler in SCHEDULES}}
    for handler, function in functions.items():
        properties = function["Properties"]
        assert properties["Environment"]["Variables"]["STAGE"] == stage
        assert properties["Role"] == function_role_arn(stage, handlers[handler])
    assert functions["app.app"]["Properties"]["Timeout"] == CHALICE_CONFIG["lambda_timeout"]
    assert "Events" not in functions["app.app"]["Properties"]
    for handler, expression in SCHEDULES.items():
        scheduled = functions[f"app.{handler}"]["Properties"]
        assert scheduled["Timeout"] == config["lambda_functions"][handler]["lambda_timeout"]
        [event] = scheduled["Events"].values()
        assert event == {"Type": "Schedule", "Properties": {"Schedule": expression}}
    cfn_lint = Path(sys.executable).with_name("cfn-lint")
    result = subprocess.run(  # noqa: S603 - the linter from our own venv
        [str(cfn_lint), str(out / "sam.json")], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stdout + result.stderr
