"""How long from the upload SDK's success (CommitUploadUGC answered the FileId) until `GET /uploads/{id}` shows
the video, by the way the upload gets attributed:

- `complete`: the client reports the FileId (`POST /uploads/{id}/complete`) as soon as Commit answers;
- `push`: VOD pushes NewFileUpload to the callback (vodlocal pushes at once, as VOD does within seconds);
- `pull busy`: a PULL consumer run is pulling when the upload lands (its long-poll returns with the event);
- `pull idle`: no run is, and the upload waits for the next scheduled one. The consumer is the code of this tree
  (`app.pull_vod_events`) on its schedule: a run every minute, each pulling until a pull finds the queue empty (or
  shortly before its 60 s timeout).

A local stack: the API served as `make dev` serves it (devstack.api, the local stage), the local DynamoDB
(moto, in-process), vodlocal in-process (PUSH, or PULL with VOD's 5 s long-poll). The client polls `GET
/uploads/{id}` every 20 ms. Medians, and each as a ratio to `complete`'s in the same run.

Run: `.venv/bin/python bench/attribution_latency.py [--uploads 15] [--pull-minutes 4] [--port 9060]`.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from chalicelib.auth import load_or_create_local_key, mint_local_token  # noqa: E402
from devstack.dynamodb import DynamoDBServer  # noqa: E402
from devstack.health import wait_until_healthy  # noqa: E402
from devstack.pull import RunContext, scheduled_event  # noqa: E402
from devstack.table import ensure_table, local_client  # noqa: E402
from devstack.token import local_signing_key, local_stage_env  # noqa: E402
from tests.test_pull_consumer import commit_through  # noqa: E402
from vodlocal import Config, Handle, start  # noqa: E402

POLL_SECONDS = 0.02
SCHEDULE_SECONDS = 60.0  # Rate(1, MINUTES) in app.py
RUN_TIMEOUT_SECONDS = 60  # the consumer's Lambda timeout (app.PULL_RUN_SECONDS)


def call(method: str, url: str, token: str, body: bytes | None = None) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    response = requests.request(method, url, data=body, headers=headers, timeout=15)
    return response.status_code, response.json()


class Stack:
    """The API on `port` and vodlocal, over one DynamoDB table."""

    def __init__(self, api: str, vod: Handle, token: str) -> None:
        self.api, self.vod, self.token = api, vod, token

    def post(self, path: str, body: bytes) -> dict[str, Any]:
        status, answer = call("POST", self.api + path, self.token, body or b"{}")
        assert status in (200, 201), (path, status, answer)
        return dict(answer)

    def committed(self) -> tuple[str, str, float]:
        """An upload through the UGC protocol, as an SDK makes it: (uploadId, FileId, when Commit answered)."""
        upload_id, file_id = commit_through(self.vod, self.post, os.urandom(64 * 1024))
        return upload_id, file_id, time.monotonic()

    def shown_after(self, upload_id: str, since: float, timeout: float = 120.0) -> float:
        """Seconds from `since` until `GET /uploads/{id}` shows the video."""
        ends = time.monotonic() + timeout
        while time.monotonic() < ends:
            status, body = call("GET", f"{self.api}/uploads/{upload_id}", self.token)
            if status == 200 and body["video"] is not None:
                return time.monotonic() - since
            time.sleep(POLL_SECONDS)
        raise RuntimeError(f"upload {upload_id} was never attributed")

    def report(self, upload_id: str, file_id: str) -> str:
        body = json.dumps({"fileId": file_id}).encode()
        status, answer = call("POST", f"{self.api}/uploads/{upload_id}/complete", self.token, body)
        assert status == 200, answer
        return str(answer["outcome"])


@contextmanager
def stack(dynamodb: str, work: Path, port: int, mode: str) -> Iterator[Stack]:
    env = local_stage_env()
    table = f"bench-{mode.lower()}-{os.getpid()}"
    ensure_table(local_client(dynamodb), table)
    config = Config(
        port=port + 1,
        data_dir=work / f"vodlocal-{mode.lower()}",
        secrets={env["VOD_SECRET_ID"]: env["VOD_SECRET_KEY"]},
        callback_url=f"http://127.0.0.1:{port}/vod/events/{env['VOD_CALLBACK_TOKEN']}",
        sign_key=env["VOD_SIGN_KEY"],
        mode="PULL" if mode == "PULL" else "PUSH",
        pull_wait=5.0,  # VOD's long-poll (vod-protocol.md §3.2)
        procedure_delay=3600,
    )
    policy = {"default": {"maxOpenIntents": 10**6, "maxIntentsPerHour": 10**6}}
    overrides = {
        "TABLE_NAME": table,
        "DYNAMODB_ENDPOINT_URL": dynamodb,
        "EVENT_MODE": mode.lower(),
        "VOD_API_ENDPOINT": f"http://127.0.0.1:{port + 1}",
        "UPLOAD_POLICY": json.dumps(policy),
    }
    os.environ.update({**env, **overrides})  # the PULL consumer runs in this process, as its own Lambda would
    key_file, issuer = local_signing_key()
    token = mint_local_token(load_or_create_local_key(str(key_file)), issuer, "bench", None, 3600)
    command = [sys.executable, "-m", "devstack.api", "--project-dir", str(ROOT), "--stage", "local"]
    command += ["--port", str(port)]
    command += [arg for name, value in overrides.items() for arg in ("--override", f"{name}={value}")]
    with start(config) as vod:
        api = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_until_healthy(f"http://127.0.0.1:{port}/health", api, timeout=60, name="the API")
            yield Stack(f"http://127.0.0.1:{port}", vod, token)
        finally:
            api.terminate()
            api.wait(timeout=10)


def measure_push(s: Stack, uploads: int) -> list[float]:
    samples = []
    for _ in range(uploads):
        upload_id, _file_id, committed = s.committed()
        samples.append(s.shown_after(upload_id, committed))
    return samples


def measure_complete(s: Stack, uploads: int) -> list[float]:
    """In PULL mode with no consumer running: nothing but the report attributes the upload."""
    samples = []
    for _ in range(uploads):
        upload_id, file_id, committed = s.committed()
        assert s.report(upload_id, file_id) == "attributed"
        samples.append(s.shown_after(upload_id, committed))
    return samples


class Schedule:
    """`app.pull_vod_events` invoked every SCHEDULE_SECONDS, as EventBridge invokes it, each run with the Lambda's
    timeout. `running` is set while a run is in its handler."""

    def __init__(self) -> None:
        import app

        self.handler: Callable[..., Any] = app.app.handler_map["pull_vod_events"]
        self.running = threading.Event()
        self.finished = threading.Event()
        self.stop = threading.Event()
        self.reports: list[dict[str, Any]] = []
        self.thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        tick = time.monotonic()
        while not self.stop.is_set():
            self.finished.clear()
            self.running.set()
            self.reports.append(self.handler(scheduled_event(), RunContext(RUN_TIMEOUT_SECONDS)))
            self.running.clear()
            self.finished.set()
            tick += SCHEDULE_SECONDS
            self.stop.wait(max(0.0, tick - time.monotonic()))

    def next_tick_in(self, started: float) -> float:
        return SCHEDULE_SECONDS - ((time.monotonic() - started) % SCHEDULE_SECONDS)


def measure_pull(s: Stack, minutes: int, busy_per_minute: int) -> tuple[list[float], list[float]]:
    """Each minute: `busy_per_minute` uploads while the run pulls, then one in the gap before the next run."""
    schedule = Schedule()
    started = time.monotonic()
    schedule.thread.start()
    busy: list[float] = []
    idle: list[float] = []
    try:
        for _ in range(minutes):
            for _ in range(busy_per_minute):
                time.sleep(random.uniform(2.0, 12.0))  # spread over the run
                upload_id, _file_id, committed = s.committed()
                if schedule.running.is_set():
                    busy.append(s.shown_after(upload_id, committed))
                else:
                    idle.append(s.shown_after(upload_id, committed))
            schedule.finished.wait(timeout=SCHEDULE_SECONDS * 2)  # the run has stopped pulling
            time.sleep(random.uniform(0.0, max(0.0, schedule.next_tick_in(started) - 0.5)))
            upload_id, _file_id, committed = s.committed()
            (busy if schedule.running.is_set() else idle).append(s.shown_after(upload_id, committed))
    finally:
        schedule.stop.set()
    runs = [(r.get("pulled"), round(float(r.get("ms", 0)))) for r in schedule.reports]
    print(f"  consumer runs (pulled): {[pulled for pulled, _ in runs]}", file=sys.stderr)
    return busy, idle


def row(name: str, samples: list[float], floor: float) -> str:
    if not samples:
        return f"| {name} | 0 | - | - | - | - |"
    median = statistics.median(samples)
    return (
        f"| {name} | {len(samples)} | {median * 1000:.0f} | {max(samples) * 1000:.0f} | "
        f"{min(samples) * 1000:.0f} | {median / floor:.1f}× |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--uploads", type=int, default=15, help="uploads measured for push and for complete")
    parser.add_argument("--pull-minutes", type=int, default=4, help="scheduled consumer runs to measure PULL over")
    parser.add_argument("--busy-per-minute", type=int, default=2)
    parser.add_argument("--port", type=int, default=9060, help="the API's port; vodlocal takes the next one")
    args = parser.parse_args()
    # The consumer runs in this process: its log lines and metrics would bury the table on stdout.
    os.environ.update(POWERTOOLS_LOG_LEVEL="WARNING", POWERTOOLS_METRICS_DISABLED="true")
    with DynamoDBServer() as dynamodb, tempfile.TemporaryDirectory() as work:
        print("push…", file=sys.stderr)
        with stack(dynamodb.endpoint_url, Path(work), args.port, "PUSH") as s:
            push = measure_push(s, args.uploads)
        print("complete, then pull…", file=sys.stderr)
        with stack(dynamodb.endpoint_url, Path(work), args.port + 2, "PULL") as s:
            complete = measure_complete(s, args.uploads)
            busy, idle = measure_pull(s, args.pull_minutes, args.busy_per_minute)
    floor = statistics.median(complete)
    print("| attributed by | uploads | median ms | max ms | min ms | median vs complete |")
    print("|---|---|---|---|---|---|")
    for name, samples in (("complete", complete), ("push", push), ("pull busy", busy), ("pull idle", idle)):
        print(row(name, samples, floor))


if __name__ == "__main__":
    main()
