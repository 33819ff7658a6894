"""The machine's test lock: a test marked ``alone`` waits for the tests already running,
and no new test starts while it waits or runs."""

from __future__ import annotations

import fcntl
import threading
from contextlib import AbstractContextManager
from pathlib import Path

import pytest

from stack import machine_locks
from stack.waits import until

pytestmark = pytest.mark.unit


class Holder(threading.Thread):
    """Holds ``lock`` from when it gets it until :meth:`release`; ``entered`` once it has."""

    def __init__(self, lock: AbstractContextManager[None], order: list[str], name: str) -> None:
        super().__init__(daemon=True, name=name)
        self.lock, self.order = lock, order
        self.entered, self.released = threading.Event(), threading.Event()

    def run(self) -> None:
        with self.lock:
            self.order.append(self.name)
            self.entered.set()
            self.released.wait(30)

    def release(self) -> None:
        self.released.set()
        self.join(30)


def gate_closed(directory: Path) -> bool:
    """Whether a test that runs alone holds the gate (a shared hold is refused)."""
    with (directory / f"{machine_locks.GATE}.lock").open("ab") as gate:
        try:
            fcntl.flock(gate, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(gate, fcntl.LOCK_UN)
        return False


def test_a_test_alone_waits_for_running_ones_and_goes_before_new_ones(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(machine_locks, "DIRECTORY", tmp_path)  # not this run's own lock
    order: list[str] = []
    running = Holder(machine_locks.beside_others(), order, "running")
    beside = Holder(machine_locks.beside_others(), order, "beside")
    running.start(), beside.start()
    until(lambda: running.entered.is_set() and beside.entered.is_set(), "both tests run")

    measuring = Holder(machine_locks.alone(), order, "alone")
    measuring.start()
    until(lambda: gate_closed(tmp_path), "the alone test holds the gate")
    arriving = Holder(machine_locks.beside_others(), order, "arriving")
    arriving.start()
    assert not measuring.entered.wait(0.3), "it ran beside running tests"

    running.release(), beside.release()
    until(measuring.entered.is_set, "the alone test runs once the running ones ended")
    assert not arriving.entered.wait(0.3), "a new test started beside the alone one"
    measuring.release()
    until(arriving.entered.is_set, "the new test runs after it")
    arriving.release()
    assert order == ["running", "beside", "alone", "arriving"] or order == [
        "beside",
        "running",
        "alone",
        "arriving",
    ]
