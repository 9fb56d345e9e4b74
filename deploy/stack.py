"""The stage's three stacks: the stage stack (`infra/stage.json`), the data stack (`infra/data.json`, the table)
and the events stack (`infra/events.json`: the bus, and the pipe from the table's stream to it): create or
update them in that order, read their outputs, delete them.

Create and update go through CreateStack/UpdateStack and their waiters rather than change sets (see
docs/deploy-rehearsal.md). A first create that fails is deleted by CloudFormation (`OnFailure=DELETE`), so
a failed first deploy leaves nothing behind; a failed update rolls back to the previous stack.

The events stack comes last because its pipe reads the table's stream, whose ARN (it changes when a stream
is re-enabled) it is given as a parameter. `make destroy` deletes the events stack and the stage stack and
keeps the data stack, so the next deploy finds the table where it
was. A table that exists without a data stack (kept by an older `make destroy`, whose table lived in the
stage stack, or by a data stack deleted by hand: the table is retained) is adopted by the one change set
the deploy makes: an IMPORT that creates the data stack around it.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from botocore.exceptions import ClientError, WaiterError

ROOT = Path(__file__).resolve().parent.parent
TEMPLATE = ROOT / "infra" / "stage.json"
DATA_TEMPLATE = ROOT / "infra" / "data.json"
EVENTS_TEMPLATE = ROOT / "infra" / "events.json"
APP_NAME = json.loads(TEMPLATE.read_text())["Parameters"]["AppName"]["Default"]
NO_UPDATES = "No updates are to be performed"
ALWAYS_OUTPUTS = ("SecretName", "SecretArn", "StateBucket", "OidcIssuer")
USER_POOL_OUTPUTS = ("UserPoolId", "UserPoolClientId")
# Polling a real stack every few seconds for up to 30 minutes; an emulator answers on the first poll.
WAITER = {"Delay": 5, "MaxAttempts": 360}


class StackError(RuntimeError):
    pass


@dataclass(frozen=True)
class StackResult:
    name: str
    action: str  # "created", "updated" or "unchanged"
    outputs: dict[str, str]


def stack_name(stage: str) -> str:
    return f"{APP_NAME}-{stage}"


def data_stack_name(stage: str) -> str:
    return f"{APP_NAME}-{stage}-data"


def events_stack_name(stage: str) -> str:
    return f"{APP_NAME}-{stage}-events"


def outbox_pipe_role_name(stage: str) -> str:
    """The role infra/events.json's pipe runs with, made by the stage's bootstrap stack (infra/deploy-role.json)."""
    return f"{APP_NAME}-{stage}-outbox-pipe"


def table_name(stage: str) -> str:
    """The name infra/data.json gives the stage's table (`${AppName}-${Stage}`)."""
    return f"{APP_NAME}-{stage}"


def describe(cloudformation: Any, name: str) -> dict[str, Any] | None:
    """The stack, or None when there is none (a deleted stack is none)."""
    try:
        stacks = cloudformation.describe_stacks(StackName=name)["Stacks"]
    except ClientError as error:
        if "does not exist" in str(error):
            return None
        raise
    stack: dict[str, Any] = stacks[0]
    return None if stack["StackStatus"] == "DELETE_COMPLETE" else stack


def alarm_topic_is_valid(topic_arn: str) -> bool:
    """Whether the template's AlarmTopicArn accepts it (empty: no notification)."""
    pattern = json.loads(TEMPLATE.read_text())["Parameters"]["AlarmTopicArn"]["AllowedPattern"]
    return re.fullmatch(pattern, topic_arn) is not None


def apply(
    cloudformation: Any, stage: str, oidc_issuer: str, alarm_topic_arn: str = "", self_signup: bool = False
) -> StackResult:
    name = stack_name(stage)
    parameters = [
        {"ParameterKey": "AppName", "ParameterValue": APP_NAME},
        {"ParameterKey": "Stage", "ParameterValue": stage},
        {"ParameterKey": "OidcIssuer", "ParameterValue": oidc_issuer},
        {"ParameterKey": "SelfSignUp", "ParameterValue": "true" if self_signup else "false"},
        {"ParameterKey": "AlarmTopicArn", "ParameterValue": alarm_topic_arn},
    ]
    action = create_or_update(cloudformation, name, TEMPLATE.read_text(), parameters, _tags(stage))
    stack = describe(cloudformation, name)
    if stack is None:
        raise StackError(f"stack {name} vanished after {action}")
    return StackResult(name, action, checked_outputs(stack, expect_user_pool=not oidc_issuer))


def apply_data(cloudformation: Any, dynamodb: Any, stage: str) -> StackResult:
    """The data stack, created, updated, or created around the stage's table when that exists without it."""
    name, table = data_stack_name(stage), table_name(stage)
    parameters = [
        {"ParameterKey": "AppName", "ParameterValue": APP_NAME},
        {"ParameterKey": "Stage", "ParameterValue": stage},
    ]
    body = DATA_TEMPLATE.read_text()
    if describe(cloudformation, name) is None and table_exists(dynamodb, table):
        _import_table(cloudformation, name, body, parameters, table)
        # The import may change nothing else, so the stack's tags come with an update.
        create_or_update(cloudformation, name, body, parameters, _tags(stage))
        action = f"created around the existing table {table} (imported, data kept)"
    else:
        action = create_or_update(cloudformation, name, body, parameters, _tags(stage))
    return StackResult(name, action, {"TableName": table})


def apply_events(cloudformation: Any, dynamodb: Any, stage: str) -> StackResult:
    """The events stack, on the stream of the stage's table (after `apply_data`)."""
    name = events_stack_name(stage)
    parameters = [
        {"ParameterKey": "AppName", "ParameterValue": APP_NAME},
        {"ParameterKey": "Stage", "ParameterValue": stage},
        {"ParameterKey": "StreamArn", "ParameterValue": table_stream_arn(dynamodb, table_name(stage))},
    ]
    action = create_or_update(cloudformation, name, EVENTS_TEMPLATE.read_text(), parameters, _tags(stage))
    stack = describe(cloudformation, name)
    if stack is None:
        raise StackError(f"stack {name} vanished after {action}")
    outputs = {output["OutputKey"]: output["OutputValue"] for output in stack.get("Outputs", [])}
    return StackResult(name, action, outputs)


def table_stream_arn(dynamodb: Any, table: str) -> str:
    """The table's stream, switched on as infra/data.json defines it when the table has none: a table adopted by
    an IMPORT keeps the settings it had, and the update after the import changes nothing the template already
    said."""
    description = dynamodb.describe_table(TableName=table)["Table"]
    if description.get("StreamSpecification", {}).get("StreamEnabled"):
        return str(description["LatestStreamArn"])
    wanted = json.loads(DATA_TEMPLATE.read_text())["Resources"]["Table"]["Properties"]["StreamSpecification"]
    updated = dynamodb.update_table(TableName=table, StreamSpecification={"StreamEnabled": True, **wanted})
    dynamodb.get_waiter("table_exists").wait(TableName=table, WaiterConfig=WAITER)
    return str(updated["TableDescription"]["LatestStreamArn"])


def table_exists(dynamodb: Any, table: str) -> bool:
    try:
        dynamodb.describe_table(TableName=table)
    except ClientError as error:
        if error.response.get("Error", {}).get("Code") == "ResourceNotFoundException":
            return False
        raise
    return True


def _import_table(cloudformation: Any, name: str, body: str, parameters: list[dict[str, str]], table: str) -> None:
    change_set = "adopt-table"
    cloudformation.create_change_set(
        StackName=name,
        ChangeSetName=change_set,
        ChangeSetType="IMPORT",
        TemplateBody=body,
        Parameters=parameters,
        ResourcesToImport=[
            {
                "ResourceType": "AWS::DynamoDB::Table",
                "LogicalResourceId": "Table",
                "ResourceIdentifier": {"TableName": table},
            }
        ],
    )
    try:
        waiter = cloudformation.get_waiter("change_set_create_complete")
        waiter.wait(StackName=name, ChangeSetName=change_set, WaiterConfig=WAITER)
    except WaiterError as error:
        raise StackError(f"stack {name}: the change set importing table {table} failed: {error}") from None
    cloudformation.execute_change_set(StackName=name, ChangeSetName=change_set)
    _wait(cloudformation, "stack_import_complete", name)


def create_or_update(
    cloudformation: Any,
    name: str,
    body: str,
    parameters: list[dict[str, str]],
    tags: list[dict[str, str]],
    capabilities: tuple[str, ...] = (),
) -> str:
    """Creates the stack or updates it to `body`; "created", "updated" or "unchanged"."""
    common: dict[str, Any] = {"StackName": name, "TemplateBody": body, "Parameters": parameters, "Tags": tags}
    if capabilities:
        common["Capabilities"] = list(capabilities)
    if describe(cloudformation, name) is None:
        cloudformation.create_stack(**common, OnFailure="DELETE")
        _wait(cloudformation, "stack_create_complete", name)
        return "created"
    try:
        cloudformation.update_stack(**common)
    except ClientError as error:
        if NO_UPDATES not in str(error):
            raise
        return "unchanged"
    _wait(cloudformation, "stack_update_complete", name)
    return "updated"


def checked_outputs(stack: dict[str, Any], expect_user_pool: bool) -> dict[str, str]:
    """The outputs the deploy needs, refusing what an emulator that skipped a resource leaves: a missing
    output, or a `${…}` it could not substitute."""
    outputs = {output["OutputKey"]: output["OutputValue"] for output in stack.get("Outputs", [])}
    required = ALWAYS_OUTPUTS + (USER_POOL_OUTPUTS if expect_user_pool else ())
    problems = [f"output {key} is missing" for key in required if not outputs.get(key)]
    problems += [f"output {key} is not resolved: {value}" for key, value in outputs.items() if "${" in value]
    if problems:
        raise StackError(f"stack {stack['StackName']}: " + "; ".join(problems))
    return outputs


def delete(cloudformation: Any, name: str) -> bool:
    if describe(cloudformation, name) is None:
        return False
    cloudformation.delete_stack(StackName=name)
    _wait(cloudformation, "stack_delete_complete", name)
    return True


def _tags(stage: str) -> list[dict[str, str]]:
    return [{"Key": "app", "Value": APP_NAME}, {"Key": "stage", "Value": stage}]


def _wait(cloudformation: Any, waiter: str, name: str) -> None:
    try:
        cloudformation.get_waiter(waiter).wait(StackName=name, WaiterConfig=WAITER)
    except WaiterError as error:
        raise StackError(f"stack {name}: {waiter} failed: {_failure_reason(cloudformation, name) or error}") from None


def _failure_reason(cloudformation: Any, name: str) -> str | None:
    """The first failed resource of the stack's latest events, which says why far better than the status."""
    try:
        events = cloudformation.describe_stack_events(StackName=name)["StackEvents"]
    except ClientError:
        return None
    for event in events:
        if event.get("ResourceStatus", "").endswith("_FAILED"):
            return f"{event['LogicalResourceId']}: {event.get('ResourceStatusReason', event['ResourceStatus'])}"
    return None
