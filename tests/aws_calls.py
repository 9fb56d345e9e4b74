"""Record the AWS operations code really sends, map each to the IAM permissions it needs, and evaluate
an identity policy document against them.

`CallRecorder` hooks every botocore client created while it is installed (by patching
`botocore.session.Session.create_client`, which both `chalicelib.aws.client` and boto3 go through)
and records each request at `before-send`, i.e. what actually goes on the wire, once per attempt.

The evaluator covers the subset of IAM the stage policies use: `Allow` statements with `Action` and
`Resource` (strings or lists, `*`/`?` wildcards). Anything else (Deny, NotAction, NotResource,
Condition, policy variables) is refused rather than evaluated approximately.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import json
import re
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import botocore.session
import pytest

ROOT = Path(__file__).resolve().parent.parent
APP_SOURCES = (ROOT / "app.py", ROOT / "chalicelib")
FAKE_ACCOUNT = "123456789012"
REGION = "us-east-1"
# One stage's CI bootstrap: its deploy role, and its functions' roles and their policy.
BOOTSTRAP: dict[str, Any] = json.loads((ROOT / "infra" / "deploy-role.json").read_text())
REPOSITORY = "example-org/vod-upload-backend"  # the bootstrap's GitHubRepository in these tests

# -- recording -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AwsCall:
    service: str  # botocore service name: "dynamodb", "secretsmanager"
    operation: str  # API operation: "TransactWriteItems"
    params: Mapping[str, Any]  # the API parameters as the code passed them
    region: str
    origin: str | None  # innermost app function that made the call, e.g. "IntentStorage.create_intent"
    route: str | None  # "POST /uploads" while a route's view was running


def _is_app_file(filename: str) -> bool:
    path = Path(filename)
    return any(path == source or source in path.parents for source in APP_SOURCES)


def _app_origin() -> str | None:
    """The innermost public function of app.py/chalicelib on the current stack (helpers such as
    `Repository._call` are skipped in favour of their caller, when there is one)."""
    frame = sys._getframe(1)
    fallback = None
    while frame is not None:
        code = frame.f_code
        if _is_app_file(code.co_filename):
            name = code.co_qualname
            if not name.rsplit(".", 1)[-1].startswith("_"):
                return name
            fallback = fallback or name
        frame = frame.f_back  # type: ignore[assignment]
    return fallback


@dataclass
class CallRecorder:
    calls: list[AwsCall] = field(default_factory=list)
    routes: set[tuple[str, str]] = field(default_factory=set)  # (method, path) whose view ran
    unattributed: list[str] = field(default_factory=list)  # requests sent without our params hook
    _route: str | None = None

    def hook(self, client: Any) -> None:
        client.meta.events.register("before-parameter-build", self._keep_params)
        client.meta.events.register("before-send", self._record)

    def _keep_params(self, params: Mapping[str, Any], model: Any, context: dict[str, Any], **_: Any) -> None:
        context["_iam_recorder"] = (
            model.service_model.service_name,
            model.name,
            copy.deepcopy(dict(params)),
            context.get("client_region"),
            _app_origin(),
            self._route,
        )

    def _record(self, request: Any, event_name: str, **_: Any) -> None:
        kept = (getattr(request, "context", None) or {}).get("_iam_recorder")
        if kept is None:
            self.unattributed.append(event_name)
            return
        self.calls.append(AwsCall(*kept))

    @contextlib.contextmanager
    def installed(self) -> Iterator[CallRecorder]:
        """Hook every botocore client created from now on (the caller must make sure the code under test
        creates its clients inside: `chalicelib.container.reset()` drops the cached ones)."""
        original = botocore.session.Session.create_client
        recorder = self

        @functools.wraps(original)
        def create_client(session: Any, *args: Any, **kwargs: Any) -> Any:
            client = original(session, *args, **kwargs)
            recorder.hook(client)
            return client

        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(botocore.session.Session, "create_client", create_client)
            yield self

    @contextlib.contextmanager
    def watching_routes(self, app: Any) -> Iterator[CallRecorder]:
        """Wrap every route's view: note that it ran, and attribute the calls made meanwhile to it."""
        with pytest.MonkeyPatch.context() as patch:
            for path, methods in app.routes.items():
                for method, entry in methods.items():
                    patch.setattr(entry, "view_function", self._watched(entry.view_function, method, path))
            yield self

    def _watched(self, view: Callable[..., Any], method: str, path: str) -> Callable[..., Any]:
        @functools.wraps(view)
        def watched(*args: Any, **kwargs: Any) -> Any:
            self.routes.add((method, path))
            outer, self._route = self._route, f"{method} {path}"
            try:
                return view(*args, **kwargs)
            finally:
                self._route = outer

        return watched


# -- operations -> IAM permissions ----------------------------------------------------------------------


@dataclass(frozen=True, order=True)
class Permission:
    action: str  # "dynamodb:PutItem"
    resource: str  # an ARN


@dataclass(frozen=True)
class StageResources:
    """What a stage's code may touch: its table (and that table's indexes) and its secret."""

    stage: str
    function_name: str
    table: str
    secret: str
    region: str = "us-east-1"
    account: str = FAKE_ACCOUNT

    def table_arn(self, index: str | None = None) -> str:
        arn = f"arn:aws:dynamodb:{self.region}:{self.account}:table/{self.table}"
        return arn if index is None else f"{arn}/index/{index}"

    def secret_arn(self) -> str:
        # Secrets Manager appends "-" and six random characters to a secret's name in its ARN.
        return f"arn:aws:secretsmanager:{self.region}:{self.account}:secret:{self.secret}-Ab12Cd"

    def log_group_arn(self) -> str:
        return f"arn:aws:logs:{self.region}:{self.account}:log-group:/aws/lambda/{self.function_name}"


# A transaction is authorised per item, on the item's table (there is no dynamodb:TransactWriteItems).
_TRANSACT_WRITE_ACTIONS = {
    "Put": "dynamodb:PutItem",
    "Update": "dynamodb:UpdateItem",
    "Delete": "dynamodb:DeleteItem",
    "ConditionCheck": "dynamodb:ConditionCheckItem",
}
_TABLE_ITEM_OPERATIONS = frozenset({"GetItem", "PutItem", "UpdateItem", "DeleteItem", "DescribeTable"})
_TABLE_OR_INDEX_OPERATIONS = frozenset({"Query", "Scan"})
_BATCH_OPERATIONS = frozenset({"BatchGetItem", "BatchWriteItem"})  # actions of their own, per table


class UnmappedOperation(AssertionError):
    """An operation this module does not know the IAM permissions of: add it to `required_permissions`."""


def required_permissions(call: AwsCall, recorded: StageResources, target: StageResources) -> list[Permission]:
    """The permissions `call` needs, on `target`'s resources. `recorded` names the resources the
    recording run used (a test table, a test secret): the call must have touched only those."""

    def table(name: str) -> str:
        if name != recorded.table:
            raise AssertionError(f"{call.operation} touched table {name!r}, not the stage's {recorded.table!r}")
        return target.table

    def table_arn(name: str, index: str | None = None) -> str:
        table(name)
        return target.table_arn(index)

    op, params = call.operation, call.params
    if call.service == "dynamodb":
        if op in _TABLE_ITEM_OPERATIONS:
            return [Permission(f"dynamodb:{op}", table_arn(params["TableName"]))]
        if op in _TABLE_OR_INDEX_OPERATIONS:
            return [Permission(f"dynamodb:{op}", table_arn(params["TableName"], params.get("IndexName")))]
        if op == "TransactWriteItems":
            permissions = []
            for item in params["TransactItems"]:
                [(kind, request)] = item.items()
                permissions.append(Permission(_TRANSACT_WRITE_ACTIONS[kind], table_arn(request["TableName"])))
            return permissions
        if op == "TransactGetItems":
            return [
                Permission("dynamodb:GetItem", table_arn(item["Get"]["TableName"])) for item in params["TransactItems"]
            ]
        if op in _BATCH_OPERATIONS:
            return [Permission(f"dynamodb:{op}", table_arn(name)) for name in params["RequestItems"]]
    if call.service == "secretsmanager" and op in ("GetSecretValue", "DescribeSecret"):
        secret_id = params["SecretId"]
        if secret_id != recorded.secret:
            raise AssertionError(f"{op} read secret {secret_id!r}, not the stage's {recorded.secret!r}")
        return [Permission(f"secretsmanager:{op}", target.secret_arn())]
    raise UnmappedOperation(f"no IAM mapping for {call.service}.{op}: add it to tests/aws_calls.py")


def runtime_permissions(target: StageResources) -> list[Permission]:
    """What the Lambda runtime itself does with the function's role (not a botocore call of ours):
    write the function's logs."""
    stream = f"{target.log_group_arn()}:log-stream:2026/01/01/[$LATEST]0123456789abcdef"
    return [
        Permission("logs:CreateLogGroup", target.log_group_arn()),
        Permission("logs:CreateLogStream", stream),
        Permission("logs:PutLogEvents", stream),
    ]


# -- the bootstrap template, as CloudFormation makes it for one stage -------------------------------------


def bootstrap_names(stage: str) -> dict[str, str]:
    """What `${…}` and `Ref` stand for in the bootstrap stack of `stage`, in this tests' account and region."""
    defaults = {name: spec["Default"] for name, spec in BOOTSTRAP["Parameters"].items() if "Default" in spec}
    return {
        **defaults,
        "Stage": stage,
        "GitHubRepository": REPOSITORY,
        "AWS::Partition": "aws",
        "AWS::Region": REGION,
        "AWS::AccountId": FAKE_ACCOUNT,
    }


def resolved(value: Any, stage: str) -> Any:
    """`value` (a policy document, or part of one) with Fn::Sub, Ref and a role's Fn::GetAtt Arn resolved."""
    if isinstance(value, list):
        return [resolved(item, stage) for item in value]
    if not isinstance(value, dict):
        return value
    names = bootstrap_names(stage)
    if set(value) == {"Fn::Sub"} and isinstance(value["Fn::Sub"], str):
        return re.sub(r"\$\{([\w:]+)\}", lambda match: names[match.group(1)], value["Fn::Sub"])
    if set(value) == {"Ref"}:
        return names[value["Ref"]]
    if set(value) == {"Fn::GetAtt"}:
        logical_id, attribute = value["Fn::GetAtt"]
        resource = BOOTSTRAP["Resources"][logical_id]
        if resource["Type"] != "AWS::IAM::Role" or attribute != "Arn":
            raise UnsupportedPolicy(f"Fn::GetAtt {logical_id}.{attribute} is not modelled")
        return f"arn:aws:iam::{FAKE_ACCOUNT}:role/{resolved(resource['Properties']['RoleName'], stage)}"
    if any(key.startswith("Fn::") for key in value):
        raise UnsupportedPolicy(f"intrinsic function not modelled: {value!r}")
    return {key: resolved(item, stage) for key, item in value.items()}


def function_policy(stage: str) -> dict[str, Any]:
    """The policy of the stage's Lambda functions' roles (the bootstrap's FunctionPolicy)."""
    document: dict[str, Any] = resolved(BOOTSTRAP["Resources"]["FunctionPolicy"]["Properties"]["PolicyDocument"], stage)
    return document


# -- policy evaluation ----------------------------------------------------------------------------------


class UnsupportedPolicy(AssertionError):
    """The document uses IAM features this evaluator does not model; extend it before trusting it."""


def _as_list(value: str | Sequence[str]) -> list[str]:
    return [value] if isinstance(value, str) else list(value)


def statements(policy: Mapping[str, Any]) -> list[dict[str, Any]]:
    if policy.get("Version") != "2012-10-17":
        raise UnsupportedPolicy(f"policy Version {policy.get('Version')!r}")
    raw = policy["Statement"]
    result = []
    for statement in [raw] if isinstance(raw, dict) else raw:
        unknown = set(statement) - {"Sid", "Effect", "Action", "Resource"}
        if unknown or statement.get("Effect") != "Allow" or "Action" not in statement or "Resource" not in statement:
            raise UnsupportedPolicy(f"statement {statement.get('Sid')!r}: only Allow + Action + Resource is modelled")
        for pattern in _as_list(statement["Action"]) + _as_list(statement["Resource"]):
            if "${" in pattern:
                raise UnsupportedPolicy(f"policy variable in {pattern!r}")
        result.append(statement)
    return result


def _wildcard(pattern: str, *, cross: bool = True) -> str:
    """IAM wildcards as a regex: `*` any run of characters, `?` one character, all else literal."""
    any_run, one = (".*", ".") if cross else ("[^:]*", "[^:]")
    return "".join(any_run if c == "*" else one if c == "?" else re.escape(c) for c in pattern)


def action_matches(pattern: str, action: str) -> bool:
    return re.fullmatch(_wildcard(pattern), action, re.IGNORECASE) is not None  # action names ignore case


def resource_matches(pattern: str, arn: str) -> bool:
    """Segment by segment: partition, service, region and account wildcards stay within their segment;
    the resource part (which may itself hold ':' and '/') is matched as a whole."""
    if pattern == "*":
        return True
    pattern_parts, arn_parts = pattern.split(":", 5), arn.split(":", 5)
    if len(pattern_parts) != 6 or len(arn_parts) != 6:
        return False
    head = all(
        re.fullmatch(_wildcard(p, cross=False), a) is not None
        for p, a in zip(pattern_parts[:5], arn_parts[:5], strict=True)
    )
    return head and re.fullmatch(_wildcard(pattern_parts[5]), arn_parts[5]) is not None


def is_allowed(policy: Mapping[str, Any], permission: Permission) -> bool:
    return any(
        any(action_matches(a, permission.action) for a in _as_list(s["Action"]))
        and any(resource_matches(r, permission.resource) for r in _as_list(s["Resource"]))
        for s in statements(policy)
    )


def denied(policy: Mapping[str, Any], permissions: Iterable[Permission]) -> list[Permission]:
    return sorted({p for p in permissions if not is_allowed(policy, p)})


def without_action(policy: Mapping[str, Any], action: str) -> dict[str, Any]:
    """A copy of `policy` from which the literal `action` is removed from every statement (statements
    left without actions are dropped). An action granted through a wildcard stays granted."""
    copied = copy.deepcopy(dict(policy))
    kept = []
    for statement in statements(copied):
        actions = [a for a in _as_list(statement["Action"]) if a.lower() != action.lower()]
        if actions:
            kept.append({**statement, "Action": actions})
    copied["Statement"] = kept
    return copied


def unused_grants(policy: Mapping[str, Any], needed: Iterable[Permission]) -> list[str]:
    """Every (statement, action pattern, resource pattern) that no needed permission falls under."""
    needed = list(needed)
    unused = []
    for statement in statements(policy):
        for action in _as_list(statement["Action"]):
            for resource in _as_list(statement["Resource"]):
                if not any(action_matches(action, p.action) and resource_matches(resource, p.resource) for p in needed):
                    unused.append(f"{statement.get('Sid', '?')}: {action} on {resource}")
    return unused
