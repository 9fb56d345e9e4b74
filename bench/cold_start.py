"""Cold-start costs: importing `app` in a fresh interpreter vs. `import boto3; boto3.client('dynamodb')`.

Run: `.venv/bin/python bench/cold_start.py [--runs 7]`. Prints the median wall time of each, measured
in fresh processes, in the same run so the numbers are comparable.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

SNIPPETS = {
    "import app": "import app",
    "import boto3; boto3.client('dynamodb')": "import boto3; boto3.client('dynamodb', region_name='us-east-1')",
    "import app + first signature (services built, no network)": (
        "import app\n"
        "from chalicelib.container import services\n"
        "from chalicelib import vod_signature\n"
        "s = services()\n"
        "sec = s.secrets.get()\n"
        "vod_signature.sign(vod_signature.new_params(sec.vod_secret_id, 900, vod_signature.SignatureOptions()),"
        " sec.vod_secret_key)"
    ),
}


def timed(code: str, env: dict[str, str]) -> float:
    probe = f"import time; t0 = time.perf_counter()\n{code}\nprint(time.perf_counter() - t0)"
    out = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, env=env, capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    config = json.loads((ROOT / ".chalice" / "config.json").read_text())
    env = {**os.environ, **config["stages"]["local"]["environment_variables"], "PYTHONDONTWRITEBYTECODE": "0"}
    for label, code in SNIPPETS.items():
        timed(code, env)  # warm the bytecode cache once, as a deployed package has .pyc files
        samples = [timed(code, env) for _ in range(args.runs)]
        print(f"{label:60s} median {statistics.median(samples) * 1000:7.1f} ms  (min {min(samples) * 1000:.1f})")


if __name__ == "__main__":
    main()
