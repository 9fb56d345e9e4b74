"""The scheduled functions on this machine: `make dev EVENT_MODE=pull` runs the PULL consumer beside the
API, and `make sweep` runs the reconciliation sweep once.

`chalice local` does not run scheduled functions, so this process invokes the same handler the schedule
invokes in Lambda (`app.pull_vod_events` or `app.reconcile`, through chalice's handler map, with an
EventBridge scheduled event), one run after another (or `--once`), in the local stage's environment pointed
at the stack `make dev` runs with the same `DEVSTACK_*_PORT`s (its DynamoDB and vodlocal), plus `--override
NAME=VALUE`s. A `--once` run that failed exits non-zero.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import time
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from devstack.run import stack_overrides
from devstack.token import local_stage_env

ROOT = Path(__file__).resolve().parent.parent
RUN_SECONDS = 20.0
ACCOUNT = "123456789012"


def scheduled_event(rule: str = "vod-upload-backend-local-pull_vod_events") -> dict[str, Any]:
    """What EventBridge sends a scheduled function."""
    return {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": "Scheduled Event",
        "source": "aws.events",
        "account": ACCOUNT,
        "time": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "region": "us-east-1",
        "resources": [f"arn:aws:events:us-east-1:{ACCOUNT}:rule/{rule}"],
        "detail": {},
    }


class RunContext:
    """The Lambda context of one run: how long it may take."""

    def __init__(self, seconds: float) -> None:
        self._seconds = seconds

    def get_remaining_time_in_millis(self) -> int:
        return int(self._seconds * 1000)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--override", action="append", default=[], metavar="NAME=VALUE")
    parser.add_argument("--run-seconds", type=float, default=RUN_SECONDS)
    parser.add_argument("--handler", choices=("pull_vod_events", "reconcile"), default="pull_vod_events")
    parser.add_argument("--once", action="store_true", help="one run, its report printed as JSON")
    args = parser.parse_args(argv)
    stage_env = local_stage_env()
    os.environ.update(stage_env)
    os.environ.update(stack_overrides(stage_env))  # the stack `make dev` runs with the same DEVSTACK_* ports
    os.environ.update(dict(item.partition("=")[::2] for item in args.override))
    os.chdir(ROOT)  # the stage's relative paths (the local key) are the project's
    logging.basicConfig(stream=sys.stdout, level=logging.INFO, format="%(message)s")
    # Stop at once, even mid-run, as a Lambda timing out does: what was not confirmed is delivered again.
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: sys.exit(0))
    import app

    handler = app.app.handler_map[args.handler]
    rule = f"vod-upload-backend-local-{args.handler}"
    if args.once:
        report = handler(scheduled_event(rule), RunContext(args.run_seconds))
        print(json.dumps(report))
        if report.get("failed"):
            raise SystemExit(
                f"{args.handler}: {report['failed']} failed against DynamoDB {os.environ['DYNAMODB_ENDPOINT_URL']}: "
                "is `make dev` running, with the same DEVSTACK_* ports?"
            )
        return
    log = logging.getLogger("devstack.pull")
    while True:
        try:
            handler(scheduled_event(rule), RunContext(args.run_seconds))
        except Exception:
            log.exception("devstack: a PULL consumer run failed; the next one starts in a second")
            time.sleep(1)


if __name__ == "__main__":
    main()
