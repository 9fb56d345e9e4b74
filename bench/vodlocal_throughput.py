"""Upload one large file (default 256 MiB) through vodlocal with the official JS SDK harness; print MB/s.

Not part of the test suite. Usage: ``.venv/bin/python -m bench.vodlocal_throughput [--mib 256]``
(needs node and ``npm ci --prefix e2e/js``).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import secrets
import shutil
import tempfile
import time
from pathlib import Path

import requests

from tests.signing_stub import SigningStub
from vodlocal import Config, start
from vodlocal.testing import run_harness

SECRET_ID = "AKIDvodlocalBENCH" + secrets.token_hex(9)
SECRET_KEY = secrets.token_urlsafe(24)
TOKEN = secrets.token_urlsafe(16)
MiB = 1 << 20


def write_random(path: Path, mib: int) -> str:
    """Writes ``mib`` MiB of random bytes, one MiB at a time; returns their MD5."""
    digest = hashlib.md5(usedforsecurity=False)
    with path.open("wb") as fh:
        for _ in range(mib):
            block = os.urandom(MiB)
            digest.update(block)
            fh.write(block)
    return digest.hexdigest()


def url_md5(url: str) -> str:
    """The MD5 of what a URL serves (a stored object's MediaUrl), streamed."""
    digest = hashlib.md5(usedforsecurity=False)
    with requests.get(url, stream=True, timeout=60) as resp:
        resp.raise_for_status()
        for chunk in resp.iter_content(MiB):
            digest.update(chunk)
    return digest.hexdigest()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--mib", type=int, default=256, help="file size in MiB")
    parser.add_argument("--chunk-mib", type=int, default=8, help="COS part size (the SDK default is 8)")
    parser.add_argument("--parallel", type=int, default=6, help="parts in flight (the SDK default is 6)")
    args = parser.parse_args()
    node = shutil.which("node")
    if node is None:
        raise SystemExit("node is required")
    with tempfile.TemporaryDirectory(prefix="vodlocal-bench-") as tmp:
        source = Path(tmp) / "big.mp4"
        source_md5 = write_random(source, args.mib)
        signing = SigningStub(SECRET_ID, SECRET_KEY, TOKEN).start()
        config = Config(port=0, data_dir=Path(tmp) / "data", secrets={SECRET_ID: SECRET_KEY})
        with start(config) as emulator:
            started = time.perf_counter()
            out = run_harness(
                node,
                emulator.url,
                signing.url,
                TOKEN,
                timeout=1800,
                FILE=source,
                CHUNK_SIZE=args.chunk_mib * MiB,
                PARALLEL=args.parallel,
                RACE=0,
            )
            elapsed = time.perf_counter() - started
            if not out.get("ok"):
                raise SystemExit(f"upload failed: {out}")
            parts = emulator.requests("UploadPart")
            complete = emulator.requests("CompleteMultipartUpload")
            stored_md5 = url_md5(out["result"]["video"]["url"])
        signing.stop()
    assert stored_md5 == source_md5, "stored bytes differ from the source"
    sdk_ms = out["ms"]
    print(
        f"{args.mib} MiB in {elapsed:.2f} s wall ({sdk_ms / 1000:.2f} s inside the SDK): "
        f"{args.mib * MiB / 1e6 / elapsed:.1f} MB/s end-to-end, {args.mib * MiB / 1e6 / (sdk_ms / 1000):.1f} MB/s "
        f"upload; MD5 verified"
    )
    part_ms = sorted(p["ms"] for p in parts)
    print(
        f"server side: {len(parts)} UploadPart, median {part_ms[len(part_ms) // 2]:.0f} ms each; "
        f"CompleteMultipartUpload {complete[0]['ms']:.0f} ms"
    )


if __name__ == "__main__":
    main()
