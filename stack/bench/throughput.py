"""Throughput: messages per second with ``inflight`` messages in flight on every connection."""

from __future__ import annotations

import time
from typing import Any

from stack.bench import resource_usage, stacks
from stack.bench.loadgen import ClientPool, Target, error_counts, split
from stack.bench.setups import Run, Setup
from stack.bench.stacks import Session
from stack.containers import Service
from stack.gateway import GatewayStack


def measure(
    session: Session, stack: GatewayStack, setup: Setup, run: Run, baselines: dict[str, Service]
) -> dict[str, Any]:
    """One round of ``run`` on ``stack``: its row of the throughput table."""
    targets, containers = stacks.target(stack, run.via, baselines)
    with ClientPool(session.settings.clients) as pool:
        row = measure_targets(session, pool, run, targets, containers)
    row["setup"] = setup.title
    return row


def measure_targets(
    session: Session,
    pool: ClientPool,
    run: Run,
    targets: list[Target],
    containers: dict[str, str],
) -> dict[str, Any]:
    """One round of ``run`` against ``targets`` with ``pool``'s clients; ``containers``
    (role -> id) are the ones whose CPU the row reports. Any stack: compose or swarm."""
    s, progress = session.settings, session.progress
    task = progress.add_task(
        f"throughput: {run.name}", total=s.warmup + s.duration, info="connecting"
    )
    tlist = [(t.host, t.port, t.host_header) for t in targets]
    opened = pool.call(
        [{"op": "open", "targets": tlist, "count": n} for n in split(s.connections, s.clients)],
        timeout=120,
    )
    failed = sum(r["failed"] for r in opened)
    start_at = time.time() + 0.5
    meter = resource_usage.CpuMeter(containers)
    window = (start_at + s.warmup, start_at + s.warmup + s.duration)
    last = [time.monotonic(), pool.total(0)]

    def tick() -> None:
        meter.follow(window)
        t, m = time.monotonic(), pool.total(0)
        if t - last[0] >= 0.5:
            rate = (m - last[1]) / (t - last[0])
            last[:] = [t, m]
            progress.update(
                task,
                completed=min(s.warmup + s.duration, max(0.0, time.time() - start_at)),
                info=f"{rate:>9,.0f} msg/s",
            )

    results = pool.call(
        {
            "op": "throughput",
            "size": s.size,
            "text": s.text,
            "inflight": s.inflight,
            "start_at": start_at,
            "warmup": s.warmup,
            "duration": s.duration,
        },
        timeout=s.warmup + s.duration + 60,
        tick=tick,
    )
    meter.finish()
    pool.call({"op": "close"}, timeout=60)
    seconds = max(r["seconds"] for r in results)
    messages = sum(r["messages"] for r in results)
    payload = sum(r["bytes"] for r in results)
    row = {
        "name": run.name,
        "via": run.via,
        "connections": s.connections,
        "size": s.size,
        "inflight": s.inflight,
        "messages_per_s": messages / seconds,
        "mb_per_s": payload / seconds / 1e6,
        "client_cpu": sum(r["cpu_seconds"] for r in results) / seconds,
        "client_processes": s.clients,
        "cpu": meter.result,
        "throttled": meter.throttled,
        "failed_connections": failed,
        "mismatches": sum(r["mismatches"] for r in results),
        "lost": sum(r["lost"] for r in results),
        "errors": error_counts(opened, results),
    }
    progress.update(
        task,
        completed=s.warmup + s.duration,
        info=f"{row['messages_per_s']:>9,.0f} msg/s  {row['mb_per_s']:.1f} MB/s  "
        f"client {row['client_cpu']:.0%}  "
        + "  ".join(f"{k} {v:.0%}" for k, v in meter.result.items()),
    )
    return row
