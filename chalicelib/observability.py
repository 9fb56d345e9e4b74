"""Logs and metrics through Powertools for AWS Lambda.

Every module logs to the standard logger `vodupload` with `extra={...}`; Powertools' Logger formats each
record as one JSON line (level, location, message, timestamp, service, the invocation's request id and
cold-start flag, then the extra fields). Metrics are CloudWatch Embedded Metric Format lines on stdout,
flushed at the end of each invocation: no API call, no latency on the request path.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Iterator
from typing import Any, Literal, get_args

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit

SERVICE = "vodupload"  # also the name of the standard logger every module writes to
NAMESPACE = "VodUpload"

# The custom metrics the app can emit. Each is one CloudWatch metric (its name with the stage and service
# dimensions), billed for each hour it is emitted, so there is one only where an alarm (infra/stage.json)
# watches it; every other figure is a field of a log line, for Logs Insights
# (docs/observability.md). The cost model (deploy/cost.py) prices exactly these.
MetricName = Literal["EventsParked", "ConsumerErrors"]
METRICS: tuple[MetricName, ...] = get_args(MetricName)


class _CurrentStdout:
    """A stream handler's stream that is whatever `sys.stdout` is at the time of writing: Lambda and test
    capture both swap it after import."""

    def write(self, text: str) -> int:
        return sys.stdout.write(text)

    def flush(self) -> None:
        sys.stdout.flush()


_powertools = Logger(service=SERVICE, stream=_CurrentStdout(), log_uncaught_exceptions=False)  # type: ignore[arg-type]
logger = logging.getLogger(SERVICE)  # the standard logger Powertools configured
metrics = Metrics(namespace=NAMESPACE, service=SERVICE)

_first_invocation = True


@contextlib.contextmanager
def invocation(lambda_context: Any) -> Iterator[None]:
    """One Lambda invocation: its log lines carry its request id and whether it is the process's first
    (a cold start), and its metrics are flushed when it ends, however it ends."""
    global _first_invocation
    _powertools.append_keys(
        cold_start=_first_invocation,
        function_request_id=getattr(lambda_context, "aws_request_id", None),
    )
    _first_invocation = False
    stage = os.environ.get("STAGE", "unknown")  # read per invocation: set by the stage, after import in tests
    if metrics.default_dimensions.get("stage") != stage:
        metrics.clear_default_dimensions()
        metrics.clear_metrics()  # drops the old stage from the pending set (nothing else is pending here)
        metrics.set_default_dimensions(stage=stage)
    try:
        yield
    finally:
        if metrics.metric_set:
            metrics.flush_metrics()


def count(name: MetricName, value: int = 1) -> None:
    """Nothing is sent for zero: a metric is billed only for the hours it is emitted."""
    if value:
        metrics.add_metric(name=name, unit=MetricUnit.Count, value=value)
