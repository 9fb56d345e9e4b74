"""`make dev`'s API restarts on a change to the app's code or config, and on nothing else: the real watcher
and the real API child (`devstack.api`), on a copy of the project so that the code can be changed."""

from __future__ import annotations

import os
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from devstack.run import ApiServer, CodeWatcher, Shutdown
from tests.conftest import ROOT, app_project_copy, free_port


@pytest.fixture
def project(stage_env: dict[str, str], tmp_path: Path) -> Path:
    project = app_project_copy(tmp_path / "project", stage_env)
    (project / "requirements.txt").write_text("chalice\n")
    return project


@pytest.fixture
def api(project: Path) -> Iterator[ApiServer]:
    server = ApiServer(project, "test", free_port())
    server.start(Shutdown())
    yield server
    server.stop()


def status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return error.code


def poll_for(api: ApiServer, seconds: float) -> None:
    """What devstack.run's main loop does between signals."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        api.poll(Shutdown())
        time.sleep(0.2)


def poll_until_restarted(api: ApiServer, restarts: int, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while api.restarts < restarts and time.monotonic() < deadline:
        api.poll(Shutdown())
        time.sleep(0.2)
    assert api.restarts == restarts


def touch(path: Path) -> None:
    later = time.time() + 5  # a different mtime even on a coarse-grained file system
    os.utime(path, (later, later))


def test_data_writes_do_not_restart_the_api(api: ApiServer, project: Path) -> None:
    assert api.process is not None
    pid = api.process.pid
    data = project / ".local" / "vodlocal"
    (data / "objects").mkdir(parents=True)
    for round_ in range(3):  # what vodlocal, the local key and Python write while the stack runs
        (data / "state.sqlite3").write_bytes(os.urandom(4096))
        (data / "objects" / f"part-{round_}").write_bytes(os.urandom(1024))
        (project / ".local" / "jwt-key.pem").write_text(f"key {round_}")
        (project / "chalicelib" / "__pycache__").mkdir(exist_ok=True)
        (project / "chalicelib" / "__pycache__" / "app.cpython-311.pyc").write_bytes(os.urandom(64))
        (project / ".venv" / "lib").mkdir(parents=True, exist_ok=True)
        (project / ".venv" / "lib" / f"pkg{round_}.py").write_text("x = 1\n")
        (project / "e2e-clip.mp4").write_bytes(os.urandom(1024))
        poll_for(api, 1.2)
    assert api.restarts == 0 and api.process.pid == pid and api.process.poll() is None
    assert status(f"{api.url}/health") == 200


def test_code_and_config_changes_restart_the_api(api: ApiServer, project: Path) -> None:
    assert api.process is not None
    pid = api.process.pid
    with (project / "app.py").open("a") as app_py:
        app_py.write('\n\n@app.route("/devstack-reload-probe")\ndef devstack_reload_probe() -> dict[str, int]:\n')
        app_py.write('    return {"generation": 2}\n')
    assert status(f"{api.url}/devstack-reload-probe") != 200
    poll_until_restarted(api, 1)
    assert api.process.pid != pid and status(f"{api.url}/devstack-reload-probe") == 200  # the new code is served

    touch(next((project / "chalicelib").glob("*.py")))
    poll_until_restarted(api, 2)
    (project / "chalicelib" / "new_module.py").write_text("VALUE = 1\n")
    poll_until_restarted(api, 3)
    touch(project / ".chalice" / "config.json")
    poll_until_restarted(api, 4)
    touch(project / "requirements.txt")
    poll_until_restarted(api, 5)
    assert status(f"{api.url}/health") == 200


def test_a_broken_change_keeps_the_watcher_going(api: ApiServer, project: Path) -> None:
    good = (project / "app.py").read_text()
    (project / "app.py").write_text(good + "\nthis is not python\n")
    poll_until_restarted(api, 1)
    assert api.process is not None and api.process.poll() is not None  # the child could not load the app
    (project / "app.py").write_text(good)
    poll_until_restarted(api, 2)
    assert status(f"{api.url}/health") == 200


def test_the_real_project_is_watched_with_a_few_dozen_stat_calls() -> None:
    watched = CodeWatcher(ROOT).snapshot()
    assert "app.py" in watched and ".chalice/config.json" in watched
    assert any(name.startswith("chalicelib/") for name in watched)
    assert not [name for name in watched if name.startswith((".local/", ".venv/", "e2e/")) or "__pycache__" in name]
    assert len(watched) < 100
