"""CPU per test file: `make test PYTEST_ARGS="-p tests.cpu_report"` prints, after the run, the CPU time each file
took (the pytest process's own, which includes the local DynamoDB it serves, plus that of the child processes it
waited for: a `make dev`, a deploy, a browser), beside its wall-clock time.

On this project's 2-core machine the CPU bounds what any number of workers can reach: a suite that needs N CPU
seconds cannot finish in fewer than N/2 seconds, however it is scheduled. A child's CPU counts once it is reaped, so a
module fixture's server is counted in the test after which it stopped. Works serially and with pytest-xdist (each
worker sends its rows to the controller).
"""

from __future__ import annotations

import resource
import time
from collections import defaultdict
from collections.abc import Iterator
from typing import Any

import pytest

_rows: list[dict[str, Any]] = []
_KEY = "cpu_report"


def _cpu_seconds() -> tuple[float, float]:
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime, children.ru_utime + children.ru_stime


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[None]:
    own, children = _cpu_seconds()
    started = time.monotonic()
    yield
    own_after, children_after = _cpu_seconds()
    _rows.append(
        {
            "file": item.nodeid.split("::")[0],
            "own": own_after - own,
            "children": children_after - children,
            "wall": time.monotonic() - started,
        }
    )


def pytest_sessionfinish(session: pytest.Session) -> None:
    workeroutput = getattr(session.config, "workeroutput", None)
    if workeroutput is not None:  # an xdist worker: the controller prints
        workeroutput[_KEY] = _rows


def pytest_testnodedown(node: Any, error: Any) -> None:
    _rows.extend(getattr(node, "workeroutput", {}).get(_KEY, []))


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not _rows:
        return
    per_file: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0, 0.0])
    for row in _rows:
        totals = per_file[row["file"]]
        totals[0] += row["own"]
        totals[1] += row["children"]
        totals[2] += row["wall"]
    write = terminalreporter.write_line
    write("CPU per test file (s): own + children = CPU; wall")
    for name, (own, children, wall) in sorted(per_file.items(), key=lambda kv: -(kv[1][0] + kv[1][1])):
        write(f"{own:8.1f} + {children:7.1f} = {own + children:7.1f}; {wall:7.1f}  {name}")
    own, children, wall = (sum(totals[i] for totals in per_file.values()) for i in range(3))
    write(f"{own:8.1f} + {children:7.1f} = {own + children:7.1f}; {wall:7.1f}  all {len(per_file)} files")
