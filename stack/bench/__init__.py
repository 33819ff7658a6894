"""``python -m stack bench``: throughput, latency and capacity, compared in one run.

    python -m stack bench                                   # the default profile (a few minutes)
    python -m stack bench --phases throughput --duration 5  # one phase, shorter
    python -m stack bench --only nginx,baseline             # runs whose name/setup/via match
    python -m stack bench --swarm --rounds 1                # the swarm stack, 1, 2, 3 replicas

Parts: leanclient (a lean client), loadgen (client processes), baseline (the bare websockets
echo), resource_usage (container CPU and memory, the machine), settings (the command line,
typed), setups (what is compared), stacks (the bench's own stacks), one module per phase
(throughput, latency, idle_memory, capacity), all_phases (runs the phases in order),
swarm_scaling (--swarm: the swarm stack at each replica count), targets_met (issue #5's
targets judged), bench_report (JSON, Markdown, SVG).
Reports go to reports/bench/ (git-ignored).
"""

from __future__ import annotations

import argparse


def _csv(text: str) -> list[str]:
    return [word.strip() for word in text.split(",") if word.strip()]


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``bench`` subcommand to ``python -m stack``."""
    p = subparsers.add_parser(
        "bench",
        help="measure throughput, latency and capacity against the bare websockets echo",
        description=__doc__.splitlines()[0],
    )
    _selection_options(p)
    _load_options(p)
    _capacity_options(p)
    _stack_options(p)
    p.set_defaults(run=_run)
    return p


def _selection_options(p: argparse.ArgumentParser) -> None:
    """Which phases and runs."""
    p.add_argument(
        "--phases",
        default="throughput,latency,memory,capacity,published",
        help="comma-separated: throughput, latency, memory, capacity, published "
        "(idle connections through the published port; default: all)",
    )
    p.add_argument(
        "--only",
        type=_csv,
        default=[],
        help="only runs whose setup, target or name contains one of these words "
        "(e.g. nginx,baseline,workers2,replicas2,logging,asyncio)",
    )


def _load_options(p: argparse.ArgumentParser) -> None:
    """How long, how many rounds, and the load each run gets."""
    p.add_argument("--duration", type=float, default=4.0, help="measured seconds per run (4)")
    p.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="throughput and latency: a setup's runs are repeated in turn this many times and "
        "each figure is the median, so a burst of other work on the machine hits all alike (3)",
    )
    p.add_argument(
        "--memory-connections",
        type=int,
        default=5000,
        help="memory: idle connections to the server and to the bare echo (5000)",
    )
    p.add_argument("--warmup", type=float, default=1.5, help="warm-up seconds before each (1.5)")
    p.add_argument("--connections", type=int, default=100, help="throughput connections (100)")
    p.add_argument("--size", type=int, default=1024, help="message size in bytes (1024)")
    p.add_argument("--text", action="store_true", help="text messages instead of binary")
    p.add_argument("--inflight", type=int, default=8, help="messages in flight per connection (8)")
    p.add_argument("--clients", type=int, default=2, help="load generator processes (2)")
    p.add_argument("--rate", type=int, default=5000, help="latency: messages/s in total (5000)")
    p.add_argument(
        "--latency-connections", type=int, default=100, help="latency: connections (100)"
    )


def _capacity_options(p: argparse.ArgumentParser) -> None:
    """The capacity phases' targets and the server's heartbeat."""
    p.add_argument(
        "--capacity",
        type=int,
        default=20000,
        help="capacity: connections to ramp to through NGINX (20000)",
    )
    p.add_argument("--capacity-step", type=int, default=5000, help="capacity: ramp step (5000)")
    p.add_argument(
        "--capacity-sample",
        type=int,
        default=1000,
        help="capacity: connections that must still echo at the end (1000)",
    )
    p.add_argument(
        "--ping-interval",
        type=float,
        default=10.0,
        help="capacity: server heartbeat interval, WS_PING_INTERVAL (10 s; longer for a"
        " large target, so pings stay under 5,000/s: 20 s at 100,000)",
    )
    p.add_argument(
        "--published-capacity",
        type=int,
        default=6000,
        help="published: idle connections to ramp to through 127.0.0.1:<port> (6000)",
    )


def _stack_options(p: argparse.ArgumentParser) -> None:
    """The stacks measured: extra settings, memory limits, the swarm."""
    p.add_argument(
        "--server-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="extra server environment for every setup (repeatable), e.g. WS_COMPRESSION=true",
    )
    p.add_argument(
        "--nginx-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="extra NGINX environment for every setup (repeatable), e.g. WORKER_PROCESSES=1",
    )
    p.add_argument(
        "--keep-limits",
        action="store_true",
        help="capacity: keep the compose memory limits (default: raise them to fit "
        "the target, and say so in the report)",
    )
    p.add_argument(
        "--swarm",
        action="store_true",
        help="throughput and capacity against the swarm stack (deploy/swarm/stack.yaml) at "
        "each of --swarm-replicas; other phases are skipped (see stack/bench/swarm_scaling.py)",
    )
    p.add_argument(
        "--swarm-replicas", default="1,2,3", help="--swarm: server replica counts (1,2,3)"
    )


def _run(args: argparse.Namespace) -> int:
    if args.swarm:
        from stack.bench.swarm_scaling import main as on_swarm

        return on_swarm(args)
    from stack.bench.all_phases import main

    return main(args)
