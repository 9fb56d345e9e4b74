"""The local DynamoDB endpoint under the app's transactions: server memory and latency, first vs last.

Run: `.venv/bin/python bench/local_dynamodb.py [--pairs 1000] [--unpatched] [--max-rss-mb 4096]`. Starts
`python -m devstack.dynamodb` on a free port (`--unpatched`: moto's own TransactWriteItems and instance
registry, for before/after numbers), creates the table from infra/data.json, and runs "create intent +
complete upload" pairs through chalicelib.storage: two TransactWriteItems each, as the app
sends them. Prints the server's RSS (VmRSS, and VmHWM its peak) and the median latency of the first and
the last 100 transactions. Stops early (and says so) if the server's RSS passes --max-rss-mb.
"""

from __future__ import annotations

import argparse
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from chalicelib.media import MediaFacts
from chalicelib.storage import Storage
from chalicelib.uploads import IntentLimits
from chalicelib.videos import Video
from devstack.table import ensure_table, local_client
from tests.test_repository_limits import NOW, intent

ROOT = Path(__file__).resolve().parent.parent
WINDOW = 100


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def memory_kb(pid: int) -> dict[str, int]:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            fields[name] = int(value.split()[0])
    return fields


def start_server(port: int, unpatched: bool) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "devstack.dynamodb", "--port", str(port)]
    server = subprocess.Popen([*command, *(["--unpatched"] if unpatched else [])], cwd=ROOT)
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return server
        except OSError:
            if time.monotonic() > deadline or server.poll() is not None:
                server.kill()
                raise SystemExit("the DynamoDB endpoint did not start") from None
            time.sleep(0.1)


def video(index: int, upload_id: str) -> Video:
    return Video(
        file_id=f"52858907988{index:08d}",
        owner="alice",
        upload_id=upload_id,
        received_at=NOW + 60,
        title="t",
        file_name=f"clip-{index}.mp4",
        metadata={"k": [1, 2]},
        media=MediaFacts(
            name=f"clip {index}",
            media_url=f"https://example.vod2.myqcloud.com/hash/clip-{index}.mp4",
            media_type="mp4",
            size=10_485_760,
            duration=12.5,
            width=1920,
            height=1080,
            md5="0" * 32,
            storage_region="ap-guangzhou",
            class_id=0,
        ),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=1000)
    parser.add_argument("--unpatched", action="store_true", help="serve with moto as it is (the before numbers)")
    parser.add_argument("--max-rss-mb", type=int, default=4096, help="stop early when the server grows past this")
    args = parser.parse_args()
    port = free_port()
    server = start_server(port, args.unpatched)
    try:
        client = local_client(f"http://127.0.0.1:{port}")
        ensure_table(client, "bench")
        storage = Storage.over(client, "bench")
        latencies: list[float] = []
        started = [0.0]

        def before(**_: Any) -> None:
            started[0] = time.perf_counter()

        def after(**_: Any) -> None:
            latencies.append((time.perf_counter() - started[0]) * 1000)

        client.meta.events.register("before-send.dynamodb.TransactWriteItems", before)
        client.meta.events.register("after-call.dynamodb.TransactWriteItems", after)
        rss_at_start = memory_kb(server.pid)["VmRSS"]
        limits = IntentLimits(10**6, 10**6)
        stopped_at = None
        began = time.perf_counter()
        for index in range(args.pairs):
            created = intent(f"bench{index}")
            storage.intents.create_intent(created, limits, NOW)
            storage.videos.complete_upload(created, video(index, created.upload_id), NOW + 60)
            if memory_kb(server.pid)["VmRSS"] > args.max_rss_mb * 1024:
                stopped_at = index + 1
                break
        elapsed = time.perf_counter() - began
        memory = memory_kb(server.pid)
    finally:
        server.terminate()
        server.wait(timeout=10)

    pairs = stopped_at or args.pairs
    print(f"moto {'unpatched' if args.unpatched else 'patched'}: {pairs} create+complete pairs")
    if stopped_at:
        print(f"  STOPPED EARLY: the server passed {args.max_rss_mb} MB")
    print(f"  transactions        {len(latencies)} in {elapsed:.1f} s")
    rss, peak, start = memory["VmRSS"] / 1024, memory["VmHWM"] / 1024, rss_at_start / 1024
    print(f"  server RSS          {rss:.0f} MB (peak {peak:.0f} MB; {start:.0f} MB before the first pair)")
    if len(latencies) >= 2 * WINDOW:
        first = statistics.median(latencies[:WINDOW])
        last = statistics.median(latencies[-WINDOW:])
        print(f"  median, first {WINDOW}   {first:.2f} ms")
        print(f"  median, last {WINDOW}    {last:.2f} ms")
        print(f"  last / first        {last / first:.2f}")


if __name__ == "__main__":
    main()
