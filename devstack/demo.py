"""`make demo`: one upload as user alice with Tencent's Web SDK (e2e/js/harness.js) through vodlocal,
then alice's `GET /videos`. Uses a running `make dev` stack, or starts one for the demo."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from devstack.health import is_healthy
from devstack.run import API_PORT, HOST, VOD_PORT, local_stack, local_token
from devstack.token import local_stage_env
from vodlocal.testing import run_harness

API = f"http://{HOST}:{API_PORT}"


def _get(path: str, token: str) -> Any:
    request = urllib.request.Request(f"{API}{path}", headers={"Authorization": f"Bearer {token}"})  # noqa: S310
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 - fixed local URL
        return json.load(response)


def run_demo() -> None:
    node = shutil.which("node")
    if node is None:
        raise SystemExit("make demo needs Node.js 20+ (the official Web SDK runs in it)")
    token = local_token("alice")
    with tempfile.TemporaryDirectory() as workdir:
        clip = Path(workdir) / "demo-clip.mp4"
        clip.write_bytes(os.urandom(3 * 1024 * 1024))
        print(f"uploading {clip.name} (3 MiB) as alice with vod-js-sdk-v6 through vodlocal…", flush=True)
        try:
            result = run_harness(node, f"http://{HOST}:{VOD_PORT}", f"{API}/", token, FILE=clip, CHUNK_SIZE=1024 * 1024)
        except RuntimeError as error:  # no result line: the harness's own output says why
            raise SystemExit(f"upload failed: {error}") from None
    if not result.get("ok"):
        raise SystemExit(f"upload failed: {result}")
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
        if not is_healthy(f"{API}/health"):
            print("no local stack on 127.0.0.1:8000: starting one for the demo", flush=True)
            stack.enter_context(local_stack(local_stage_env(), autoreload=False))
        run_demo()


if __name__ == "__main__":
    main()
