"""Machine-wide locks: what parallel workers and commands must do once, or one at a time.

One file lock per name in one directory of the system's temporary folder, shared by every
process of this machine (pytest-xdist's workers, ``python -m stack``, ``make``): building a
base or application image, preparing a wheelhouse, installing the offline build's tools,
holding the swarm. ci/test-in-container.sh mounts the directory into its runner, so the
suite inside it shares them too.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from filelock import FileLock

DIRECTORY = Path(tempfile.gettempdir()) / "websocket-gateway-locks"
# A build holds a lock for a minute or two; a holder stuck for 15 minutes is a failure.
TIMEOUT = 900.0  # seconds


def lock(name: str) -> FileLock:
    """The machine-wide lock ``name`` (use it as a context manager)."""
    DIRECTORY.mkdir(exist_ok=True)
    return FileLock(str(DIRECTORY / f"{name}.lock"), timeout=TIMEOUT)
