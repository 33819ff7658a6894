"""Latency: round trips at a fixed total message rate, as percentiles of every sample."""

from __future__ import annotations

import array
import math
import time
from typing import Any

from stack.bench import bench_report, resource_usage, stacks
from stack.bench.bench_report import percentile
from stack.bench.bench_settings import Settings
from stack.bench.loadgen import ClientPool, split
from stack.bench.setups import Run, Setup
from stack.bench.stacks import Session
from stack.containers import Service
from stack.gateway import GatewayStack


def measure(
    session: Session, stack: GatewayStack, setup: Setup, run: Run, baselines: dict[str, Service]
) -> dict[str, Any]:
    """One round of ``run`` on ``stack``: its row of the latency table."""
    s, progress = session.settings, session.progress
    targets, containers = stacks.target(stack, run.via, baselines)
    task = progress.add_task(
        f"latency {s.rate:,}/s: {run.name}", total=s.warmup + s.duration, info="connecting"
    )
    tlist = [(t.host, t.port, t.host_header) for t in targets]
    with ClientPool(s.clients) as pool:
        pool.call(
            [
                {"op": "open", "targets": tlist, "count": n}
                for n in split(s.latency_connections, s.clients)
            ],
            timeout=120,
        )
        start_at = time.time() + 0.5
        meter = resource_usage.CpuMeter(containers)
        window = (start_at + s.warmup, start_at + s.warmup + s.duration)

        def tick() -> None:
            meter.follow(window)
            progress.update(
                task,
                completed=min(s.warmup + s.duration, max(0.0, time.time() - start_at)),
                info="",
            )

        results = pool.call(
            [
                {
                    "op": "latency",
                    "size": s.size,
                    "text": s.text,
                    "rate": share,
                    "start_at": start_at,
                    "warmup": s.warmup,
                    "duration": s.duration,
                }
                for share in split(s.rate, s.clients)
            ],
            timeout=s.warmup + s.duration + 60,
            tick=tick,
        )
        meter.finish()
        pool.call({"op": "close"}, timeout=60)
    row = _row(run, setup, s, results, meter.result)
    progress.update(
        task,
        completed=s.warmup + s.duration,
        info="  ".join(f"{k} {row[f'{k}_ms']:.2f}" for k in ("p50", "p90", "p99", "p999", "max"))
        + " ms",
    )
    return row


def _row(
    run: Run, setup: Setup, s: Settings, results: list[dict[str, Any]], cpu: dict[str, float]
) -> dict[str, Any]:
    """The latency table's row from the load generators' ``results`` and the CPU meter's."""
    samples = array.array("d")
    for r in results:
        samples.frombytes(r["samples"])
    ordered = sorted(samples)
    seconds = max(r["seconds"] for r in results) or s.duration
    return {
        "name": run.name,
        "via": run.via,
        "setup": setup.title,
        "rate": s.rate,
        "achieved_rate": sum(r["sent"] for r in results) / seconds,
        "connections": s.latency_connections,
        "size": s.size,
        "samples": len(ordered),
        "p50_ms": percentile(ordered, 50) * 1e3,
        "p90_ms": percentile(ordered, 90) * 1e3,
        "p99_ms": percentile(ordered, 99) * 1e3,
        "p999_ms": percentile(ordered, 99.9) * 1e3,
        "max_ms": (ordered[-1] if ordered else math.nan) * 1e3,
        "client_cpu": sum(r["cpu_seconds"] for r in results) / seconds,
        "client_max_send_lag_ms": max(r["max_send_lag"] for r in results) * 1e3,
        "cpu": cpu,
        "lost": sum(r["lost"] for r in results),
        "mismatches": sum(r["mismatches"] for r in results),
        # for the plot: the percentile curve
        "curve": bench_report.curve(ordered),
    }
