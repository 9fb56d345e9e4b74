"""tests/cpu_report.py counts a file's own CPU and its reaped children's, serially and across xdist workers."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

BURNING = """
import subprocess, sys, time

BURN = "import time\\nstart = time.process_time()\\nwhile time.process_time() - start < 0.3: pass"

def test_burns_its_own_cpu_and_a_childs():
    exec(BURN)
    subprocess.run([sys.executable, "-c", BURN], check=True)
"""


@pytest.mark.parametrize("workers", ["0", "2"])
def test_each_file_is_reported_with_its_own_and_its_childrens_cpu(tmp_path: Path, workers: str) -> None:
    (tmp_path / "test_burning.py").write_text(BURNING)
    (tmp_path / "test_idle.py").write_text("def test_idle():\n    pass\n")
    result = subprocess.run(  # noqa: S603
        [
            *(sys.executable, "-m", "pytest", "-p", "tests.cpu_report", "-p", "no:cacheprovider", "-n", workers),
            *("--rootdir", str(tmp_path), "-c", "/dev/null", str(tmp_path)),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    rows = {
        m["file"]: (float(m["own"]), float(m["children"]))
        for m in re.finditer(
            r"^ *(?P<own>[\d.]+) \+ +(?P<children>[\d.]+) = +[\d.]+; +[\d.]+  (?P<file>\S+)$", result.stdout, re.M
        )
    }
    assert rows["test_burning.py"][0] >= 0.3 and rows["test_burning.py"][1] >= 0.3, result.stdout
    assert rows["test_idle.py"][1] == 0.0, result.stdout
    assert "all 2 files" in result.stdout
