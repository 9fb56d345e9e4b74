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
from http import HTTPStatus
from pathlib import Path
from typing import Any

from devstack.health import is_healthy
from devstack.run import API_PORT, HOST, VOD_PORT, local_stack, local_token
from devstack.token import local_stage_env
from vodlocal.testing import run_harness

API = f"http://{HOST}:{API_PORT}"
# Each `POST /uploads` (the README's curl example too) holds one of alice's open slots until an upload completes it.
OPEN_INTENTS_HINT = (
    "\nalice's upload intents stay open for the local stage's 6 h upload window unless an upload completes them;"
    " a restarted make dev starts with an empty table"
)


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
        refusal = result.get("error") or {}
        hint = OPEN_INTENTS_HINT if refusal.get("code") == HTTPStatus.TOO_MANY_REQUESTS else ""
        raise SystemExit(f"upload failed: {refusal.get('message') or result}{hint}")
    file_id = result["result"]["fileId"]
    print(
        f"uploaded: fileId {file_id}, upload intent {result['uploadId']}; waiting for VOD's event to reach the API…",
        flush=True,
    )
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        uploaded = [video for video in _get("/videos", token)["videos"] if video["fileId"] == file_id]
        if uploaded:
            print("GET /videos as alice, the uploaded video:")
            print(json.dumps(uploaded[0], indent=2))
            return
        time.sleep(0.2)
    raise SystemExit(
        f"video {file_id} did not appear in alice's list: did VOD's event reach the API (the callback, or the PULL "
        "consumer)? make dev's output says"
    )


def main() -> None:
    with contextlib.ExitStack() as stack:
        if not is_healthy(f"{API}/health"):
            print(f"no local stack on {API}: starting one for the demo", flush=True)
            stack.enter_context(local_stack(local_stage_env(), autoreload=False))
        run_demo()


if __name__ == "__main__":
    main()
