"""Every worker's metrics from any worker's ``/metrics`` (``WS_WORKERS`` > 1).

The workers share one port (SO_REUSEPORT), so a scrape reaches one of them at random.
Each worker writes its exposition to a file in a directory the supervisor made, every
``SNAPSHOT_INTERVAL`` seconds and again before it answers a scrape; the answer is every
worker's file, each sample labelled with its ``worker``. Prometheus sums them
(``sum(ws_connections_active)``); a worker's series come from its own file only, so its
counters never step back between two scrapes that reach different workers (a fall would
read as a counter reset). Another worker's numbers are at most ``SNAPSHOT_INTERVAL`` old.
"""

from __future__ import annotations

import asyncio
import os
import re
from pathlib import Path

from .metrics import Metrics

SNAPSHOT_INTERVAL = 1.0  # seconds
_FILE = re.compile(r"worker-(\d+)\.prom")


def with_worker(exposition: str, worker: int) -> list[str]:
    """The lines of ``exposition`` with ``worker="N"`` added to each sample's labels."""
    label = f'worker="{worker}"'
    out = []
    for line in exposition.splitlines():
        if not line or line.startswith("#"):
            out.append(line)
            continue
        name, space, rest = line.partition(" ")
        brace = line.find("{")
        if "worker=" in line:  # ws_process_info names its worker already
            out.append(line)
        elif 0 < brace < len(name):
            out.append(f"{line[: brace + 1]}{label},{line[brace + 1 :]}")
        else:
            out.append(f"{name}{{{label}}}{space}{rest}")
    return out


def merge(expositions: dict[int, str]) -> str:
    """One exposition: each family's HELP and TYPE once, then every worker's samples."""
    families: dict[str, list[str]] = {}  # family -> HELP, TYPE, samples (first worker's order)
    current: list[str] = []
    new = False
    for worker in sorted(expositions):
        for line in with_worker(expositions[worker], worker):
            if line.startswith("# HELP "):
                name = line.split(" ", 3)[2]
                new = name not in families
                current = families.setdefault(name, [line])
            elif line.startswith("# TYPE "):
                if new:
                    current.append(line)
            elif line:
                current.append(line)
    return "\n".join(line for lines in families.values() for line in lines) + "\n"


class SharedMetrics:
    """One worker's side: write its snapshot, answer a scrape for all workers."""

    def __init__(self, directory: Path, worker: int, metrics: Metrics) -> None:
        self.directory = directory
        self.worker = worker
        self.metrics = metrics

    def write(self) -> None:
        """Replace this worker's file with its exposition now (atomic: readers never see half)."""
        path = self.directory / f"worker-{self.worker}.prom"
        partial = path.with_suffix(f".{os.getpid()}.tmp")
        partial.write_text(self.metrics.render())
        os.replace(partial, path)

    def render(self) -> str:
        """Every worker's last snapshot (this one's fresh), labelled by worker."""
        self.write()
        expositions = {}
        for path in self.directory.iterdir():
            match = _FILE.fullmatch(path.name)
            if match:
                try:
                    expositions[int(match[1])] = path.read_text()
                except FileNotFoundError:  # pragma: no cover - removed while stopping
                    continue
        return merge(expositions)

    async def run(self) -> None:
        """Write the snapshot every SNAPSHOT_INTERVAL until cancelled."""
        while True:
            self.write()
            await asyncio.sleep(SNAPSHOT_INTERVAL)
