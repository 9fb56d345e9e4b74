"""The cost model (`make cost`, deploy/cost.py) prices what the stage is, read from its config, its Chalice
app, its stack and the code's metrics: change one of them and the line that depends on it changes."""

from __future__ import annotations

import ast
import copy
import json
from pathlib import Path
from typing import Any

import pytest
from chalice import Chalice, Rate

import app
from chalicelib import observability
from deploy import cost

CONFIG = json.loads(cost.CONFIG.read_text())
TEMPLATE = cost.stack_template()
PRICES = json.loads(cost.PRICES.read_text())
MEASURED = json.loads(cost.MEASUREMENTS.read_text())


def month(
    uploads: int = 0,
    config: dict[str, Any] = CONFIG,
    chalice_app: Chalice = app.app,
    measured: dict[str, Any] = MEASURED,
    stage: str = "prod",
) -> dict[str, float]:
    model = cost.Model(cost.read_stage(stage, config, chalice_app, TEMPLATE), measured, PRICES)
    return {line.item: line.usd for line in model.month(uploads)}


def line(lines: dict[str, float], prefix: str) -> tuple[str, float]:
    [(item, usd)] = [(item, usd) for item, usd in lines.items() if item.startswith(prefix)]
    return item, usd


def test_a_functions_memory_in_the_config_changes_its_line() -> None:
    config = copy.deepcopy(CONFIG)
    config["stages"]["prod"]["lambda_functions"]["pull_vod_events"]["lambda_memory_size"] = 512
    before_item, before = line(month(), "Lambda pull_vod_events")
    after_item, after = line(month(config=config), "Lambda pull_vod_events")
    assert "(256 MB" in before_item and "(512 MB" in after_item
    requests = 43_800 * PRICES["lambdaRequest"]["usd"]  # the same runs: only the GB-seconds double
    assert after - requests == pytest.approx(2 * (before - requests))


def test_a_schedule_on_the_chalice_app_changes_its_line() -> None:
    slower = Chalice(app_name="slower")
    for name, minutes in (("pull_vod_events", 5), ("reconcile", 60)):
        slower.schedule(Rate(minutes, unit=Rate.MINUTES), name=name)(lambda event: None)
    before_item, before = line(month(), "Lambda pull_vod_events")
    after_item, after = line(month(chalice_app=slower), "Lambda pull_vod_events")
    assert "rate(1 minute): 43,800 runs" in before_item and "rate(5 minutes): 8,760 runs" in after_item
    assert after == pytest.approx(before / 5)


def test_the_consumers_line_is_its_measured_run() -> None:
    measured = copy.deepcopy(MEASURED)
    measured["functions"]["pull_vod_events/pull"]["runSeconds"] *= 2
    requests = 43_800 * PRICES["lambdaRequest"]["usd"]
    _, before = line(month(), "Lambda pull_vod_events")
    _, after = line(month(measured=measured), "Lambda pull_vod_events")
    assert after - requests == pytest.approx(2 * (before - requests), rel=1e-3)


def test_the_event_mode_decides_what_the_consumer_and_the_api_cost() -> None:
    config = copy.deepcopy(CONFIG)
    config["stages"]["prod"]["environment_variables"]["EVENT_MODE"] = "push"
    _, pulling = line(month(10_000), "API Gateway")
    _, pushing = line(month(10_000, config=config), "API Gateway")
    assert pushing == pytest.approx(pulling + 10_000 * PRICES["apiGatewayRestRequest"]["usd"])  # one callback each
    assert line(month(config=config), "Lambda pull_vod_events")[1] < 0.05  # it returns at once


def emitted_metric_names() -> set[str]:
    """The first argument of every `observability.count(...)` call in the app's code: each must be a literal."""
    names: set[str] = set()
    for path in [Path(app.__file__), *Path(observability.__file__).parent.glob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == "count"
                and isinstance(node.func.value, ast.Name)
                and node.func.value.id == "observability"
            ):
                first = node.args[0]
                assert isinstance(first, ast.Constant) and isinstance(first.value, str), ast.dump(node)
                names.add(first.value)
    return names


def test_the_metrics_priced_are_exactly_those_the_code_emits_and_the_alarms_watch() -> None:
    alarmed = {
        resource["Properties"]["MetricName"]
        for resource in TEMPLATE["Resources"].values()
        if resource["Type"] == "AWS::CloudWatch::Alarm"
        and resource["Properties"]["Namespace"] == observability.NAMESPACE
    }
    assert emitted_metric_names() == set(observability.METRICS) == alarmed
    item, usd = line(month(), "CloudWatch custom metrics")
    assert all(name in item for name in observability.METRICS)
    assert usd == len(observability.METRICS) * PRICES["customMetricMonth"]["usd"]


def test_make_cost_prints_each_scenario_line_by_line_and_the_idle_stage_costs_little(
    capsys: pytest.CaptureFixture[str],
) -> None:
    cost.main(["--stage", "prod", "--format", "json"])
    scenarios = json.loads(capsys.readouterr().out)["scenarios"]
    assert list(scenarios) == ["idle", "10k", "1M"]
    for scenario in scenarios.values():
        assert scenario["total"] == pytest.approx(sum(entry["usd"] for entry in scenario["lines"]), abs=0.01)
    idle = {entry["item"]: entry["usd"] for entry in scenarios["idle"]["lines"]}
    assert line(idle, "Lambda pull_vod_events")[1] <= 1.00  # issue 19: the idle consumer costs cents
    for name in ("idle", "10k"):
        lines = {entry["item"]: entry["usd"] for entry in scenarios[name]["lines"]}
        assert line(lines, "CloudWatch custom metrics")[1] <= 1.50


def test_the_outbox_pipe_in_the_events_stack_brings_its_lines_idle_and_per_event() -> None:
    lines = month(1_000)
    events = 1_000 * cost.Traffic().domain_events_per_upload
    assert line(lines, "EventBridge Pipes")[1] == pytest.approx(events * PRICES["pipesRequest"]["usd"])
    assert line(lines, "EventBridge: events on the stage's bus")[1] == pytest.approx(
        events * PRICES["eventBridgeCustomEvent"]["usd"]
    )
    polls = cost.PIPE_POLLS_PER_SECOND * cost.SECONDS_PER_MONTH
    assert line(month(0), "DynamoDB Streams")[1] == pytest.approx(polls * PRICES["dynamodbStreamsReadRequest"]["usd"])
    without_pipe = copy.deepcopy(TEMPLATE)
    del without_pipe["Resources"]["OutboxPipe"]
    model = cost.Model(cost.read_stage("prod", CONFIG, app.app, without_pipe), MEASURED, PRICES)
    items = [entry.item for entry in model.month(1_000)]
    assert not [item for item in items if "EventBridge" in item or "outbox" in item or "Streams" in item]
