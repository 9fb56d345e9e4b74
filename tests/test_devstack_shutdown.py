"""Stopping `make dev` (through make, in its own process group) leaves nothing running and every port free: SIGTERM
to the group (make forwards it, so devstack.run gets it twice), SIGINT to the group, Ctrl-C in a terminal, SIGTERM
to devstack.run alone, a volley of signals, a stop while the stack is still starting, a child that does not stop
on SIGTERM, and a user forcing the stop."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from devstack.run import FORCE_AFTER, STOP_TIMEOUT
from tests.test_devstack_stack import MakeDev, listening


@pytest.fixture
def make_dev(tmp_path: Path) -> Iterator[Callable[..., MakeDev]]:
    stacks: list[MakeDev] = []

    def start(terminal: bool = False) -> MakeDev:
        stacks.append(MakeDev(tmp_path / f"stack-{len(stacks)}", terminal=terminal))
        stacks[-1].workdir.mkdir()
        return stacks[-1].start()

    yield start
    for dev in stacks:
        dev.cleanup()


def assert_stopped_cleanly(dev: MakeDev) -> None:
    dev.wait(timeout=30)  # make exits once devstack.run has stopped its children
    assert dev.survivors() == {}, dev.log()[-3000:]
    assert not [port for port in dev.ports if listening(port)], dev.log()[-3000:]
    assert "\nstopped" in dev.log(), dev.log()[-3000:]  # devstack.run finished its shutdown


def components_seen(dev: MakeDev) -> None:
    commands = " | ".join(dev.seen.values())
    fragments = (
        "make dev",
        "-m devstack.run",
        "-m devstack.dynamodb",
        "-m vodlocal",
        "-m devstack.api",
        "-m devstack.events",
    )
    for fragment in fragments:
        assert fragment in commands, commands


@pytest.mark.parametrize("attempt", range(1, 6))
def test_sigterm_to_the_process_group_stops_everything(make_dev: Callable[..., MakeDev], attempt: int) -> None:
    dev = make_dev().wait_up()
    components_seen(dev)
    dev.signal_group(signal.SIGTERM)
    assert_stopped_cleanly(dev)


def test_sigint_to_the_process_group_stops_everything(make_dev: Callable[..., MakeDev]) -> None:
    dev = make_dev().wait_up()
    dev.signal_group(signal.SIGINT)
    assert_stopped_cleanly(dev)


def test_ctrl_c_in_a_terminal_stops_everything(make_dev: Callable[..., MakeDev]) -> None:
    dev = make_dev(terminal=True).wait_up()
    dev.ctrl_c()
    assert_stopped_cleanly(dev)


def test_sigterm_to_devstack_run_alone_stops_everything(make_dev: Callable[..., MakeDev]) -> None:
    dev = make_dev().wait_up()
    os.kill(dev.run_pid(), signal.SIGTERM)
    assert_stopped_cleanly(dev)


def test_a_volley_of_signals_does_not_interrupt_the_shutdown(make_dev: Callable[..., MakeDev]) -> None:
    dev = make_dev().wait_up()
    run = dev.run_pid()
    dev.signal_group(signal.SIGTERM)
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGINT, signal.SIGTERM):
        time.sleep(0.02)
        try:
            os.kill(run, signum)
        except ProcessLookupError:
            break  # already done
    assert_stopped_cleanly(dev)


def test_a_stop_while_starting_stops_what_has_started(make_dev: Callable[..., MakeDev]) -> None:
    dev = make_dev()
    dev.wait_until("DynamoDB (moto, serialised) on")
    dev.signal_group(signal.SIGTERM)
    assert_stopped_cleanly(dev)


def test_a_child_that_ignores_sigterm_is_killed_after_the_timeout(make_dev: Callable[..., MakeDev]) -> None:
    dev = make_dev().wait_up()
    os.kill(dev.pid_of("vodlocal"), signal.SIGSTOP)  # cannot act on SIGTERM
    started = time.monotonic()
    dev.signal_group(signal.SIGTERM)
    assert_stopped_cleanly(dev)
    assert STOP_TIMEOUT <= time.monotonic() - started < STOP_TIMEOUT + 5


def test_a_later_signal_forces_the_stop(make_dev: Callable[..., MakeDev]) -> None:
    dev = make_dev().wait_up()
    os.kill(dev.pid_of("vodlocal"), signal.SIGSTOP)
    run = dev.run_pid()
    dev.signal_group(signal.SIGTERM)
    signalled = time.monotonic()
    dev.wait_until("stopping…")  # devstack.run has the signal and is stopping its children
    time.sleep(max(0.0, signalled + FORCE_AFTER + 0.3 - time.monotonic()))  # so that the next signal forces
    assert dev.process is not None and dev.process.poll() is None  # still waiting for vodlocal
    forced = time.monotonic()
    os.kill(run, signal.SIGINT)  # the user presses Ctrl-C again
    assert_stopped_cleanly(dev)  # killed, and still waited for
    assert time.monotonic() - forced < 2
