"""What one run of each scheduled function lasts on an idle stage: the numbers the cost model prices.

Run: `.venv/bin/python bench/scheduled_runs.py [--runs 5] [--json bench/scheduled_runs.json]` (`make cost`
runs it when the file is missing). Writes what `python -m deploy.cost` reads.

Lambda bills a scheduled function's wall time, every run, traffic or not. This invokes the handlers the
schedules invoke (`app.app.handler_map`, with an EventBridge scheduled event and the function's whole
timeout as its context), in the `local` stage's environment, against:

- vodlocal in PULL mode with an empty queue, holding an empty PullEvents as long as VOD does (5 s,
  vod-protocol.md §3.2): `pull_vod_events` with EVENT_MODE=pull, then EVENT_MODE=push (it returns at once);
- DynamoDB (moto, as the test suite serves it) with a fresh, empty table: `reconcile`.

Each handler runs once unmeasured (imports and the first client are a cold start's, not a run's), then
`--runs` times; the file holds the median wall time of a run and the bytes it logged (CloudWatch Logs
ingestion). Wall time on this machine stands in for Lambda's: an idle consumer run is dominated by
VOD's long-poll, which does not depend on the CPU.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from devstack.dynamodb import DynamoDBServer  # noqa: E402
from devstack.pull import RunContext, scheduled_event  # noqa: E402
from devstack.table import ensure_table, local_client  # noqa: E402
from devstack.token import local_stage_env  # noqa: E402
from vodlocal import Config, start  # noqa: E402

MEASUREMENTS = ROOT / "bench" / "scheduled_runs.json"
TABLE = "vod-upload-bench-scheduled"
TIMEOUTS = {"pull_vod_events": 60, "reconcile": 120}  # .chalice/config.json; a run ends long before


def measure(handler_name: str, runs: int) -> dict[str, Any]:
    import app

    handler = app.app.handler_map[handler_name]
    rule = f"vod-upload-backend-local-{handler_name}"

    def one_run() -> tuple[float, int, dict[str, Any]]:
        logged = io.StringIO()
        started = time.perf_counter()
        with contextlib.redirect_stdout(logged):
            result: dict[str, Any] = handler(scheduled_event(rule), RunContext(TIMEOUTS[handler_name]))
        return time.perf_counter() - started, len(logged.getvalue().encode()), result

    one_run()
    measured = [one_run() for _ in range(runs)]
    return {
        "runSeconds": round(statistics.median(seconds for seconds, _, _ in measured), 3),
        "logBytes": int(statistics.median(size for _, size, _ in measured)),
        "runs": runs,
        "result": measured[-1][2],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--json", type=Path, default=MEASUREMENTS)
    args = parser.parse_args()
    env = local_stage_env()
    with tempfile.TemporaryDirectory(prefix="scheduled-runs-") as state, DynamoDBServer() as dynamodb:
        ensure_table(local_client(dynamodb.endpoint_url), TABLE)
        vod = start(
            Config(
                port=0,
                data_dir=Path(state) / "vodlocal",
                secrets={env["VOD_SECRET_ID"]: env["VOD_SECRET_KEY"]},
                mode="PULL",
            )
        )
        try:
            os.environ.update(
                env, TABLE_NAME=TABLE, DYNAMODB_ENDPOINT_URL=dynamodb.endpoint_url, VOD_API_ENDPOINT=vod.url,
                LOCAL_JWT_KEY_FILE=str(Path(state) / "jwt-key.pem"),
            )  # fmt: skip
            os.chdir(ROOT)
            from chalicelib import container

            functions: dict[str, dict[str, Any]] = {}
            for mode in ("pull", "push"):
                os.environ["EVENT_MODE"] = mode
                container.reset()
                functions[f"pull_vod_events/{mode}"] = measure("pull_vod_events", args.runs)
            functions["reconcile"] = measure("reconcile", args.runs)
            pull_hold = vod.app.config.pull_wait
        finally:
            vod.stop()
    document = {
        "measured": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "how": "bench/scheduled_runs.py: the scheduled handlers on an idle local stage (vodlocal, moto DynamoDB)",
        "vodPullHoldSeconds": pull_hold,
        "functions": functions,
    }
    args.json.write_text(json.dumps(document, indent=2) + "\n")
    print(json.dumps(document, indent=2))


if __name__ == "__main__":
    main()
