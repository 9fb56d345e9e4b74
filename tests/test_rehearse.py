"""`make rehearse`: a deploy, a redeploy from a fresh build directory, a destroy and a deploy again, against moto
and vodlocal (deploy/rehearse.py). In a file of its own, the suite's longest test (minutes): `make test` gives
each file to one worker, and this one no longer holds tests/test_deploy.py's others behind it."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from tests.conftest import ROOT


def test_make_rehearse_prints_the_api_the_vod_config_and_a_passing_smoke_test(tmp_path: Path) -> None:
    report = tmp_path / "smoke.json"
    result = subprocess.run(  # noqa: S603
        ["make", "--no-print-directory", "rehearse", f"REPORT={report}"],  # noqa: S607
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    lines = [line for line in result.stdout.splitlines() if line.startswith("rehearsal: ")]
    assert lines[0].startswith("rehearsal: API URL https://")
    assert lines[1].startswith("rehearsal: VOD event config read back from vodlocal: mode=PUSH url=https://")
    assert lines[1].endswith("/api/vod/events/… upload=ON delete=ON")
    assert "updated the same API" in lines[2]
    assert lines[3] == "rehearsal: gateway responses on the API: 8 of 8 as defined"
    assert lines[4] == (
        "rehearsal: destroy, then deploy again: video 5285890800000001 read back as written; REST APIs in the "
        "account: 1"
    )
    assert lines[5] == (
        "rehearsal: domain events: bus arn:aws:events:us-east-1:123456789012:event-bus/vod-upload-dev, dead-letter "
        "queue present, pipe from the table's stream to the bus; destroy removed the bus"
    )
    assert lines[6] == "rehearsal: PASSED"
    assert result.stdout.count("smoke: 5 passed, 0 failed") == 3
    assert all(check["passed"] for check in json.loads(report.read_text())["checks"])
