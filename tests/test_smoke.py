"""`make smoke`'s script against the app served over real HTTP, as it runs after a deploy."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def smoke(url: str, env: dict[str, str], report: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603 - our own script
        [sys.executable, "-m", "deploy.smoke", "--url", url, "--stage", "local", "--report", str(report), *extra],
        cwd=ROOT,
        env={**os.environ, "LOCAL_JWT_KEY_FILE": env["LOCAL_JWT_KEY_FILE"]},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_smoke_test_passes_against_the_local_api(
    chalice_local: str, stage_env: dict[str, str], tmp_path: Path
) -> None:
    result = smoke(chalice_local, stage_env, tmp_path / "smoke.json")
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads((tmp_path / "smoke.json").read_text())
    assert [check["passed"] for check in report["checks"]] == [True] * 5
    assert "smoke: 5 passed, 0 failed" in result.stdout


def test_the_smoke_test_fails_when_the_api_is_not_the_stage_it_claims(
    chalice_local: str, stage_env: dict[str, str], tmp_path: Path
) -> None:
    """A token the API does not accept fails the checks that need a user, and the exit status says so."""
    result = smoke(chalice_local, stage_env, tmp_path / "smoke.json", "--token", "not-a-token")
    assert result.returncode == 1, result.stdout
    failed = [
        check["name"] for check in json.loads((tmp_path / "smoke.json").read_text())["checks"] if not check["passed"]
    ]
    assert failed == ["POST /uploads signs by the stage's policy", "GET /uploads/{id} shows the intent"]
