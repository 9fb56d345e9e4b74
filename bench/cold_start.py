"""Cold start: the real Lambda handler's first request in a fresh process, against the floor.

Run: `.venv/bin/python bench/cold_start.py [--pairs 9] [--json FILE]`.

A cold Lambda starts a fresh interpreter, imports the handler module and hands it one API Gateway proxy
event. Each candidate run here does that: a fresh `python -c` imports `app` and calls `app.app(event,
context)` with a REST API (v1 payload) proxy event, and the time is taken from the first statement, before
`import app`, to the handler's response. Two scenarios:

- `POST /uploads` with a bearer token (a user of its own each run, so no limit is reached): must be 201;
- the callback's first NewFileUpload, `POST /vod/events/{token}` with a signed v3 body for an intent
  created just before through the app (in this process): must be 200 with outcome `attributed`.

The floor is what any handler that writes to DynamoDB pays: a fresh process doing `import boto3`, one
DynamoDB client to the same endpoint and one conditional PutItem (`attribute_not_exists(pk)`, a fresh
key) to the same table. Floor and candidate runs alternate, so that a machine that is busier for a while
slows both; the number is the median over the pairs of candidate/floor. Each kind runs once first,
unmeasured, so that both read compiled bytecode.

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

from devstack.dynamodb import DynamoDBServer
from devstack.table import ensure_table, local_client
from devstack.token import local_stage_env

ROOT = Path(__file__).resolve().parent.parent
TARGET = 1.25
TABLE = "cold-start"
API_STAGE = "api"  # api_gateway_stage in .chalice/config.json
API_ID = "a1b2c3d4e5"
ACCOUNT = "123456789012"
# requestContext.identity of a request without IAM or Cognito credentials: present, but null.
IDENTITY_UNSET = ("accountId", "caller", "user", "userArn", "accessKey", "cognitoIdentityPoolId",
                  "cognitoIdentityId", "cognitoAuthenticationType", "cognitoAuthenticationProvider")  # fmt: skip
MARKER = "COLD-START-RESULT "  # the child's result line; the app logs to the same stdout

# Both kinds of child start the same way and report the same way, so that only the middle differs.
_PRELUDE = """\
import time
t0 = time.perf_counter()
import json, os
given = json.loads(os.environ["COLD_START_INPUT"])
"""
_REPORT = """
print({marker!r} + json.dumps({{"seconds": time.perf_counter() - t0, "at": time.time(), "status": status,
      "body": body}}), flush=True)
"""

FLOOR = (
    _PRELUDE
    + """\
import boto3
client = boto3.client("dynamodb", endpoint_url=given["endpoint"], region_name=given["region"])
client.put_item(
    TableName=given["table"],
    Item={"pk": {"S": given["key"]}, "sk": {"S": given["key"]}},
    ConditionExpression="attribute_not_exists(pk)",
)
status, body = 200, ""
"""
    + _REPORT.format(marker=MARKER)
)

# What the Lambda runtime passes as `context`: the attributes of its LambdaContext.
CANDIDATE = (
    _PRELUDE
    + """\
import app
class LambdaContext:
    function_name = "vod-upload-backend-local"
    function_version = "$LATEST"
    invoked_function_arn = "arn:aws:lambda:us-east-1:{account}:function:vod-upload-backend-local"
    memory_limit_in_mb = "512"
    aws_request_id = given["event"]["requestContext"]["requestId"]
    log_group_name = "/aws/lambda/vod-upload-backend-local"
    log_stream_name = "2026/11/24/[$LATEST]0123456789abcdef"
    identity = client_context = None
    def get_remaining_time_in_millis(self):
        return max(0, int((t0 + 10 - time.perf_counter()) * 1000))
response = app.app(given["event"], LambdaContext())
status, body = response["statusCode"], response["body"]
""".replace("{account}", ACCOUNT)
    + _REPORT.format(marker=MARKER)
)


def proxy_event(
    method: str, resource: str, headers: dict[str, str], body: str, path_parameters: dict[str, str] | None = None
) -> dict[str, Any]:
    """The event API Gateway's REST API sends a Lambda proxy integration (payload format 1.0), as documented
    and as chalice's own local server imitates it (chalice/local.py, LambdaEventConverter)."""
    path = resource
    for name, value in (path_parameters or {}).items():
        path = path.replace(f"{{{name}}}", value)
    now = time.time()
    all_headers = {
        "Host": f"{API_ID}.execute-api.us-east-1.amazonaws.com",
        "User-Agent": "cold-start-bench/1.0",
        "X-Amzn-Trace-Id": f"Root=1-{int(now):08x}-{uuid.uuid4().hex[:24]}",
        "X-Forwarded-For": "127.0.0.1",
        "X-Forwarded-Port": "443",
        "X-Forwarded-Proto": "https",
        **headers,
    }
    return {
        "resource": resource,
        "path": path,
        "httpMethod": method,
        "headers": all_headers,
        "multiValueHeaders": {name: [value] for name, value in all_headers.items()},
        "queryStringParameters": None,
        "multiValueQueryStringParameters": None,
        "pathParameters": path_parameters,
        "stageVariables": None,
        "requestContext": {
            "resourceId": "abc123",
            "resourcePath": resource,
            "httpMethod": method,
            "extendedRequestId": uuid.uuid4().hex[:16],
            "requestTime": time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime(now)),
            "path": f"/{API_STAGE}{path}",
            "accountId": ACCOUNT,
            "protocol": "HTTP/1.1",
            "stage": API_STAGE,
            "domainPrefix": API_ID,
            "requestTimeEpoch": int(now * 1000),
            "requestId": str(uuid.uuid4()),
            "identity": {
                "sourceIp": "127.0.0.1",
                "userAgent": all_headers["User-Agent"],
                **dict.fromkeys(IDENTITY_UNSET),
            },
            "domainName": all_headers["Host"],
            "apiId": API_ID,
        },
        "body": body,
        "isBase64Encoded": False,
    }


def create_upload_event(token: str) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json", "Accept": "application/json"}
    return proxy_event("POST", "/uploads", headers, json.dumps({"title": "x"}))


def callback_event(path_token: str, body: str) -> dict[str, Any]:
    return proxy_event("POST", "/vod/events/{token}", {"Content-Type": "application/json"}, body, {"token": path_token})


@dataclass(frozen=True)
class Run:
    seconds: float  # in the child, from before its first import to the response
    spawn_seconds: float  # from just before the parent starts the child to the response
    status: int
    body: str
    log: str  # the app's log lines: why it answered what it did


def run_child(code: str, given: dict[str, Any], env: dict[str, str]) -> Run:
    env = {**env, "COLD_START_INPUT": json.dumps(given)}
    started = time.time()
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True)
    lines = [line for line in done.stdout.splitlines() if line.startswith(MARKER)]
    if done.returncode != 0 or not lines:
        raise SystemExit(f"a child run failed (exit {done.returncode}):\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}")
    result = json.loads(lines[-1][len(MARKER) :])
    log = "\n".join(line for line in done.stdout.splitlines() if not line.startswith(MARKER))
    return Run(result["seconds"], result["at"] - started, int(result["status"]), str(result["body"]), log)


@dataclass
class Scenario:
    name: str
    prepare: Callable[[int], dict[str, Any]]  # run number -> the candidate's event
    check: Callable[[Run], str | None]  # what is wrong with the candidate's answer, if anything
    pairs: list[tuple[Run, Run]] = field(default_factory=list)  # (floor, candidate)

    def ratios(self) -> list[float]:
        return [candidate.seconds / floor.seconds for floor, candidate in self.pairs]

    def summary(self) -> dict[str, Any]:
        floors = [floor for floor, _ in self.pairs]
        candidates = [candidate for _, candidate in self.pairs]
        spawn_ratios = [candidate.spawn_seconds / floor.spawn_seconds for floor, candidate in self.pairs]
        return {
            "ratio_median": statistics.median(self.ratios()),
            "candidate_ms_median": statistics.median(run.seconds for run in candidates) * 1000,
            "floor_ms_median": statistics.median(run.seconds for run in floors) * 1000,
            "spawn_ratio_median": statistics.median(spawn_ratios),
            "candidate_spawn_ms_median": statistics.median(run.spawn_seconds for run in candidates) * 1000,
            "floor_spawn_ms_median": statistics.median(run.spawn_seconds for run in floors) * 1000,
            "target": TARGET,
            "pairs": [
                {
                    "floor_ms": floor.seconds * 1000,
                    "candidate_ms": candidate.seconds * 1000,
                    "ratio": candidate.seconds / floor.seconds,
                    "floor_spawn_ms": floor.spawn_seconds * 1000,
                    "candidate_spawn_ms": candidate.spawn_seconds * 1000,
                }
                for floor, candidate in self.pairs
            ],
        }


class Bench:
    """The stage's environment on a fresh table, tokens for fresh users, and the app in this process for
    creating the intents the callback runs complete."""

    def __init__(self, endpoint: str, key_file: Path) -> None:
        from chalicelib.auth import load_or_create_local_key
        from chalicelib.identity import LOCAL_ISSUER

        self.stage = {
            **local_stage_env(),
            "DYNAMODB_ENDPOINT_URL": endpoint,
            "TABLE_NAME": TABLE,
            "LOCAL_JWT_KEY_FILE": str(key_file),
        }
        os.environ.update(self.stage)  # the app in this process reads its stage from here, as in Lambda
        # Set to anything, "0" included, it would keep the warm-up runs from writing the bytecode cache.
        self.env = {name: value for name, value in os.environ.items() if name != "PYTHONDONTWRITEBYTECODE"}
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

    def measure(self, scenario: Scenario, pairs: int) -> None:
        for run in range(pairs + 1):
            event = scenario.prepare(run)  # first: the two runs of a pair then follow each other at once
            floor = run_child(FLOOR, self.floor_input(), self.env)
            candidate = run_child(CANDIDATE, {"event": event}, self.env)
            problem = scenario.check(candidate)
            if problem is not None:
                raise SystemExit(
                    f"{scenario.name}: the handler answered {problem}; this run is invalid\n{candidate.log}"
                )
            if run > 0:  # run 0 only warms the bytecode cache
                scenario.pairs.append((floor, candidate))


def expect_created(run: Run) -> str | None:
    return None if run.status == 201 else f"{run.status} {run.body[:500]}"


def expect_attributed(run: Run) -> str | None:
    attributed = run.status == 200 and json.loads(run.body).get("outcome") == "attributed"
    return None if attributed else f"{run.status} {run.body[:500]}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=9, help="measured floor/candidate pairs per scenario")
    parser.add_argument("--json", type=Path, help="also write the numbers here")
    args = parser.parse_args()
    if args.pairs < 1:
        parser.error("--pairs must be at least 1")
    with tempfile.TemporaryDirectory(prefix="cold-start-") as state, DynamoDBServer() as dynamodb:
        ensure_table(local_client(dynamodb.endpoint_url), TABLE)
        bench = Bench(dynamodb.endpoint_url, Path(state) / "jwt-key.pem")
        scenarios = [
            Scenario("POST /uploads", bench.uploads_event, expect_created),
            Scenario("POST /vod/events (first NewFileUpload)", bench.callback_event, expect_attributed),
        ]
        print(
            f"cold start: {args.pairs} pairs per scenario, floor and candidate alternately, each a fresh "
            f"{Path(sys.executable).name} process; DynamoDB at {dynamodb.endpoint_url}",
            flush=True,
        )
        for scenario in scenarios:
            bench.measure(scenario, args.pairs)
            numbers = scenario.summary()
            print(
                f"  {scenario.name:40s} candidate {numbers['candidate_ms_median']:6.1f} ms  floor "
                f"{numbers['floor_ms_median']:6.1f} ms  median ratio {numbers['ratio_median']:.2f}x  "
                f"(from spawn: {numbers['candidate_spawn_ms_median']:.0f} / {numbers['floor_spawn_ms_median']:.0f}"
                f" ms, {numbers['spawn_ratio_median']:.2f}x)",
                flush=True,
            )
    for scenario in scenarios:
        print(f"{scenario.name}: ratio {statistics.median(scenario.ratios()):.2f}x (target <= {TARGET}x)")
    if args.json:
        report = {
            "pairs": args.pairs,
            "python": sys.version.split()[0],
            "load_average": os.getloadavg(),
            "floor": "import boto3; one DynamoDB client; one conditional PutItem",
            "scenarios": {scenario.name: scenario.summary() for scenario in scenarios},
        }
        args.json.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
