"""``python -m stack bench --swarm``: throughput and capacity against the swarm stack.

    python -m stack bench --swarm --swarm-replicas 1,2,3 --rounds 1 --capacity 6000

One deploy of deploy/swarm/stack.yaml (stack/swarm.py: machine-wide lock, always removed,
the swarm left if the bench made it), scaled to each replica count in turn; at each, the
throughput phase (throughput.py) and a capacity ramp (capacity.py's ramp, then an echo
sample) through NGINX. The load generators run on the host and reach NGINX at its
address on docker_gwbridge, the bridge that carries its host-mode published port: the
same NGINX as 127.0.0.1:<port>, without the engine's userland proxy in the way (whose CPU
would count against every figure, as stacks.py explains for compose).
"""

from __future__ import annotations

import argparse
import json
import time
from datetime import UTC, datetime
from typing import Any

from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from stack import swarm
from stack.bench import capacity, resource_usage, throughput
from stack.bench.all_phases import REPORTS, ROOT
from stack.bench.bench_settings import Settings
from stack.bench.loadgen import ClientPool, Target, raise_fd_limit, split
from stack.bench.setups import NGINX_BENCH_ENV, SERVER_BENCH_ENV, Run
from stack.bench.stacks import Session
from stack.gateway import NGINX_PORT
from stack.waits import settled, until

# The bench's limits and message logging, as for compose (setups.py), via the stack
# file's variables; NGINX keeps the stack file's one worker and 1 CPU: one NGINX per node.
SETTINGS = {**NGINX_BENCH_ENV, **SERVER_BENCH_ENV}
MEMORY_LIMITS = {"server": 2**30, "nginx": 768 * 2**20}  # deploy/swarm/stack.yaml


def nginx_address() -> str:
    """NGINX's address on docker_gwbridge (its host-mode port's bridge); the host routes it."""
    (nginx,) = swarm.containers("nginx")
    attached = json.loads(
        swarm.docker("network", "inspect", "docker_gwbridge", "--format", "{{json .Containers}}")
    )
    for container, endpoint in attached.items():
        if nginx.startswith(container) or container.startswith(nginx):
            return endpoint["IPv4Address"].split("/")[0]
    raise RuntimeError("NGINX has no address on docker_gwbridge")


def scale(replicas: int, port: int) -> None:
    """Redeploy with ``replicas`` server tasks; return once exactly that many are healthy."""
    swarm.deploy(replicas, port, SETTINGS)
    until(
        lambda: [swarm.health(c) for c in swarm.containers("server")] == ["healthy"] * replicas,
        f"{replicas} healthy server replicas, no others",
        120,
        errors=(RuntimeError,),
    )
    swarm.wait_for_echo(swarm.url(port))


def containers() -> dict[str, str]:
    """Role -> container id, for the CPU meter (server1, server2, ..., nginx)."""
    servers = swarm.containers("server")
    found = {f"server{i + 1}": c for i, c in enumerate(servers)}
    found["nginx"] = swarm.containers("nginx")[0]
    return found


def measure_capacity(session: Session, targets: list[Target]) -> dict[str, Any]:
    """Ramp idle connections to --capacity through NGINX, then echo on a sample of them."""
    s = session.settings
    roles = containers()
    held = capacity.Containers(
        {
            "server": [c for r, c in roles.items() if r.startswith("server")],
            "nginx": [roles["nginx"]],
        }
    )
    tlist = [(t.host, t.port, t.host_header) for t in targets]
    result: dict[str, Any] = {"steps": []}
    settled(lambda: sum(held.memory().values()), "swarm capacity: memory at rest")
    base = held.memory()
    with ClientPool(s.clients) as pool:
        opened, why = capacity.ramp(session, pool, held, dict(MEMORY_LIMITS), tlist, result)
        memory = held.memory()
        sample = min(s.capacity_sample, opened)
        answers = pool.call(
            [{"op": "sample", "count": n} for n in split(sample, s.clients)], timeout=60
        )
        pool.call({"op": "close", "within": 30}, timeout=120)
    result.update(
        reached=opened,
        limit=why,
        sample=sample,
        sample_ok=sum(a["ok"] for a in answers),
        kib_per_connection={
            role: (memory[role] - base[role]) / max(1, opened) / 1024 for role in memory
        },
    )
    return result


def measure_throughput(session: Session, targets: list[Target], replicas: int) -> dict[str, Any]:
    """--rounds throughput rounds through NGINX; the median round."""
    run = Run(f"swarm, {replicas} replica(s), via NGINX", "swarm", "nginx")
    rows = []
    for _ in range(max(1, session.settings.rounds)):
        with ClientPool(session.settings.clients) as pool:
            rows.append(throughput.measure_targets(session, pool, run, targets, containers()))
    rows.sort(key=lambda r: r["messages_per_s"])
    row = rows[(len(rows) - 1) // 2]
    row["rounds"] = [round(r["messages_per_s"]) for r in rows]
    return row


def main(args: argparse.Namespace) -> int:
    settings = Settings.from_args(args)
    counts = [int(n) for n in args.swarm_replicas.split(",") if n.strip()]
    console = Console()
    raise_fd_limit()
    results: dict[str, Any] = {
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
        "code": resource_usage.code_version(ROOT),
        "settings": settings.as_report(),
        "stack_settings": SETTINGS,
        "rows": [],
    }
    port = swarm.free_port()
    with (
        Progress(
            SpinnerColumn(),
            TextColumn("{task.description:<48}"),
            TimeElapsedColumn(),
            TextColumn("{task.fields[info]}"),
            console=console,
        ) as progress,
        swarm.deployed(counts[0], port, SETTINGS),
    ):
        session = Session(settings, progress, "swarm")
        for replicas in counts:
            scale(replicas, port)
            targets = [Target(nginx_address(), NGINX_PORT, "localhost")]
            row: dict[str, Any] = {"replicas": replicas, "target": f"{targets[0].host}:8080"}
            if "throughput" in settings.phases:
                row["throughput"] = measure_throughput(session, targets, replicas)
            if "capacity" in settings.phases:
                row["capacity"] = measure_capacity(session, targets)
            results["rows"].append(row)
    results["finished"] = datetime.now(UTC).isoformat(timespec="seconds")
    results["load_average_end"] = resource_usage.load_average()
    REPORTS.mkdir(parents=True, exist_ok=True)
    path = REPORTS / f"swarm-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}.json"
    path.write_text(json.dumps(results, indent=2, default=str))
    console.print(table(results))
    console.print(f"wrote {path.relative_to(ROOT)}")
    return 0


def table(results: dict[str, Any]) -> Table:
    """Connections and messages/s per replica count, with the CPU of each container."""
    out = Table(title=f"swarm stack, commit {results['code']}")
    for column in ("replicas", "messages/s", "CPU (server…, nginx)", "connections", "echoed"):
        out.add_column(column, justify="right")
    for row in results["rows"]:
        t, c = row.get("throughput", {}), row.get("capacity", {})
        cpu = ", ".join(f"{v:.0%}" for v in t.get("cpu", {}).values())
        out.add_row(
            str(row["replicas"]),
            f"{t['messages_per_s']:,.0f}" if t else "-",
            cpu or "-",
            f"{c['reached']:,}" if c else "-",
            f"{c['sample_ok']}/{c['sample']}" if c else "-",
        )
    return out
