"""The same file (default 256 MiB) through vodlocal, in one run, with three clients, each in a child process:

* vodup: its command, ``vodup upload``, as a user runs it;
* raw cos-python-sdk-v5: ``CosS3Client.upload_file`` (multipart, same part size and parallelism), between the same
  ApplyUploadUGC and CommitUploadUGC, with signatures from the same signing stub; once as it comes (no integrity
  check) and once with ``EnableMD5`` (a Content-MD5 per part, the check vodup always makes);
* the Web SDK: vod-js-sdk-v6 in Node (``e2e/js/harness.js``), same chunk size and parallelism.

Each round starts a fresh vodlocal and runs the clients in a rotated order; every stored object's MD5 is checked.
Prints MB/s per client, the median of the per-round ratios to raw COS (target: vodup >= 0.9), and each client's
peak RSS (``wait4``). Not part of the test suite. Usage:
``.venv/bin/python -m bench.vodup_throughput [--mib 256] [--rounds 3] [--no-js]`` (the Web SDK needs node and
``npm ci --prefix e2e/js``).
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests
from qcloud_cos import CosConfig, CosS3Client

from bench.vodlocal_throughput import MiB, url_md5, write_random
from tests.signing_stub import SigningStub
from vodlocal import Config, start
from vodlocal.testing import HARNESS, harness_env, harness_result

SECRET_ID = "AKIDvodlocalBENCH" + secrets.token_hex(9)
SECRET_KEY = secrets.token_urlsafe(24)
TOKEN = secrets.token_urlsafe(16)
CLIENTS = ("vodup", "raw-cos", "raw-cos-md5", "web-sdk")


@dataclass(frozen=True)
class Run:
    seconds: float
    peak_mib: float
    url: str


def measured(argv: list[str], env: dict[str, str], workdir: Path) -> tuple[str, float, float]:
    """Runs a child to completion: its stdout, wall seconds and peak RSS in MiB (from wait4, so it is the child's
    own, not the largest of all children so far)."""
    out, err = workdir / "stdout", workdir / "stderr"
    with out.open("w") as stdout, err.open("w") as stderr:
        started = time.perf_counter()
        proc = subprocess.Popen(argv, env=env, stdout=stdout, stderr=stderr)
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"{argv[:3]} failed ({proc.returncode}):\n{out.read_text()}\n{err.read_text()[-3000:]}")
    return out.read_text(), seconds, usage.ru_maxrss / 1024


def run_client(client: str, source: Path, emulator: str, signing: str, args: argparse.Namespace, work: Path) -> Run:
    work.mkdir()
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(work)}
    if client == "vodup":
        argv = [str(Path(sys.executable).with_name("vodup")), "upload", str(source), "--api", signing, "--token", TOKEN]
        argv += ["--emulator", emulator, "--part-size", str(args.part_mib), "--parallel", str(args.parallel)]
        argv += ["--state-dir", str(work / "state"), "--json"]
        stdout, seconds, peak = measured(argv, env, work)
        return Run(seconds, peak, json.loads(stdout)["mediaUrl"])
    if client.startswith("raw-cos"):
        argv = [sys.executable, "-m", "bench.vodup_throughput", "--raw-cos-child", str(source), "--emulator", emulator]
        argv += ["--md5"] if client == "raw-cos-md5" else []
        argv += [
            "--signing",
            signing,
            "--token",
            TOKEN,
            "--part-mib",
            str(args.part_mib),
            "--parallel",
            str(args.parallel),
        ]
        stdout, seconds, peak = measured(argv, {**env, "PYTHONPATH": str(Path.cwd())}, work)
        return Run(seconds, peak, json.loads(stdout)["mediaUrl"])
    node = shutil.which("node")
    assert node is not None
    js_env = harness_env(
        emulator,
        signing,
        TOKEN,
        FILE=source,
        CHUNK_SIZE=args.part_mib * MiB,
        PARALLEL=args.parallel,
        RACE=0,
        TIMEOUT_MS=3_600_000,
    )
    stdout, seconds, peak = measured([node, str(HARNESS)], js_env, work)
    result = harness_result(stdout, "", 0)
    if not result.get("ok"):
        raise SystemExit(f"web-sdk upload failed: {result}")
    return Run(seconds, peak, result["result"]["video"]["url"])


def raw_cos_child(args: argparse.Namespace) -> None:
    """The comparison client: only the official COS SDK and plain HTTP, none of vodup."""
    http = requests.Session()
    proxies = {"http": args.emulator}
    upload_id: str | None = None

    def signature() -> str:
        nonlocal upload_id
        path = f"uploads/{upload_id}/signature" if upload_id else "uploads"
        body = http.post(args.signing + path, headers={"Authorization": f"Bearer {args.token}"}, timeout=30).json()
        upload_id = upload_id or body["uploadId"]
        return str(body["signature"])

    def ugc(action: str, body: dict[str, Any]) -> dict[str, Any]:
        answer = http.post(
            "http://vod2.qcloud.com/v3/index.php",
            params={"Action": action},
            json={**body, "signature": signature()},
            proxies=proxies,
            timeout=30,
        ).json()
        assert answer["code"] == 0, answer
        data: dict[str, Any] = answer["data"]
        return data

    source = Path(args.raw_cos_child)
    data = ugc("ApplyUploadUGC", {"videoName": source.stem, "videoType": "mp4", "videoSize": source.stat().st_size})
    cert = data["tempCertificate"]
    config = CosConfig(
        Region=data["storageRegionV5"],
        SecretId=cert["secretId"],
        SecretKey=cert["secretKey"],
        Token=cert["token"],
        Scheme="http",
        Proxies=proxies,
    )
    CosS3Client(config).upload_file(
        Bucket=f"{data['storageBucket']}-{data['storageAppId']}",
        Key=data["video"]["storagePath"].lstrip("/"),
        LocalFilePath=str(source),
        PartSize=args.part_mib,
        MAXThread=args.parallel,
        EnableMD5=args.md5,
    )
    committed = ugc("CommitUploadUGC", {"vodSessionKey": data["vodSessionKey"]})
    print(json.dumps({"mediaUrl": committed["video"]["url"]}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mib", type=int, default=256, help="file size in MiB")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--part-mib", type=int, default=8, help="part size (the Web SDK's default is 8)")
    parser.add_argument("--parallel", type=int, default=6, help="parts in flight (the Web SDK's default is 6)")
    parser.add_argument("--no-js", action="store_true", help="leave the Web SDK out")
    parser.add_argument("--raw-cos-child", help=argparse.SUPPRESS)
    parser.add_argument("--emulator", help=argparse.SUPPRESS)
    parser.add_argument("--signing", help=argparse.SUPPRESS)
    parser.add_argument("--token", help=argparse.SUPPRESS)
    parser.add_argument("--md5", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.raw_cos_child:
        raw_cos_child(args)
        return
    clients = [c for c in CLIENTS if not (c == "web-sdk" and (args.no_js or shutil.which("node") is None))]
    runs: dict[str, list[Run]] = {c: [] for c in clients}
    with tempfile.TemporaryDirectory(prefix="vodup-bench-") as tmp:
        source = Path(tmp) / "big.mp4"
        source_md5 = write_random(source, args.mib)
        signing = SigningStub(SECRET_ID, SECRET_KEY, TOKEN).start()
        try:
            for round_number in range(args.rounds):
                order = clients[round_number % len(clients) :] + clients[: round_number % len(clients)]
                data_dir = Path(tmp) / f"vodlocal-{round_number}"
                with start(Config(port=0, data_dir=data_dir, secrets={SECRET_ID: SECRET_KEY})) as emulator:
                    for client in order:
                        run = run_client(client, source, emulator.url, signing.url, args, data_dir / client)
                        assert url_md5(run.url) == source_md5, f"{client}: stored bytes differ from the source"
                        runs[client].append(run)
                        print(f"round {round_number + 1} {client}: {args.mib * MiB / 1e6 / run.seconds:.1f} MB/s")
                shutil.rmtree(data_dir)
        finally:
            signing.stop()
    print(f"\n{args.mib} MiB, {args.part_mib} MiB parts, {args.parallel} in flight, {args.rounds} rounds, MD5 verified")
    raw = runs["raw-cos"]
    for client in clients:
        mbps = statistics.median(args.mib * MiB / 1e6 / r.seconds for r in runs[client])
        ratio = statistics.median(b.seconds / r.seconds for r, b in zip(runs[client], raw, strict=True))
        peak = max(r.peak_mib for r in runs[client])
        print(f"{client:11} median {mbps:6.1f} MB/s  {ratio:.2f}x raw COS  peak RSS {peak:6.1f} MiB")


if __name__ == "__main__":
    main()
