"""Machine-wide locks: what parallel workers and commands must do once, or one at a time.

One file lock per name in one directory of the system's temporary folder, shared by every
process of this machine (pytest-xdist's workers, ``python -m stack``, ``make``): building a
base or application image, preparing a wheelhouse, installing the offline build's tools,
holding the swarm. ci/test-in-container.sh mounts the directory into its runner, so the
suite inside it shares them too. Tests hold one more: a test that measures latency runs
:func:`alone`, every other :func:`beside_others` (conftest.py).
"""

from __future__ import annotations

import fcntl
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from filelock import FileLock

DIRECTORY = Path(tempfile.gettempdir()) / "websocket-gateway-locks"
# A build holds a lock for a minute or two; a holder stuck for 15 minutes is a failure.
TIMEOUT = 900.0  # seconds


def lock(name: str) -> FileLock:
    """The machine-wide lock ``name`` (use it as a context manager)."""
    DIRECTORY.mkdir(exist_ok=True)
    return FileLock(str(DIRECTORY / f"{name}.lock"), timeout=TIMEOUT)


# A test that runs alone holds TESTS exclusively; every other test holds it shared. Both
# pass through GATE first, so once a test asks to run alone no new test starts: it waits
# only for those already running.
GATE, TESTS = "tests-gate", "tests"


@contextmanager
def beside_others() -> Iterator[None]:
    """Run a test beside others, but never beside one that runs :func:`alone`."""
    with _flocked(GATE, fcntl.LOCK_SH):
        tests = _flock(TESTS, fcntl.LOCK_SH)
    try:
        yield
    finally:
        _unlock(tests)


@contextmanager
def alone() -> Iterator[None]:
    """Run a test while no other test of this machine runs: one that measures latency on
    cores the whole suite shares."""
    with _flocked(GATE, fcntl.LOCK_EX), _flocked(TESTS, fcntl.LOCK_EX):
        yield


@contextmanager
def _flocked(name: str, how: int) -> Iterator[None]:
    handle = _flock(name, how)
    try:
        yield
    finally:
        _unlock(handle)


def _flock(name: str, how: int) -> IO[bytes]:
    """The machine-wide file ``name``, held shared or exclusively (``how``) until
    :func:`_unlock`: the kernel releases it if the process dies."""
    DIRECTORY.mkdir(exist_ok=True)
    handle = (DIRECTORY / f"{name}.lock").open("ab")
    fcntl.flock(handle, how)
    return handle


def _unlock(handle: IO[bytes]) -> None:
    fcntl.flock(handle, fcntl.LOCK_UN)
    handle.close()
