"""Cold start: the deployment package's handler, first request in a fresh process, against the floor.

Run: `.venv/bin/python bench/cold_start.py [--pairs 9] [--json FILE]`.

What runs is what Lambda runs. The bench builds the `local` stage's package exactly as `make deploy` builds
its stage's (deploy/package.py: `chalice package`, then every module compiled to an unchecked-hash pyc) and
unpacks it twice, read-only, outside the repository (deploy/unpacked.py):
  - **shipped**: the zip as the deploy uploads it;
  - **source-only**: the same files without any `__pycache__`, i.e. what chalice alone would ship, where every
    cold start compiles every module it imports and cannot keep the result.
Each run is a fresh `python -I -S -B` (nothing from the repository or the virtualenv, no bytecode written)
whose working directory and first `sys.path` entry are the unpacked package, followed by boto3 and its
dependencies as the runtime provides them (copied from the virtualenv, compiled; the zip does not hold
them). It imports `app` and calls `app.app(event, context)` with a REST API (v1 payload) proxy event; the
time is taken from the first statement, before `import app` (Lambda's bootstrap has already set sys.path),
to the handler's response. A run that loaded any module from elsewhere is invalid, and so is a bench after
which a bytecode file appeared in either copy. Two scenarios:

- `POST /uploads` with a bearer token (a user of its own each run, so no limit is reached): must be 201;
- the callback's first NewFileUpload, `POST /vod/events/{token}` with a signed v3 body for an intent
  created just before through the app (in this process): must be 200 with outcome `attributed`.

The floor is what any handler that writes to DynamoDB pays: a fresh process of the same kind, with only the
runtime's libraries on its path, doing `import boto3`, one DynamoDB client to the same endpoint and one
conditional PutItem (`attribute_not_exists(pk)`, a fresh key) to the same table.

Two lower bounds run from the shipped copy in the same rounds: the floor's write done the way the app does it
(chalicelib/aws.py's client: botocore without boto3, which it spares listing every service it knows, its data decoded
into plain dicts; the collector paused), plus the libraries the project's standards keep (pydantic with one small model
validated, the Powertools Logger, PyJWT as the app imports it), and the same with PyJWT swapped for the `cryptography`
primitives a verifier written directly on them would import. No trimming of the app's own code can go below the first;
the second is what replacing PyJWT would allow.

Floor and candidate runs alternate, so that a machine that is busier for a while slows them all; the numbers
are the medians (and the range) over the rounds of candidate/floor. Each run also reports its CPU time over
the same span, and the median CPU ratio is printed beside the wall-clock one: on a machine shared with other
work it moves far less, while the wall-clock ratio is what a cold start costs. Nothing is run unmeasured
first: no run can warm a cache for the next one.

The stage is `local` from .chalice/config.json, with DynamoDB (moto, as the test suite serves it) on a free
port of 127.0.0.1, a fresh table, and the JWT key in a temporary directory. Exits 0 whatever the ratios
(a benchmark, not a test); exits 1 if a run answered anything but what it must, since its time then
measures something else.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from deploy import package, unpacked
from deploy.unpacked import proxy_event
from devstack.dynamodb import DynamoDBServer
from devstack.table import ensure_table, local_client
from devstack.token import local_stage_env

ROOT = Path(__file__).resolve().parent.parent
BUILD_DIR = ROOT / ".local" / "cold-start"  # the package's build; chalice's cache there spares a re-download
# A cloud stage's package (the local stage names no function roles, so chalice cannot package it); it runs with
# the local stage's environment here, which the zip does not hold.
PACKAGED_STAGE = "dev"
TARGET = 1.35
TABLE = "cold-start"
MARKER = "COLD-START-RESULT "  # the child's result line; the app logs to the same stdout

# Every kind of child starts the same way and reports the same way, so that only the middle differs.
_PRELUDE = (
    unpacked.BOOT
    + """import time
t0, cpu0 = time.perf_counter(), time.process_time()
import json
given = json.loads(os.environ["COLD_START_INPUT"])
"""
)
_REPORT = (
    unpacked.FOREIGN_MODULES
    + """
print({marker!r} + json.dumps({{"seconds": seconds, "cpu_seconds": cpu_seconds, "at": time.time(), "status": status,
      "body": body, "foreign": foreign_modules()}}), flush=True)
"""
)

_PUT = """client.put_item(
    TableName=given["table"],
    Item={"pk": {"S": given["key"]}, "sk": {"S": given["key"]}},
    ConditionExpression="attribute_not_exists(pk)",
)
"""
_DONE = """status, body = 200, ""
seconds, cpu_seconds = time.perf_counter() - t0, time.process_time() - cpu0
"""

FLOOR = (
    _PRELUDE
    + """import boto3
client = boto3.client("dynamodb", endpoint_url=given["endpoint"], region_name=given["region"])
"""
    + _PUT
    + _DONE
    + _REPORT.format(marker=MARKER)
)

# The lower bounds: the floor's write done the app's way (chalicelib/aws.py: botocore without boto3, with a data
# loader that does not list every service botocore knows and decodes its JSON into plain dicts; the collector paused,
# chalicelib/cold_start.py), plus the libraries the project's standards keep, as little of each as the app can use:
# pydantic with one small model validated, the Powertools Logger (importing it imports Metrics and Tracer too:
# aws_lambda_powertools/__init__.py), and PyJWT as chalicelib/auth.py imports it; the second swaps PyJWT for what a
# verifier written directly on `cryptography` would import (its RSA/EC primitives, no x509).
# Run from the shipped copy: no trimming of the app's own code can bring it below these.
_LIBRARIES = (
    """import gc
gc.disable()
from chalicelib import aws
client = aws.client("dynamodb", given["region"], given["endpoint"])
"""
    + _PUT
    + """import pydantic
class Body(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid")
    title: str
Body.model_validate_json('{"title": "x"}')
from aws_lambda_powertools import Logger
Logger(service="lower-bound")
"""
)
LOWER_BOUND = _PRELUDE + _LIBRARIES + "import jwt\n" + _DONE + _REPORT.format(marker=MARKER)
LOWER_BOUND_WITHOUT_PYJWT = (
    _PRELUDE
    + _LIBRARIES
    + """from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa, utils
"""
    + _DONE
    + _REPORT.format(marker=MARKER)
)

CANDIDATE = (
    _PRELUDE
    + """import app
"""
    + unpacked.CONTEXT
    + """response = app.app(given["event"], LambdaContext(given["event"], t0 + 10))
status, body = response["statusCode"], response["body"]
seconds, cpu_seconds = time.perf_counter() - t0, time.process_time() - cpu0
"""
    + _REPORT.format(marker=MARKER)
)


def create_upload_event(token: str) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json", "Accept": "application/json"}
    return proxy_event("POST", "/uploads", headers, json.dumps({"title": "x"}))


def callback_event(path_token: str, body: str) -> dict[str, Any]:
    return proxy_event("POST", "/vod/events/{token}", {"Content-Type": "application/json"}, body, {"token": path_token})


@dataclass(frozen=True)
class Run:
    seconds: float  # in the child, from before its first import to the response
    cpu_seconds: float  # the child's CPU time over the same span: what a busy machine disturbs least
    spawn_seconds: float  # from just before the parent starts the child to the response
    status: int
    body: str
    log: str  # the app's log lines: why it answered what it did


def run_child(code: str, given: dict[str, Any], env: dict[str, str], cwd: Path) -> Run:
    env = {**env, "COLD_START_INPUT": json.dumps(given)}
    started = time.time()
    done = subprocess.run(unpacked.command(code), cwd=cwd, env=env, capture_output=True, text=True)
    lines = [line for line in done.stdout.splitlines() if line.startswith(MARKER)]
    if done.returncode != 0 or not lines:
        raise SystemExit(f"a child run failed (exit {done.returncode}):\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}")
    result = json.loads(lines[-1][len(MARKER) :])
    if result["foreign"]:
        raise SystemExit(f"a child run loaded modules from outside its package and runtime: {result['foreign']}")
    log = "\n".join(line for line in done.stdout.splitlines() if not line.startswith(MARKER))
    seconds, cpu_seconds, spawn_seconds = result["seconds"], result["cpu_seconds"], result["at"] - started
    return Run(seconds, cpu_seconds, spawn_seconds, int(result["status"]), str(result["body"]), log)


@dataclass(frozen=True)
class Candidate:
    name: str  # "shipped", "source-only", or a lower bound's
    package: Path  # the unpacked copy it runs from
    code: str = CANDIDATE  # the handler's first request, or a lower bound (which writes what the floor writes)

    @property
    def handles_event(self) -> bool:
        return self.code is CANDIDATE


@dataclass
class Round:
    floor: Run
    candidates: dict[str, Run]


@dataclass
class Scenario:
    name: str
    prepare: Callable[[int], dict[str, Any]]  # run number -> a candidate's event
    check: Callable[[Run], str | None]  # what is wrong with a candidate's answer, if anything
    rounds: list[Round] = field(default_factory=list)

    def ratios(self, candidate: str) -> list[float]:
        return [one.candidates[candidate].seconds / one.floor.seconds for one in self.rounds]

    def summary(self, candidate: str) -> dict[str, Any]:
        runs = [(one.floor, one.candidates[candidate]) for one in self.rounds]
        return {
            "ratio_median": statistics.median(self.ratios(candidate)),
            "ratio_range": [min(self.ratios(candidate)), max(self.ratios(candidate))],
            "candidate_ms_median": statistics.median(run.seconds for _, run in runs) * 1000,
            "floor_ms_median": statistics.median(floor.seconds for floor, _ in runs) * 1000,
            "cpu_ratio_median": statistics.median(run.cpu_seconds / floor.cpu_seconds for floor, run in runs),
            "spawn_ratio_median": statistics.median(run.spawn_seconds / floor.spawn_seconds for floor, run in runs),
            "candidate_spawn_ms_median": statistics.median(run.spawn_seconds for _, run in runs) * 1000,
            "floor_spawn_ms_median": statistics.median(floor.spawn_seconds for floor, _ in runs) * 1000,
            "target": TARGET,
            "rounds": [
                {
                    "floor_ms": floor.seconds * 1000,
                    "candidate_ms": run.seconds * 1000,
                    "ratio": run.seconds / floor.seconds,
                    "floor_cpu_ms": floor.cpu_seconds * 1000,
                    "candidate_cpu_ms": run.cpu_seconds * 1000,
                    "floor_spawn_ms": floor.spawn_seconds * 1000,
                    "candidate_spawn_ms": run.spawn_seconds * 1000,
                }
                for floor, run in runs
            ],
        }


class Bench:
    """The stage's environment on a fresh table, tokens for fresh users, the unpacked copies the candidates
    run from, and the app in this process for creating the intents the callback runs complete."""

    def __init__(self, endpoint: str, key_file: Path, candidates: list[Candidate], runtime: Path) -> None:
        from chalicelib.auth import load_or_create_local_key
        from chalicelib.identity import LOCAL_ISSUER

        self.stage = {
            **local_stage_env(),
            "DYNAMODB_ENDPOINT_URL": endpoint,
            "TABLE_NAME": TABLE,
            "LOCAL_JWT_KEY_FILE": str(key_file),
        }
        os.environ.update(self.stage)  # the app in this process reads its stage from here, as in Lambda
        self.candidates = candidates
        self.runtime = runtime
        self.key = load_or_create_local_key(str(key_file))
        self.issuer = self.stage.get("LOCAL_JWT_ISSUER", LOCAL_ISSUER)
        self.run_id = uuid.uuid4().hex[:8]

    def token(self, user: str) -> str:
        from chalicelib.auth import mint_local_token

        return mint_local_token(self.key, self.issuer, user, [], 3600)

    def floor_input(self) -> dict[str, Any]:
        endpoint, region = self.stage["DYNAMODB_ENDPOINT_URL"], self.stage["AWS_REGION"]
        return {"endpoint": endpoint, "region": region, "table": TABLE, "key": f"FLOOR#{uuid.uuid4().hex}"}

    def uploads_event(self, run: int) -> dict[str, Any]:
        return create_upload_event(self.token(f"cold-{self.run_id}-uploads-{run}"))

    def callback_event(self, run: int) -> dict[str, Any]:
        import app
        from chalicelib import vod_signature
        from tests import vod_payloads

        created = self.invoke(app.app, create_upload_event(self.token(f"cold-{self.run_id}-callback-{run}")))
        if created["statusCode"] != 201:
            raise SystemExit(f"creating the intent answered {created['statusCode']}: {created['body']}")
        signature = json.loads(created["body"])["signature"]
        context = vod_signature.verify(signature, self.stage["VOD_SECRET_KEY"]).params.options.sourceContext
        event = vod_payloads.new_file_upload(f"5285890{run:012d}", context)
        body = json.dumps(vod_payloads.signed(event, self.stage["VOD_SIGN_KEY"]))
        return callback_event(self.stage["VOD_CALLBACK_TOKEN"], body)

    @staticmethod
    def invoke(handler: Callable[[dict[str, Any], Any], dict[str, Any]], event: dict[str, Any]) -> dict[str, Any]:
        with contextlib.redirect_stdout(io.StringIO()):  # the app's request log lines are not the bench's
            return handler(event, None)

    def measure(self, scenario: Scenario, rounds: int) -> None:
        for run in range(rounds):
            # First, so that the runs of a round then follow each other at once; an event for each candidate,
            # since a callback's first NewFileUpload can only be first once.
            given = [
                {"event": scenario.prepare(run * len(self.candidates) + index)}
                if candidate.handles_event
                else self.floor_input()
                for index, candidate in enumerate(self.candidates)
            ]
            floor_env = unpacked.child_environment(self.stage, self.runtime)
            floor = run_child(FLOOR, self.floor_input(), floor_env, self.runtime)
            measured = {}
            for candidate, inputs in zip(self.candidates, given, strict=True):
                env = unpacked.child_environment(self.stage, candidate.package, self.runtime)
                result = run_child(candidate.code, inputs, env, candidate.package)
                problem = scenario.check(result) if candidate.handles_event else None
                if problem is not None:
                    raise SystemExit(
                        f"{scenario.name}, {candidate.name}: the handler answered {problem}; this run is invalid\n"
                        f"{result.log}"
                    )
                measured[candidate.name] = result
            scenario.rounds.append(Round(floor, measured))


def expect_created(run: Run) -> str | None:
    return None if run.status == 201 else f"{run.status} {run.body[:500]}"


def expect_attributed(run: Run) -> str | None:
    attributed = run.status == 200 and json.loads(run.body).get("outcome") == "attributed"
    return None if attributed else f"{run.status} {run.body[:500]}"


def unpacked_copies(zip_path: Path, work: Path) -> tuple[list[Candidate], Path]:
    shipped = unpacked.unpack(zip_path, work / "shipped")
    source_only = unpacked.unpack(zip_path, work / "source-only", bytecode=False)
    runtime = unpacked.runtime_libraries()
    lower_bounds = [
        Candidate("lower bound", shipped, LOWER_BOUND),
        Candidate("lower bound without PyJWT", shipped, LOWER_BOUND_WITHOUT_PYJWT),
    ]
    return [Candidate("shipped", shipped), Candidate("source-only", source_only), *lower_bounds], runtime


def size_mb(root: Path) -> float:
    return sum(path.stat().st_size for path in root.rglob("*") if path.is_file()) / 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=9, help="measured rounds (the floor, then each candidate)")
    parser.add_argument("--json", type=Path, help="also write the numbers here")
    args = parser.parse_args()
    if args.pairs < 1:
        parser.error("--pairs must be at least 1")
    environ = {**os.environ, "AWS_DEFAULT_REGION": "us-east-1"}
    with contextlib.redirect_stdout(sys.stderr):  # chalice's and pip's progress is not the bench's output
        built = package.build_offline(PACKAGED_STAGE, BUILD_DIR / PACKAGED_STAGE, environ)
    with tempfile.TemporaryDirectory(prefix="cold-start-") as state, DynamoDBServer() as dynamodb:
        work = Path(state)
        candidates, runtime = unpacked_copies(built.zip, work)
        before = {candidate.name: unpacked.bytecode_files(candidate.package) for candidate in candidates}
        sizes = {
            "zip_mb": built.zip.stat().st_size / 1e6,
            **{f"{c.name}_unpacked_mb": size_mb(c.package) for c in candidates if c.handles_event},
        }
        ensure_table(local_client(dynamodb.endpoint_url), TABLE)
        bench = Bench(dynamodb.endpoint_url, work / "jwt-key.pem", candidates, runtime)
        scenarios = [
            Scenario("POST /uploads", bench.uploads_event, expect_created),
            Scenario("POST /vod/events (first NewFileUpload)", bench.callback_event, expect_attributed),
        ]
        print(
            f"cold start: the {PACKAGED_STAGE} stage's package ({built.runtime}, zip {sizes['zip_mb']:.1f} MB, "
            f"unpacked {sizes['shipped_unpacked_mb']:.1f} MB shipped / {sizes['source-only_unpacked_mb']:.1f} MB "
            f"source-only); {args.pairs} rounds per scenario of floor, {', '.join(c.name for c in candidates)}, "
            f"each a fresh `{Path(sys.executable).name} -I -S -B`; DynamoDB at {dynamodb.endpoint_url}; load "
            f"average {os.getloadavg()[0]:.2f}",
            flush=True,
        )
        for scenario in scenarios:
            bench.measure(scenario, args.pairs)
            for candidate in candidates:
                numbers = scenario.summary(candidate.name)
                low, high = numbers["ratio_range"]
                print(
                    f"  {scenario.name:40s} {candidate.name:26s} {numbers['candidate_ms_median']:6.1f} ms  floor "
                    f"{numbers['floor_ms_median']:6.1f} ms  median ratio {numbers['ratio_median']:.2f}x "
                    f"({low:.2f}-{high:.2f})  (CPU time {numbers['cpu_ratio_median']:.2f}x; from spawn "
                    f"{numbers['spawn_ratio_median']:.2f}x)",
                    flush=True,
                )
        for candidate in candidates:
            if unpacked.bytecode_files(candidate.package) != before[candidate.name]:
                raise SystemExit(f"bytecode was written into the {candidate.name} copy: the runs are invalid")
            unpacked.writable(candidate.package)  # so that the temporary directory can be removed
    for scenario in scenarios:
        figures = ", ".join(
            f"{c.name} {numbers['ratio_median']:.2f}x (CPU {numbers['cpu_ratio_median']:.2f}x)"
            for c, numbers in ((c, scenario.summary(c.name)) for c in candidates)
        )
        print(f"{scenario.name}: {figures}; target <= {TARGET}x; load average {os.getloadavg()[0]:.2f}")
    if args.json:
        report = {
            "rounds": args.pairs,
            "python": sys.version.split()[0],
            "load_average": os.getloadavg(),
            "package": {"runtime": built.runtime, **sizes},
            "floor": "import boto3 (the runtime's); one DynamoDB client; one conditional PutItem",
            "scenarios": {
                scenario.name: {candidate.name: scenario.summary(candidate.name) for candidate in candidates}
                for scenario in scenarios
            },
        }
        args.json.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
