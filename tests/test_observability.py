"""Logs and metrics as CloudWatch receives them: JSON log lines that carry the invocation's request id and
cold-start flag, and metrics in Embedded Metric Format (EMF) on stdout, from the real handlers."""

from __future__ import annotations

import json
import os
from typing import Any

from chalicelib.observability import NAMESPACE
from devstack.pull import RunContext, scheduled_event
from tests import vod_payloads as vod
from tests.conftest import Stack, TokenFactory
from tests.test_import_paths import in_fresh_process
from tests.test_pull_consumer import CONSUMER_SECONDS, as_user, upload_through
from vodlocal import Handle

Lines = list[dict[str, Any]]


def json_lines(out: str) -> Lines:
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


def metrics_in(lines: Lines) -> dict[str, list[float]]:
    """Every EMF metric value in the lines, by metric name, checked for what CloudWatch requires."""
    values: dict[str, list[float]] = {}
    for line in lines:
        if "_aws" not in line:
            continue
        [directive] = line["_aws"]["CloudWatchMetrics"]
        assert directive["Namespace"] == NAMESPACE
        assert directive["Dimensions"] == [["stage", "service"]]
        assert line["service"] == "vodupload" and line["stage"] == os.environ.get("STAGE", line["stage"])
        for metric in directive["Metrics"]:
            values.setdefault(metric["Name"], []).extend(line[metric["Name"]])
    return values


PROBE = """
import json, os
import app

class Context:
    def __init__(self, request_id):
        self.aws_request_id = request_id
        self.function_name = "vod-upload-backend-local"

for number in (1, 2):
    response = app.app(json.loads(os.environ["PROBE_EVENT"]), Context(f"request-{number}"))
    assert response["statusCode"] == 201, response
"""


def test_each_invocation_logs_its_request_id_and_whether_it_was_a_cold_start(
    stage_env: dict[str, str], token_for: TokenFactory
) -> None:
    from bench.cold_start import create_upload_event

    event = create_upload_event(token_for("alice"))
    out = in_fresh_process(PROBE, event, stage_env)  # a fresh interpreter: its first invocation is cold
    lines = json_lines(out)
    requests = [line for line in lines if line.get("message") == "request"]
    assert [(r["function_request_id"], r["cold_start"], r["status"]) for r in requests] == [
        ("request-1", True, 201),
        ("request-2", False, 201),
    ]
    assert all(r["level"] == "INFO" and r["service"] == "vodupload" and r["timestamp"] for r in requests)
    assert metrics_in(lines) == {}  # a signature is a request line, not a custom metric (docs/cost.md)
    assert stage_env["VOD_SECRET_KEY"] not in out


def test_callback_outcomes_are_logged_by_outcome_and_emit_no_metric(stack: Stack, capfd: Any) -> None:
    _, context = stack.create_upload()
    for event in (vod.new_file_upload("5285890000000001", context),) * 2:
        stack.deliver(event)
    stack.deliver(vod.new_file_upload("5285890000000002", "not-a-context"))
    assert stack.deliver(vod.other_event(), token="wrong").status_code == 403
    lines = json_lines(capfd.readouterr().out)
    outcomes = [line["outcome"] for line in lines if line.get("message", "").startswith("vod event")]
    assert outcomes == ["attributed", "duplicate", "orphan", "refused"]
    assert metrics_in(lines) == {}


def test_the_consumer_reports_its_lag_its_errors_and_what_it_parked(
    pull_vod: Handle, api_factory: Any, token_for: TokenFactory, capfd: Any
) -> None:
    import app as application

    pull_vod.app.bus.emit_raw({"EventType": "NewFileUpload", "FileUploadEvent": {}})  # one that never applies
    upload_through(pull_vod, as_user(api_factory(), token_for("alice")))
    capfd.readouterr()
    # Long enough for vodlocal's redelivery (1 s): the stage's limit is 2 failures.
    result = application.app.handler_map["pull_vod_events"](scheduled_event(), RunContext(CONSUMER_SECONDS + 6))
    assert (result["attributed"], result["failed"], result["parked"]) == (1, 1, 1), result
    lines = json_lines(capfd.readouterr().out)
    [run] = [line for line in lines if line.get("message") == "vod events pulled"]
    assert 0 <= run["maxLagSeconds"] < 60  # from the upload's CreateTime (whole seconds) to its attribution
    # The metrics the alarms watch, and no other (chalicelib/observability.METRICS).
    assert metrics_in(lines) == {"EventsParked": [1.0], "ConsumerErrors": [1.0]}
