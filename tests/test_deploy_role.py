"""The CI deploy role (infra/deploy-role.json): only GitHub deploy jobs of one repository can assume it,
and it allows exactly what a deploy and a destroy do, on this app's resources.

What a deploy does is derived, not copied, wherever a source says it:

- `chalice deploy` / `chalice delete`: for each resource chalice builds from this app (its application
  graph, built from .chalice/config.json as chalice does), the TypedAWSClient methods chalice's planner,
  remote-state check and sweeper name for that resource type; from those, every `self._client('svc').op`
  and `client.op` they reach in chalice/awsclient.py (following calls between its methods, resolving
  waiters through botocore), mapped to IAM actions through botocore's service models.
- CloudFormation on infra/stage.json: it creates the resources with the caller's credentials, so for each
  resource the role needs what that type's handler calls. The handlers' permission lists come from the
  resource-provider schemas cfn-lint ships: the read handler in full (a resource is read back after every
  create and update), the delete handler unless the resource is retained, and the create/update actions
  of the properties the template sets (PROPERTY_ACTIONS; each must be one the schema lists).
- The deploy script's own calls (deploy/*.py) are listed by hand in `script_needs`.

Then: every needed action is allowed on the stage's real resource names, for dev and prod, and every grant
of the role is needed by one of them.

Last, `chalice package` for dev and prod makes a SAM template that passes cfn-lint.
"""

from __future__ import annotations

import ast
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

from deploy.stack import stack_name
from deploy.stage import state_key
from tests.aws_calls import FAKE_ACCOUNT, action_matches, resource_matches

ROOT = Path(__file__).resolve().parent.parent
TEMPLATE: dict[str, Any] = json.loads((ROOT / "infra" / "deploy-role.json").read_text())
STAGE_TEMPLATE: dict[str, Any] = json.loads((ROOT / "infra" / "stage.json").read_text())
CHALICE_CONFIG: dict[str, Any] = json.loads((ROOT / ".chalice" / "config.json").read_text())
CHALICE_SOURCE = Path(chalice.__file__).parent
CFN_LINT_DATA = Path(cfnlint.__file__).parent / "data"

REGION = "us-east-1"
STAGES = ("dev", "prod")
REPOSITORY = "example-org/vod-upload-backend"
PARAMETERS = {
    **{name: spec.get("Default") for name, spec in TEMPLATE["Parameters"].items()},
    "GitHubRepository": REPOSITORY,
}
PSEUDO_PARAMETERS = {"AWS::Partition": "aws", "AWS::Region": REGION, "AWS::AccountId": FAKE_ACCOUNT}
GITHUB = "token.actions.githubusercontent.com"

ROLE = TEMPLATE["Resources"]["DeployRole"]


def resolve(value: Any) -> str:
    """A policy string as IAM sees it, with this test's parameters and account."""
    if isinstance(value, str):
        return value
    if set(value) == {"Fn::Sub"} and isinstance(value["Fn::Sub"], str):
        names = {**PARAMETERS, **PSEUDO_PARAMETERS}
        return re.sub(r"\$\{([\w:]+)\}", lambda match: str(names[match.group(1)]), value["Fn::Sub"])
    if set(value) == {"Ref"} and value["Ref"] in PARAMETERS:
        return str(PARAMETERS[value["Ref"]])
    raise AssertionError(f"not modelled in a policy: {value!r}")


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def role_statements() -> list[dict[str, Any]]:
    [policy] = ROLE["Properties"]["Policies"]
    document = policy["PolicyDocument"]
    assert document["Version"] == "2012-10-17"
    statements: list[dict[str, Any]] = document["Statement"]
    return statements


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
    context = dict(need.context)
    for operator, block in statement.get("Condition", {}).items():
        if operator not in ("StringEquals", "StringLike"):
            raise AssertionError(f"condition operator {operator} is not modelled")
        for key, expected in block.items():
            if key not in context:
                return False
            patterns = [resolve(item) for item in as_list(expected)]
            if operator == "StringEquals" and context[key] not in patterns:
                return False
            if operator == "StringLike" and not any(_like(pattern, context[key]) for pattern in patterns):
                return False
    return True


def statement_allows(statement: Mapping[str, Any], need: Need) -> bool:
    if statement["Effect"] != "Allow" or {"NotAction", "NotResource", "NotPrincipal"} & set(statement):
        raise AssertionError(f"statement {statement.get('Sid')}: only Allow + Action + Resource is modelled")
    return (
        any(action_matches(action, need.action) for action in as_list(statement["Action"]))
        and any(resource_matches(resolve(resource), need.resource) for resource in as_list(statement["Resource"]))
        and _conditions_hold(statement, need)
    )


def allowed(need: Need, statements: Iterable[Mapping[str, Any]] | None = None) -> bool:
    return any(statement_allows(statement, need) for statement in statements or role_statements())


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
        "table": arn("dynamodb", f"table/{app}-{stage}"),
        "secret": arn("secretsmanager", f"secret:{app}/{stage}-Ab12Cd"),
        "bucket": arn("s3", bucket, region=False, account=False),
        "state": arn("s3", f"{bucket}/{state_key(stage)}", region=False, account=False),
        "user_pool": arn("cognito-idp", f"userpool/{REGION}_AbCdEf123"),
    }


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


def planned_calls(function: ast.FunctionDef) -> set[str]:
    """The TypedAWSClient methods an instruction list names: `APICall(method_name='…')`."""
    return {
        keyword.value.value
        for node in ast.walk(function)
        if isinstance(node, ast.Call)
        for keyword in node.keywords
        if keyword.arg == "method_name" and isinstance(keyword.value, ast.Constant)
        if isinstance(keyword.value.value, str)
    }


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
    """TypedAWSClient method -> the chalice function that uses it for one of this app's resources."""
    sources = {
        "PlanStage": class_methods("deploy/planner.py", "PlanStage"),
        "RemoteState": class_methods("deploy/planner.py", "RemoteState"),
        "ResourceSweeper": class_methods("deploy/sweeper.py", "ResourceSweeper"),
        "Executor": class_methods("deploy/executor.py", "Executor"),
    }
    uses: list[tuple[str, str, Callable[[ast.FunctionDef], set[str]]]] = [
        ("RemoteState", "resource_deployed_values", direct_client_calls),
        ("RemoteState", "_dynamically_lookup_values", direct_client_calls),
        ("Executor", "_do_builtinfunction", direct_client_calls),
    ]
    for resource in chalice_resources(stage):
        kind = type(resource).__name__.lower()
        uses += [
            ("PlanStage", f"_plan_{kind}", planned_calls),
            ("RemoteState", f"_resource_exists_{kind}", direct_client_calls),
            ("ResourceSweeper", f"_delete_{resource.resource_type}", planned_calls),
        ]
    entries: dict[str, str] = {}
    for cls, name, find in uses:
        assert name in sources[cls], f"chalice has no {cls}.{name}: this analysis does not know that resource type"
        for method in find(sources[cls][name]):
            entries.setdefault(method, f"{cls}.{name}")
    # _plan_lambdafunction names both; a function's reserved_concurrency decides which one is planned.
    functions = [r for r in chalice_resources(stage) if isinstance(r, models.LambdaFunction)]
    if all(f.reserved_concurrency is None for f in functions):
        del entries["put_function_concurrency"]
    if all(f.reserved_concurrency is not None for f in functions):
        del entries["delete_function_concurrency"]
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
    roles = [r.role_name for r in resources if isinstance(r, models.ManagedIAMRole)]
    functions = [r.function_name for r in resources if isinstance(r, models.LambdaFunction)]
    assert roles and functions
    needs: list[Need] = []
    for call in sorted(client_calls(chalice_entry_points(stage))):
        operation = operation_of(call)
        why = f"chalice TypedAWSClient.{call.via}: {call.service}.{operation.name}"
        if call.service == "lambda":
            needs += [Need(f"lambda:{operation.name}", arn("lambda", f"function:{f}"), why=why) for f in functions]
        elif call.service == "iam":
            assert "Role" in operation.name, f"{why}: not an operation on a role"
            needs += [Need(f"iam:{operation.name}", arn("iam", f"role/{r}", region=False), why=why) for r in roles]
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
        needs += [Need("iam:PassRole", arn("iam", f"role/{r}", region=False), passed, why) for r in roles]
    if "lambda:CreateFunction" in actions:
        assert all(r.tags for r in resources if isinstance(r, models.LambdaFunction))
        why = "Lambda: CreateFunction with Tags"
        needs += [Need("lambda:TagResource", arn("lambda", f"function:{f}"), why=why) for f in functions]
    return needs


# -- CloudFormation on infra/stage.json -----------------------------------------------------------------

# The create/update actions each property of infra/stage.json needs of its resource's handler; "" is what
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
}
# Delete-handler actions for what infra/stage.json does not use.
UNUSED_DELETE_ACTIONS = {"secretsmanager:RemoveRegionsFromReplication": "the secret has no ReplicaRegions"}
SERVICE = {
    "AWS::DynamoDB::Table": ("dynamodb", "table"),
    "AWS::SecretsManager::Secret": ("secretsmanager", "secret"),
    "AWS::S3::Bucket": ("s3", "bucket"),
    "AWS::Cognito::UserPool": ("cognito-idp", "user_pool"),
    "AWS::Cognito::UserPoolClient": ("cognito-idp", "user_pool"),
}


def cloudformation_needs(stage: str) -> list[Need]:
    names = stage_names(stage)
    needs = []
    for logical_id, resource in STAGE_TEMPLATE["Resources"].items():
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
            target = names[name] if resource_types(action) else "*"
            needs.append(Need(action, target, tags_of(target, stage), f"CloudFormation, {logical_id} ({kind})"))
    return needs


# -- deploy/*.py -----------------------------------------------------------------------------------------


def script_needs(stage: str) -> list[Need]:
    """The deploy script's own calls. sts:GetCallerIdentity (preflight) is left out: it needs no permission."""
    n = stage_names(stage)
    any_key = n["bucket"] + "/any/key"
    listed = [
        ("cloudformation:DescribeStacks", n["stack"], "deploy/stack.py: describe, and the stack waiters"),
        ("cloudformation:CreateStack", n["stack"], "deploy/stack.py: apply"),
        ("cloudformation:UpdateStack", n["stack"], "deploy/stack.py: apply"),
        ("cloudformation:DeleteStack", n["stack"], "deploy/stack.py: delete (destroy)"),
        ("cloudformation:DescribeStackEvents", n["stack"], "deploy/stack.py: why a stack failed"),
        ("cloudformation:ValidateTemplate", "*", "deploy/preflight.py: infra/stage.json before any change"),
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
    function = arn("lambda", f"function:{CHALICE_CONFIG['app_name']}-{stage}")
    listed.append(("lambda:GetFunctionConfiguration", function, "the deployed function's configuration"))
    return [Need(action, resource, tags_of(resource, stage), why) for action, resource, why in listed]


def all_needs(stage: str) -> list[Need]:
    return chalice_needs(stage) + cloudformation_needs(stage) + script_needs(stage)


# -- the trust policy --------------------------------------------------------------------------------------


def test_only_github_deploy_jobs_of_the_repository_can_assume_the_role() -> None:
    [statement] = ROLE["Properties"]["AssumeRolePolicyDocument"]["Statement"]
    assert statement["Effect"] == "Allow"
    assert statement["Action"] == "sts:AssumeRoleWithWebIdentity"
    assert statement["Principal"] == {
        "Federated": {"Fn::If": ["MakeOidcProvider", {"Ref": "GitHubOidcProvider"}, {"Ref": "GitHubOidcProviderArn"}]}
    }
    assert statement["Condition"] == {
        "StringEquals": {f"{GITHUB}:aud": "sts.amazonaws.com"},
        "StringLike": {f"{GITHUB}:sub": {"Fn::Sub": "repo:${GitHubRepository}:environment:*"}},
    }

    def may_assume(sub: str, aud: str = "sts.amazonaws.com") -> bool:
        token = Need("sts:AssumeRoleWithWebIdentity", "*", ((f"{GITHUB}:aud", aud), (f"{GITHUB}:sub", sub)))
        return _conditions_hold(statement, token)

    assert may_assume(f"repo:{REPOSITORY}:environment:prod")
    assert may_assume(f"repo:{REPOSITORY}:environment:dev")
    assert not may_assume(f"repo:{REPOSITORY}:ref:refs/heads/main")  # a job outside any environment
    assert not may_assume(f"repo:{REPOSITORY}:pull_request")
    assert not may_assume("repo:someone-else/fork:environment:prod")
    assert not may_assume(f"repo:{REPOSITORY}:environment:prod", aud="https://github.com/example-org")


def test_the_oidc_provider_is_github_and_is_made_only_when_none_is_named() -> None:
    assert TEMPLATE["Conditions"]["MakeOidcProvider"] == {"Fn::Equals": [{"Ref": "GitHubOidcProviderArn"}, ""]}
    provider = TEMPLATE["Resources"]["GitHubOidcProvider"]
    assert provider["Condition"] == "MakeOidcProvider"
    assert provider["Properties"]["Url"] == f"https://{GITHUB}"
    assert provider["Properties"]["ClientIdList"] == ["sts.amazonaws.com"]
    assert TEMPLATE["Parameters"]["GitHubOidcProviderArn"]["Default"] == ""


def test_the_template_makes_no_user_and_no_key() -> None:
    kinds = {resource["Type"] for resource in TEMPLATE["Resources"].values()}
    assert kinds == {"AWS::IAM::Role", "AWS::IAM::OIDCProvider"}
    assert set(TEMPLATE["Outputs"]) == {"RoleArn"}
    assert TEMPLATE["Outputs"]["RoleArn"]["Value"] == {"Fn::GetAtt": ["DeployRole", "Arn"]}


def test_the_names_default_to_the_ones_the_stage_stack_and_chalice_use() -> None:
    assert PARAMETERS["AppName"] == STAGE_TEMPLATE["Parameters"]["AppName"]["Default"]
    assert (
        TEMPLATE["Parameters"]["AppName"]["AllowedPattern"] == STAGE_TEMPLATE["Parameters"]["AppName"]["AllowedPattern"]
    )
    assert PARAMETERS["ChaliceAppName"] == CHALICE_CONFIG["app_name"]


# -- the permissions ---------------------------------------------------------------------------------------


def test_no_statement_grants_every_action_or_a_whole_service() -> None:
    for statement in role_statements():
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


def test_every_resource_is_named_after_the_app_wherever_iam_allows_it() -> None:
    for statement in role_statements():
        for resource in as_list(statement["Resource"]):
            if resource == "*":
                named = {action: resource_types(action) for action in as_list(statement["Action"])}
                assert not any(named.values()), f"{statement['Sid']}: these could be named: {named}"
                continue
            assert set(resource) == {"Fn::Sub"}, f"{statement['Sid']}: {resource}"
            pattern: str = resource["Fn::Sub"]
            assert pattern.startswith("arn:${AWS::Partition}:"), pattern
            service = resolve(resource).split(":")[2]
            if service not in ("s3", "iam", "apigateway"):
                assert f":{service}:${{AWS::Region}}:${{AWS::AccountId}}:" in pattern, pattern
            if pattern not in UNNAMEABLE:
                assert re.search(r"\$\{(AppName|ChaliceAppName)\}", pattern), f"{statement['Sid']}: {pattern}"
            elif service == "cognito-idp":
                # Not by name, then by the stack that made the pool.
                condition = {"StringLike": {STACK_TAG: {"Fn::Sub": "${AppName}-*"}}}
                assert statement.get("Condition") == condition, statement["Sid"]


@pytest.mark.parametrize("stage", STAGES)
def test_the_role_allows_everything_a_deploy_and_a_destroy_do(stage: str) -> None:
    denied = [f"{need.action} on {need.resource} ({need.why})" for need in all_needs(stage) if not allowed(need)]
    assert not denied, "\n".join(denied)


def test_every_grant_of_the_role_is_needed() -> None:
    needs = [need for stage in STAGES for need in all_needs(stage)]
    unused = []
    for statement in role_statements():
        for action in as_list(statement["Action"]):
            for resource in as_list(statement["Resource"]):
                narrowed = {**statement, "Action": action, "Resource": resource}
                if not any(statement_allows(narrowed, need) for need in needs):
                    unused.append(f"{statement['Sid']}: {action} on {resolve(resource)}")
    assert not unused, "granted but needed by nothing:\n" + "\n".join(unused)


def test_removing_any_granted_action_denies_something_a_deploy_needs() -> None:
    needs = [need for stage in STAGES for need in all_needs(stage)]
    for statement in role_statements():
        for action in as_list(statement["Action"]):
            others = [
                {**s, "Action": [a for a in as_list(s["Action"]) if a != action]}
                for s in role_statements()
                if [a for a in as_list(s["Action"]) if a != action]
            ]
            assert any(not allowed(need, others) for need in needs), f"{action} is granted but never needed"


@pytest.mark.parametrize(
    ("action", "resource", "context"),
    [
        ("lambda:UpdateFunctionCode", arn("lambda", "function:another-app-prod"), ()),
        ("iam:PutRolePolicy", arn("iam", "role/OrganizationAccountAccessRole", region=False), ()),
        ("iam:PassRole", arn("iam", "role/vod-upload-backend-dev", region=False), ()),
        (
            "iam:PassRole",
            arn("iam", "role/vod-upload-backend-dev", region=False),
            (("iam:PassedToService", "ec2.amazonaws.com"),),
        ),
        ("iam:CreateUser", arn("iam", "user/vod-upload-backend-x", region=False), ()),
        ("dynamodb:DeleteTable", arn("dynamodb", "table/vod-upload-prod"), ()),  # retained, never deleted
        ("dynamodb:Scan", arn("dynamodb", "table/vod-upload-prod"), ()),  # no reading user data
        ("dynamodb:CreateTable", arn("dynamodb", "table/billing"), ()),
        ("secretsmanager:GetSecretValue", arn("secretsmanager", "secret:another-app/prod-Ab12Cd"), ()),
        ("s3:GetObject", arn("s3", "company-backups/db.dump", region=False, account=False), ()),
        ("s3:PutBucketPolicy", arn("s3", "vod-upload-prod-statebucket-1a2b3c", region=False, account=False), ()),
        ("cloudformation:DeleteStack", arn("cloudformation", "stack/network/0f1e2d3c"), ()),
        ("cognito-idp:AdminGetUser", arn("cognito-idp", "userpool/us-east-1_AbCdEf123"), ()),
        # Another app's pool: the role must not be able to sign in as its users.
        (
            "cognito-idp:AdminSetUserPassword",
            arn("cognito-idp", "userpool/us-east-1_Other"),
            ((STACK_TAG, "crm-prod"),),
        ),
        ("cognito-idp:AdminInitiateAuth", arn("cognito-idp", "userpool/us-east-1_Other"), ()),
        ("cognito-idp:DeleteUserPool", arn("cognito-idp", "userpool/us-east-1_Other"), ((STACK_TAG, "crm-prod"),)),
        ("apigateway:POST", arn("apigateway", "/domainnames", account=False), ()),
        ("apigateway:PATCH", arn("apigateway", "/account", account=False), ()),
        ("kms:Decrypt", "*", ()),
        ("sts:AssumeRole", "*", ()),
    ],
)
def test_the_role_reaches_nothing_else(action: str, resource: str, context: tuple[tuple[str, str], ...]) -> None:
    assert not allowed(Need(action, resource, context))


def test_the_inline_policy_fits_iams_limit() -> None:
    # A role's inline policies may hold 10,240 characters in all, whitespace not counted.
    statements = [
        {**s, "Resource": [resolve(r) for r in as_list(s["Resource"])], "Condition": s.get("Condition", {})}
        for s in role_statements()
    ]
    size = len(re.sub(r"\s", "", json.dumps({"Version": "2012-10-17", "Statement": statements})))
    assert size < 10_240, f"{size} characters: move statements into a managed policy before IAM refuses it"


# -- the derivations themselves ----------------------------------------------------------------------------


def test_the_chalice_analysis_finds_the_calls_of_a_deploy_and_a_delete() -> None:
    calls = {(call.service, operation_of(call).name) for call in client_calls(chalice_entry_points("dev"))}
    assert {
        ("iam", "GetRole"),
        ("iam", "CreateRole"),
        ("iam", "PutRolePolicy"),
        ("iam", "DeleteRole"),
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
    } <= calls
    assert {service for service, _ in calls} == {"iam", "lambda", "apigateway"}


def test_the_app_is_one_rest_api_function_with_its_role() -> None:
    # What chalice_needs was written for; a new kind of resource (schedule, queue, layer, domain) must be
    # mapped there (the analysis also fails on a resource type it has no plan method for).
    for stage in STAGES:
        kinds = sorted(type(resource).__name__ for resource in chalice_resources(stage))
        assert kinds == ["LambdaFunction", "ManagedIAMRole", "RestAPI"], kinds


def test_the_unused_handler_actions_left_out_are_real_handler_actions() -> None:
    delete = handler_permissions("AWS::SecretsManager::Secret")["delete"]
    assert set(UNUSED_DELETE_ACTIONS) <= delete


# -- chalice package ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def packaged(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    """`chalice package --stage <stage>` of a copy of the project (its package cache stays in the copy)."""
    project = tmp_path_factory.mktemp("package") / "project"
    project.mkdir()
    shutil.copy(ROOT / "app.py", project / "app.py")
    shutil.copy(ROOT / "requirements.txt", project / "requirements.txt")
    shutil.copytree(ROOT / "chalicelib", project / "chalicelib", ignore=shutil.ignore_patterns("__pycache__"))
    (project / ".chalice").mkdir()
    for source in (ROOT / ".chalice").glob("*.json"):
        shutil.copy(source, project / ".chalice" / source.name)
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
    [function] = [r for r in sam["Resources"].values() if r["Type"] == "AWS::Serverless::Function"]
    assert function["Properties"]["Environment"]["Variables"]["STAGE"] == stage
    [role] = [r for r in sam["Resources"].values() if r["Type"] == "AWS::IAM::Role"]
    policy_file = ROOT / ".chalice" / CHALICE_CONFIG["stages"][stage]["iam_policy_file"]
    [policy] = role["Properties"]["Policies"]
    assert policy["PolicyDocument"] == json.loads(policy_file.read_text())
    cfn_lint = Path(sys.executable).with_name("cfn-lint")
    result = subprocess.run(  # noqa: S603 - the linter from our own venv
        [str(cfn_lint), str(out / "sam.json")], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stdout + result.stderr
