"""``python -m stack bench``: throughput, latency and capacity of the gateway, in one run.

Every figure is measured in this run, against the bare ``websockets`` echo (baseline.py) in
a container with the server's own image and limits, so ratios hold even on a busy machine.
Load comes from client processes (loadgen.py) on the host; their CPU, the server's and
NGINX's are reported beside each figure. Everything started here is one private stack per
server configuration (stacks.py), taken down before the next (and on any error or Ctrl-C).

This module sequences the phases: throughput.py and latency.py per setup (setups.py),
then idle_memory.py and capacity.py, each on a stack of its own.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from testcontainers.core.config import testcontainers_config

from stack import images
from stack.bench import (
    bench_report,
    capacity,
    idle_memory,
    latency,
    resource_usage,
    stacks,
    targets_met,
    throughput,
)
from stack.bench.bench_settings import Settings
from stack.bench.loadgen import raise_fd_limit
from stack.bench.setups import (
    LATENCY_RUNS,
    NGINX_BENCH_ENV,
    SERVER_BENCH_ENV,
    SETUPS,
    THROUGHPUT_RUNS,
    Run,
    Setup,
)
from stack.bench.stacks import Session
from stack.containers import Service
from stack.gateway import GatewayStack

ROOT = Path(__file__).resolve().parents[2]
REPORTS = ROOT / "reports" / "bench"

Measure = Callable[[Session, GatewayStack, Setup, Run, dict[str, Any]], dict[str, Any]]


class Bench:
    """One bench run: the phases ``settings`` asks for, in order; ``run()`` returns the results."""

    def __init__(self, settings: Settings, console: Console | None = None) -> None:
        self.settings = settings
        self.console = console or Console()
        self.results: dict[str, Any] = {
            "started": datetime.now(UTC).isoformat(timespec="seconds"),
            "settings": settings.as_report(),
            "nginx_env": NGINX_BENCH_ENV,
            "server_env": SERVER_BENCH_ENV,
            "throughput": [],
            "latency": [],
            "capacity": None,
            "notes": [],
        }
        self.stack_prefix = f"wsgw-bench-{int(time.time()) % 100000}"

    def run(self) -> dict[str, Any]:
        phases = self.settings.phases
        testcontainers_config.ryuk_disabled = True  # our own teardown removes everything
        fd_limit = raise_fd_limit()
        self.console.print(f"[bold]websocket-gateway bench[/]: phases {', '.join(phases)}")
        tags = images.ensure_all()
        machine = self.results["machine"] = resource_usage.machine(tags["server"], tags["nginx"])
        machine["host_fd_limit"] = str(fd_limit)
        machine["code"] = resource_usage.code_version(ROOT)
        machine["container_limits"] = stacks.limits_text()
        runs_t = [r for r in THROUGHPUT_RUNS if self.settings.wanted(r.words)]
        runs_l = [r for r in LATENCY_RUNS if self.settings.wanted(r.words)]
        with Progress(
            SpinnerColumn(),
            TextColumn("{task.description:<48}"),
            BarColumn(bar_width=24),
            TimeElapsedColumn(),
            TextColumn("{task.fields[info]}"),
            console=self.console,
            transient=False,
        ) as progress:
            session = Session(self.settings, progress, self.stack_prefix)
            for key in dict.fromkeys(r.setup for r in runs_t + runs_l):
                mine_t = [r for r in runs_t if r.setup == key] if "throughput" in phases else []
                mine_l = [r for r in runs_l if r.setup == key] if "latency" in phases else []
                if mine_t or mine_l:
                    self._with_setup(session, SETUPS[key], mine_t, mine_l)
            if "memory" in phases:
                self.results["memory"] = idle_memory.run(session)
            if "capacity" in phases:
                self.results["capacity"] = capacity.run(session)
            if "published" in phases:
                self.results["published_capacity"] = capacity.run_published(session)
        self.results["finished"] = datetime.now(UTC).isoformat(timespec="seconds")
        machine["load_average_end"] = resource_usage.load_average()
        self.results["targets"] = targets_met.evaluate(self.results)
        return self.results

    def _with_setup(
        self, session: Session, setup: Setup, runs_t: list[Run], runs_l: list[Run]
    ) -> None:
        """Throughput, then latency, of ``setup``'s runs on one stack (baselines beside it)."""
        stack = session.stack(setup)
        try:
            baselines: dict[str, Service] = {}
            for run in runs_t + runs_l:
                if run.via.startswith("baseline-") and run.via not in baselines:
                    baselines[run.via] = stacks.start_baseline(stack, run.via.split("-", 1)[1])

            def each(measure: Measure) -> Callable[[Run], dict[str, Any]]:
                return lambda run: measure(session, stack, setup, run, baselines)

            self.results["throughput"] += self._median_rounds(
                runs_t, each(throughput.measure), "messages_per_s", "rounds", 0
            )
            self.results["latency"] += self._median_rounds(
                runs_l, each(latency.measure), "p99_ms", "rounds_p99_ms", 2
            )
        finally:
            stack.down()

    def _median_rounds(
        self,
        runs: list[Run],
        measure: Callable[[Run], dict[str, Any]],
        key: str,
        rounds_key: str,
        digits: int,
    ) -> list[dict[str, Any]]:
        """Each run measured ``--rounds`` times in turn; per run, the round with the median ``key``.

        Rounds run in turn so that a burst of other work on the machine hits every run alike.
        """
        rounds: dict[str, list[dict[str, Any]]] = {run.name: [] for run in runs}
        for _ in range(max(1, self.settings.rounds)):
            for run in runs:
                rounds[run.name].append(measure(run))
        rows = []
        for run in runs:
            ordered = sorted(rounds[run.name], key=lambda r: r[key])
            row = dict(ordered[(len(ordered) - 1) // 2])  # the median (lower, if even)
            row[rounds_key] = [round(r[key], digits or None) for r in rounds[run.name]]
            rows.append(row)
        return rows


def main(args: argparse.Namespace) -> int:
    console = Console()
    bench = Bench(Settings.from_args(args), console)
    try:
        results = bench.run()
    except KeyboardInterrupt:
        console.print("[red]interrupted[/]: stacks are being removed")
        return 130
    REPORTS.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    paths = bench_report.write(results, REPORTS, stamp)
    console.print(bench_report.table(results))
    for path in paths:
        console.print(f"wrote {path.relative_to(ROOT)}")
    return 0


__all__ = ["Bench", "main"]
