"""`make cost STAGE=prod [FORMAT=json]`: a stage's month on AWS, line by line, idle and under traffic.

Everything a line depends on is read, not copied:
- each function's memory and timeout from `.chalice/config.json`, the way chalice reads it (per function,
  then stage, then top level);
- the scheduled functions and their schedules from the Chalice app object (`app.app.event_sources`);
- the stage's environment (event mode, secrets source and cache, the upload policy's procedures) through
  the app's own settings;
- the outbox pipe (infra/events.json): whether the stage has one, its batch size;
- the custom metrics the code can emit (`chalicelib.observability.METRICS`), and the alarms, the secrets
  and the table's billing mode and backups from the stage's stacks (`infra/stage.json`, `infra/data.json`);
- list prices, with the date they were checked and their sources, from `deploy/prices.json`;
- what one run of each scheduled function lasts on an idle stage, and what it logs, from
  `bench/scheduled_runs.json`, which `bench/scheduled_runs.py` measures against vodlocal and a local
  DynamoDB.

What traffic costs per upload (`Traffic`) is the model's assumption, stated in docs/cost.md. No free tier.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from chalice.app import Chalice, Rate, ScheduledEventConfig, ScheduleExpression
from chalice.config import Config

from chalicelib import observability
from chalicelib.settings import Settings
from deploy.stage import CONFIG, PLACEHOLDER_JWKS_URL, PLACEHOLDER_OUTPUTS, ROOT, fed_environment

PRICES = ROOT / "deploy" / "prices.json"
MEASUREMENTS = ROOT / "bench" / "scheduled_runs.json"
# The stage stack, its data stack, its events stack.
STACK_TEMPLATES = tuple(ROOT / "infra" / name for name in ("stage.json", "data.json", "events.json"))


def stack_template() -> dict[str, Any]:
    """The stage's stacks as one template: their resources together."""
    resources: dict[str, Any] = {}
    for path in STACK_TEMPLATES:
        resources.update(json.loads(path.read_text())["Resources"])
    return {"Resources": resources}


API_FUNCTION = "api_handler"  # chalice's name for the function behind API Gateway
HOURS_PER_MONTH = 730  # the month of AWS's pricing pages
SECONDS_PER_MONTH = HOURS_PER_MONTH * 3600
MINUTES_PER = {Rate.MINUTES: 1, Rate.HOURS: 60, Rate.DAYS: 1440}
SCENARIOS = {"idle": 0, "10k": 10_000, "1M": 1_000_000}
BILLED_MILLISECOND = 0.001  # Lambda rounds a run up to the millisecond
# A pipe polls each shard of a DynamoDB stream about 4 times a second (AWS's eb-pipes-dynamodb page), whether
# or not anything was written; a table's stream has one shard at these write rates.
PIPE_POLLS_PER_SECOND = 4


# What the stack makes and `make deploy` feeds the environment: names, not prices. Stand-ins let the app's
# settings validate the committed environment as they would the deployed one.
@dataclass(frozen=True)
class Traffic:
    """What one upload costs beyond the stage's fixed runs: assumptions (docs/cost.md)."""

    api_requests_per_upload: int = 8  # create, the commit's signature, the complete call, status and list polls
    api_seconds_per_request: float = 0.1
    consumer_seconds_per_event: float = 0.1  # the PULL consumer, applying one pulled event
    # Transactions count twice. A finished task flow's snapshot is now written in a transaction with its event
    # row, so the video's write counts twice: 4 more than before the outbox for a video item of 1-2 KB (a unit
    # more per KB of a larger one). The outbox rows themselves are priced on their own line (domain_events).
    # And the owner's usage counter, updated in the attribution's transaction (2 units: quotas, chalicelib/quotas.py).
    write_units_per_upload: int = 26
    # And the consistent read of the video before a finished flow's write, and POST /uploads' read of the owner's
    # usage and open intents for the quota check (2 units, and 1 per other open intent).
    read_units_per_upload: int = 23
    stored_bytes_per_upload: int = 2_000  # the intent, the video and their index entries
    log_bytes_per_api_request: int = 1_000  # the request line and the route's own
    log_bytes_per_invocation: int = 350  # Lambda's own START, END and REPORT lines
    domain_events_per_upload: int = 2  # upload.attributed, then video.processed (or its failure)
    write_units_per_outbox_row: int = 2  # a row under 1 KB, written in its fact's transaction (twice the units)


@dataclass(frozen=True)
class Function:
    name: str
    memory_mb: int
    schedule: str | None  # None: the API's function, invoked per request
    runs_per_month: float


@dataclass(frozen=True)
class Stage:
    name: str
    functions: tuple[Function, ...]
    event_mode: str
    events_per_upload: int  # NewFileUpload, plus the procedure's completion when the policy names one
    secrets_read_from_store: bool
    secrets_cache_seconds: int
    secrets: int
    alarms: int
    metrics: tuple[str, ...]
    table_billing_mode: str
    point_in_time_recovery: bool
    outbox_pipes: int  # pipes from the table's stream to the stage's bus


@dataclass(frozen=True)
class Line:
    item: str
    usd: float


def runs_per_month(schedule: ScheduleExpression | str) -> float:
    if not isinstance(schedule, Rate):
        raise ValueError(f"only rate() schedules are modelled, not {schedule!r}")
    return HOURS_PER_MONTH * 60 / (schedule.value * MINUTES_PER[schedule.unit])


def schedule_text(schedule: ScheduleExpression | str) -> str:
    return schedule if isinstance(schedule, str) else schedule.to_string()


def read_stage(stage: str, config: Mapping[str, Any], app: Chalice, template: Mapping[str, Any]) -> Stage:
    stages = config["stages"]
    if stage not in stages:
        raise KeyError(f"stage {stage!r} is not in .chalice/config.json (stages: {', '.join(sorted(stages))})")

    def memory(function_name: str) -> int:
        chalice_config = Config(chalice_stage=stage, function_name=function_name, config_from_disk=dict(config))
        return int(chalice_config.lambda_memory_size or 128)  # Lambda's default when the config names none

    scheduled = [source for source in app.event_sources if isinstance(source, ScheduledEventConfig)]
    functions = (
        Function(API_FUNCTION, memory(API_FUNCTION), None, 0),
        *(
            Function(
                source.name,
                memory(source.name),
                schedule_text(source.schedule_expression),
                runs_per_month(source.schedule_expression),
            )
            for source in scheduled
        ),
    )
    settings = Settings.from_env(
        fed_environment(stages[stage]["environment_variables"], PLACEHOLDER_OUTPUTS, PLACEHOLDER_JWKS_URL)
    )
    resources = template["Resources"].values()
    [table] = [r["Properties"] for r in resources if r["Type"] == "AWS::DynamoDB::Table"]
    return Stage(
        name=stage,
        functions=functions,
        event_mode=settings.event_mode,
        events_per_upload=1 + bool(settings.upload_policy.default.procedures),
        secrets_read_from_store=settings.secrets_source == "secretsmanager",
        secrets_cache_seconds=settings.secrets_cache_seconds,
        secrets=sum(r["Type"] == "AWS::SecretsManager::Secret" for r in resources),
        alarms=sum(r["Type"] == "AWS::CloudWatch::Alarm" for r in resources),
        metrics=tuple(observability.METRICS),
        table_billing_mode=table["BillingMode"],
        point_in_time_recovery=table["PointInTimeRecoverySpecification"]["PointInTimeRecoveryEnabled"],
        outbox_pipes=sum(r["Type"] == "AWS::Pipes::Pipe" for r in resources),
    )


class Model:
    """One stage's month at a number of uploads."""

    def __init__(
        self, stage: Stage, measured: Mapping[str, Any], prices: Mapping[str, Any], traffic: Traffic = Traffic()
    ) -> None:
        if stage.table_billing_mode != "PAY_PER_REQUEST":
            raise ValueError(f"only an on-demand table is modelled, not {stage.table_billing_mode}")
        self.stage = stage
        self.measured = measured["functions"]
        self.price = {name: float(entry["usd"]) for name, entry in prices.items() if isinstance(entry, dict)}
        self.traffic = traffic

    def run(self, function: Function) -> Mapping[str, Any]:
        """The measured idle run of a scheduled function, in the stage's event mode where that matters."""
        measured: Mapping[str, Any] = self.measured.get(
            f"{function.name}/{self.stage.event_mode}", self.measured.get(function.name)
        )
        if measured is None:
            raise KeyError(f"no measured run of {function.name}: run bench/scheduled_runs.py")
        return measured

    def lambda_usd(self, function: Function, invocations: float, seconds: float) -> float:
        gb_seconds = invocations * seconds * function.memory_mb / 1024
        return gb_seconds * self.price["lambdaGbSecond"] + invocations * self.price["lambdaRequest"]

    def month(self, uploads: int) -> list[Line]:
        stage, traffic, price = self.stage, self.traffic, self.price
        events = uploads * stage.events_per_upload
        pushed = events if stage.event_mode == "push" else 0  # PUSH: each event is a callback through the API
        api_requests = uploads * traffic.api_requests_per_upload + pushed
        lines: list[Line] = []
        log_bytes = api_requests * (traffic.log_bytes_per_api_request + traffic.log_bytes_per_invocation)
        for function in stage.functions:
            if function.schedule is None:
                lines.append(
                    Line(
                        f"Lambda {function.name} ({function.memory_mb} MB): API requests "
                        f"× {traffic.api_seconds_per_request:g} s",
                        self.lambda_usd(function, api_requests, traffic.api_seconds_per_request),
                    )
                )
                continue
            run = self.run(function)
            consumes = function.name == "pull_vod_events" and stage.event_mode == "pull"
            seconds = max(run["runSeconds"], BILLED_MILLISECOND) + (
                events / function.runs_per_month * traffic.consumer_seconds_per_event if consumes else 0
            )
            lines.append(
                Line(
                    f"Lambda {function.name} ({function.memory_mb} MB, {function.schedule}: "
                    f"{function.runs_per_month:,.0f} runs of {run['runSeconds']:.3f} s measured idle"
                    + (f" + {traffic.consumer_seconds_per_event:g} s an event)" if consumes else ")"),
                    self.lambda_usd(function, function.runs_per_month, seconds),
                )
            )
            log_bytes += function.runs_per_month * (run["logBytes"] + traffic.log_bytes_per_invocation)
        lines.append(Line("API Gateway REST API: API requests", api_requests * price["apiGatewayRestRequest"]))
        lines.append(
            Line(
                f"DynamoDB on demand: {traffic.write_units_per_upload} write + "
                f"{traffic.read_units_per_upload} read units an upload",
                uploads
                * (
                    traffic.write_units_per_upload * price["dynamodbWriteUnit"]
                    + traffic.read_units_per_upload * price["dynamodbReadUnit"]
                ),
            )
        )
        storage_gb = uploads * traffic.stored_bytes_per_upload / 1e9
        backup = price["dynamodbPitrGbMonth"] if stage.point_in_time_recovery else 0.0
        lines.append(
            Line(
                "DynamoDB storage" + (" and point-in-time recovery" if backup else "") + ": a month of uploads",
                storage_gb * (price["dynamodbStorageGbMonth"] + backup),
            )
        )
        lines.append(
            Line(
                f"Secrets Manager: {stage.secrets} secret, read once per warm function per "
                f"{stage.secrets_cache_seconds} s",
                stage.secrets * price["secretMonth"] + self.secret_reads(api_requests) * price["secretsApiCall"],
            )
        )
        lines.append(
            Line(
                f"CloudWatch custom metrics: {', '.join(stage.metrics)}, at most (billed only for hours they "
                "are emitted: when events fail)",
                len(stage.metrics) * price["customMetricMonth"],
            )
        )
        lines += self.domain_events(uploads)
        lines.append(Line(f"CloudWatch alarms: {stage.alarms}", stage.alarms * price["alarmMonth"]))
        lines.append(Line("CloudWatch Logs ingestion", log_bytes / 1e9 * price["logsIngestedGb"]))
        return lines

    def domain_events(self, uploads: int) -> list[Line]:
        """The outbox rows, the pipe reading the stream (idle too) and what it puts on the bus."""
        if not self.stage.outbox_pipes:
            return []
        traffic, price = self.traffic, self.price
        events = uploads * traffic.domain_events_per_upload
        polls = self.stage.outbox_pipes * PIPE_POLLS_PER_SECOND * SECONDS_PER_MONTH
        return [
            Line(
                f"DynamoDB outbox rows: {traffic.domain_events_per_upload} events an upload, "
                f"{traffic.write_units_per_outbox_row} write units each",
                events * traffic.write_units_per_outbox_row * price["dynamodbWriteUnit"],
            ),
            Line(
                f"DynamoDB Streams: the pipe's {PIPE_POLLS_PER_SECOND} reads a second (if billed to Pipes as to "
                "any reader but Lambda)",
                polls * price["dynamodbStreamsReadRequest"],
            ),
            Line(
                "EventBridge Pipes: one request per event (filtered records are free)", events * price["pipesRequest"]
            ),
            Line("EventBridge: events on the stage's bus", events * price["eventBridgeCustomEvent"]),
        ]

    def secret_reads(self, api_requests: float) -> float:
        """A warm function reads the secret again when its cache expires; a cold one on its first call."""
        if not self.stage.secrets_read_from_store:
            return 0.0
        refreshes = SECONDS_PER_MONTH / max(self.stage.secrets_cache_seconds, 1)
        reads = min(api_requests, refreshes)
        for function in self.stage.functions:
            if function.schedule is not None and (
                function.name != "pull_vod_events" or self.stage.event_mode == "pull"
            ):
                reads += min(function.runs_per_month, refreshes)
        return reads


def scenarios(model: Model) -> dict[str, dict[str, Any]]:
    result: dict[str, dict[str, Any]] = {}
    for name, uploads in SCENARIOS.items():
        lines = model.month(uploads)
        result[name] = {
            "lines": [{"item": line.item, "usd": round(line.usd, 4)} for line in lines],
            "total": round(sum(line.usd for line in lines), 2),
        }
    return result


def table(
    stage: str, result: Mapping[str, Mapping[str, Any]], prices: Mapping[str, Any], measured: Mapping[str, Any]
) -> str:
    names = list(result)
    rows = [
        f"Stage `{stage}`, a month ({HOURS_PER_MONTH} h) at {' / '.join(names)} uploads: "
        f"{prices['region']} list prices checked {prices['checked']} (deploy/prices.json), no free tier; "
        f"scheduled runs measured {measured['measured']} (bench/scheduled_runs.json).",
        "",
        "| item | " + " | ".join(names) + " |",
        "|---|" + "---:|" * len(names),
    ]
    items = [line["item"] for line in result[names[0]]["lines"]]
    for index, item in enumerate(items):
        rows.append(f"| {item} | " + " | ".join(f"${result[n]['lines'][index]['usd']:.2f}" for n in names) + " |")
    rows.append("| **total** | " + " | ".join(f"**${result[n]['total']:.2f}**" for n in names) + " |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stage", required=True)
    parser.add_argument("--format", choices=("text", "json"), default="text")
    parser.add_argument("--measurements", type=Path, default=MEASUREMENTS)
    parser.add_argument("--prices", type=Path, default=PRICES)
    args = parser.parse_args(argv)
    if not args.measurements.exists():
        raise SystemExit(f"{args.measurements} is missing: run bench/scheduled_runs.py")
    import app

    stage = read_stage(args.stage, json.loads(CONFIG.read_text()), app.app, stack_template())
    prices = json.loads(args.prices.read_text())
    measured = json.loads(args.measurements.read_text())
    result = scenarios(Model(stage, measured, prices))
    if args.format == "json":
        print(json.dumps({"scenarios": result}, indent=2))
    else:
        print(table(args.stage, result, prices, measured))


if __name__ == "__main__":
    main()
