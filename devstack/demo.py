"""`make demo`: one upload as user alice with Tencent's Web SDK (e2e/js/harness.js) through vodlocal,
then alice's `GET /videos`. Uses a running `make dev` stack, or starts one for the demo."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from devstack.run import API_PORT, HOST, ROOT, VOD_PORT, local_stack, local_token
from devstack.token import local_stage_env

API = f"http://{HOST}:{API_PORT}"


def _get(path: str, token: str) -> Any:
    request = urllib.request.Request(f"{API}{path}", headers={"Authorization": f"Bearer {token}"})  # noqa: S310
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 - fixed local URL
        return json.load(response)


def _api_up() -> bool:
    try:
        urllib.request.urlopen(f"{API}/health", timeout=1).close()  # noqa: S310 - fixed local URL
        return True
    except OSError:
        return False


def run_demo() -> None:
    node = shutil.which("node")
    if node is None:
        raise SystemExit("make demo needs Node.js 20+ (the official Web SDK runs in it)")
    token = local_token("alice")
    with tempfile.TemporaryDirectory() as workdir:
        clip = Path(workdir) / "demo-clip.mp4"
        clip.write_bytes(os.urandom(3 * 1024 * 1024))
        print(f"uploading {clip.name} (3 MiB) as alice with vod-js-sdk-v6 through vodlocal…", flush=True)
        env = {
            "PATH": os.environ.get("PATH", ""),
            "EMU": f"http://{HOST}:{VOD_PORT}",
            "SIGNING_URL": f"{API}/",
            "AUTH_TOKEN": token,
            "FILE": str(clip),
            "CHUNK_SIZE": str(1024 * 1024),
        }
        harness = subprocess.run(  # noqa: S603
            [node, str(ROOT / "e2e" / "js" / "harness.js")], env=env, capture_output=True, text=True, timeout=120
        )
    result = json.loads(harness.stdout.strip().splitlines()[-1]) if harness.stdout.strip() else {}
    if not result.get("ok"):
        raise SystemExit(f"upload failed: {result or harness.stderr}")
    file_id = result["result"]["fileId"]
    print(f"uploaded: fileId {file_id}, upload intent {result['uploadId']}; waiting for the callback…", flush=True)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        videos = _get("/videos", token)["videos"]
        if any(video["fileId"] == file_id for video in videos):
            print("GET /videos as alice:")
            print(json.dumps(videos[0], indent=2))
            return
        time.sleep(0.2)
    raise SystemExit(f"video {file_id} did not appear in alice's list: is the callback wired?")


def main() -> None:
    with contextlib.ExitStack() as stack:
        if not _api_up():
            print("no local stack on 127.0.0.1:8000: starting one for the demo", flush=True)
            stack.enter_context(local_stack(local_stage_env(), autoreload=False))
        run_demo()


if __name__ == "__main__":
    main()
