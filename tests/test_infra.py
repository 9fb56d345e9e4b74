"""The stage's stacks (infra/stage.json, infra/data.json): they lint, they make what the app and its IAM policies
expect, and the secret they generate yields working service secrets."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from chalicelib import observability
from chalicelib.credentials import STAGE_KEY, ServiceSecrets, derive_from_stage_key
from chalicelib.errors import ServiceUnavailable
from deploy import stack as stack_module
from deploy.stage import self_signup
from tests.aws_calls import function_policy

ROOT = Path(__file__).resolve().parent.parent
TEMPLATES = sorted((ROOT / "infra").glob("*.json"))
STAGE = json.loads((ROOT / "infra" / "stage.json").read_text())
DATA = json.loads((ROOT / "infra" / "data.json").read_text())
CHALICE = json.loads((ROOT / ".chalice" / "config.json").read_text())


def test_every_template_passes_cfn_lint() -> None:
    assert TEMPLATES
    cfn_lint = Path(sys.executable).with_name("cfn-lint")
    result = subprocess.run(  # noqa: S603 - the linter from our own venv
        [str(cfn_lint), *map(str, TEMPLATES)], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stdout + result.stderr


def substituted(value: Any, **parameters: str) -> str:
    assert set(value) == {"Fn::Sub"}
    return re.sub(r"\$\{(\w+)\}", lambda m: parameters[m.group(1)], value["Fn::Sub"])


@pytest.mark.parametrize("stage", ["dev", "prod"])
def test_names_are_the_ones_the_stage_config_and_its_policy_use(stage: str) -> None:
    env = CHALICE["stages"][stage]["environment_variables"]
    app_name = STAGE["Parameters"]["AppName"]["Default"]
    resources = STAGE["Resources"]
    table = substituted(DATA["Resources"]["Table"]["Properties"]["TableName"], AppName=app_name, Stage=stage)
    assert table == env["TABLE_NAME"] == stack_module.table_name(stage)
    assert DATA["Parameters"]["AppName"] == STAGE["Parameters"]["AppName"]
    assert substituted(resources["Secret"]["Properties"]["Name"], AppName=app_name, Stage=stage) == env["SECRET_NAME"]
    policy = json.dumps(function_policy(stage))  # the functions' roles' (the stage's bootstrap stack)
    assert f"table/{env['TABLE_NAME']}" in policy and f"secret:{env['SECRET_NAME']}-" in policy


@pytest.mark.parametrize("stage", ["dev", "prod"])
def test_the_alarms_watch_the_metrics_the_app_emits_and_the_consumer_function(stage: str) -> None:
    app_name = STAGE["Parameters"]["AppName"]["Default"]
    alarms = {k: r["Properties"] for k, r in STAGE["Resources"].items() if r["Type"] == "AWS::CloudWatch::Alarm"}
    assert set(alarms) == {"ParkedEventsAlarm", "ConsumerErrorsAlarm", "ConsumerFailuresAlarm"}
    app_source = (ROOT / "app.py").read_text()
    for logical_id in ("ParkedEventsAlarm", "ConsumerErrorsAlarm"):
        alarm = alarms[logical_id]
        assert alarm["Namespace"] == observability.NAMESPACE
        assert f'observability.count("{alarm["MetricName"]}"' in app_source, logical_id
        dimensions = {d["Name"]: d["Value"] for d in alarm["Dimensions"]}
        assert dimensions == {"stage": {"Ref": "Stage"}, "service": observability.SERVICE}
    [function] = alarms["ConsumerFailuresAlarm"]["Dimensions"]
    assert (
        substituted(function["Value"], AppName=app_name, Stage=stage)
        == f"{CHALICE['app_name']}-{stage}-pull_vod_events"
    )
    for alarm in alarms.values():
        assert substituted(alarm["AlarmName"], AppName=app_name, Stage=stage).startswith(f"{app_name}-{stage}-")
        assert alarm["AlarmActions"] == {
            "Fn::If": ["NotifyOnAlarm", [{"Ref": "AlarmTopicArn"}], {"Ref": "AWS::NoValue"}]
        }
        assert alarm["TreatMissingData"] == "notBreaching"  # no events is not an incident


def test_the_table_keeps_its_safeguards_and_the_user_pool_is_made_only_without_an_issuer() -> None:
    resources = STAGE["Resources"]
    # Its own stack, which `make destroy` keeps; retained even when that stack is deleted, and importable (an
    # IMPORT needs a DeletionPolicy, and may create nothing else: no other resource, no Outputs to resolve).
    assert set(DATA["Resources"]) == {"Table"} and "Outputs" not in DATA and "Table" not in resources
    table = DATA["Resources"]["Table"]
    assert table["DeletionPolicy"] == table["UpdateReplacePolicy"] == "Retain"
    assert STAGE["Conditions"]["MakeUserPool"] == {"Fn::Equals": [{"Ref": "OidcIssuer"}, ""]}
    assert resources["UserPool"]["Condition"] == resources["UserPoolClient"]["Condition"] == "MakeUserPool"
    assert resources["UserPoolClient"]["Properties"]["GenerateSecret"] is False  # a browser or app client
    bucket = resources["StateBucket"]["Properties"]
    assert all(bucket["PublicAccessBlockConfiguration"].values())


def test_the_generated_secret_holds_no_real_value_and_makes_the_stage_key() -> None:
    generated = STAGE["Resources"]["Secret"]["Properties"]["GenerateSecretString"]
    assert json.loads(generated["SecretStringTemplate"]) == {"VOD_SECRET_ID": "", "VOD_SECRET_KEY": ""}
    assert generated["GenerateStringKey"] == STAGE_KEY
    assert generated["PasswordLength"] >= 64 and generated["ExcludePunctuation"] is True


def test_the_stage_key_yields_every_derived_secret_and_explicit_values_win() -> None:
    created = {"VOD_SECRET_ID": "AKIDoperator", "VOD_SECRET_KEY": "operator-key", STAGE_KEY: "k" * 64}
    secrets = ServiceSecrets.from_mapping(created, "test")
    derived = derive_from_stage_key("k" * 64)
    assert secrets.context_tag_key == derived["CONTEXT_TAG_KEY"].encode()
    assert secrets.callback_token == derived["VOD_CALLBACK_TOKEN"]
    assert secrets.sign_key == derived["VOD_SIGN_KEY"]
    assert re.fullmatch(r"[A-Za-z0-9]{32}", derived["VOD_SIGN_KEY"])  # what VOD's ModifyEventConfig takes
    assert re.fullmatch(r"[A-Za-z0-9_-]{43}", derived["VOD_CALLBACK_TOKEN"])  # a URL path segment
    assert len(set(derived.values())) == 3
    assert derive_from_stage_key("k" * 63 + "j") != derived
    explicit = ServiceSecrets.from_mapping({**created, "VOD_SIGN_KEY": "ExplicitKey1"}, "test")
    assert explicit.sign_key == "ExplicitKey1" and explicit.callback_token == derived["VOD_CALLBACK_TOKEN"]


def test_a_fresh_stage_secret_is_unusable_until_the_operator_adds_the_vod_keys() -> None:
    with pytest.raises(ServiceUnavailable, match="VOD_SECRET_ID, VOD_SECRET_KEY"):
        ServiceSecrets.from_mapping({"VOD_SECRET_ID": "", "VOD_SECRET_KEY": "", STAGE_KEY: "k" * 64}, "test")


def test_sign_up_is_closed_unless_the_stage_config_opens_it() -> None:
    assert STAGE["Parameters"]["SelfSignUp"]["Default"] == "false"
    assert STAGE["Conditions"]["OpenSignUp"] == {"Fn::Equals": [{"Ref": "SelfSignUp"}, "true"]}
    admin_only = STAGE["Resources"]["UserPool"]["Properties"]["AdminCreateUserConfig"]["AllowAdminCreateUserOnly"]
    assert admin_only == {"Fn::If": ["OpenSignUp", False, True]}
    for stage in ("dev", "prod"):
        assert self_signup(CHALICE["stages"][stage]["environment_variables"]) is False
    assert self_signup({"SELF_SIGNUP": "true"}) is True and self_signup({"SELF_SIGNUP": "false"}) is False
    with pytest.raises(ValueError, match="SELF_SIGNUP must be true or false, not 'yes'"):
        self_signup({"SELF_SIGNUP": "yes"})
