"""Capacity: idle connections ramped through NGINX, held with heartbeats, then sampled.

Descriptors: the engine grants each container at most its own hard limit (20,000 here),
per process. The server gets one worker per 15,000 connections and NGINX one worker per
7,500 (two descriptors per WebSocket), so no process hits it. Ports: NGINX reaches a
server from one address, so one server address:port takes at most ~28,000 tunnels (the
ephemeral port range): past 25,000 the run adds replicas (compose --scale server=N), which
NGINX balances by DNS.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

from rich.progress import TaskID

from stack import compose_file
from stack.bench import resource_usage, stacks
from stack.bench.loadgen import ClientPool, error_counts, split
from stack.bench.settings import Settings
from stack.bench.setups import Setup
from stack.bench.stacks import Session
from stack.gateway import NGINX_PORT, GatewayStack
from stack.waits import settled

# Room per idle connection when the capacity run raises memory limits: measured here at
# about 21 KiB (server) and 28 KiB (NGINX, both sockets of a tunnel), plus a quarter.
BYTES_PER_CONNECTION = {"server": 27 * 1024, "nginx": 34 * 1024}
PER_SERVER = 25000  # connections per server address (under the ~28,000 ephemeral ports)


@dataclass(frozen=True)
class Containers:
    """The stack's server and NGINX containers, read together by role."""

    ids: dict[str, list[str]]  # role -> container ids

    def memory(self) -> dict[str, int]:
        return {
            r: sum(resource_usage.memory_bytes(c) for c in cids) for r, cids in self.ids.items()
        }

    def anon(self) -> dict[str, int]:
        return {
            r: sum(resource_usage.rss_anon_bytes(c) for c in cids) for r, cids in self.ids.items()
        }

    def oom_kills(self) -> dict[str, int]:
        return {r: sum(resource_usage.oom_kills(c) for c in cids) for r, cids in self.ids.items()}


def setup_for(settings: Settings) -> Setup:
    """Enough server containers, workers and descriptors for ``settings.capacity``."""
    target = settings.capacity
    replicas = max(1, math.ceil(target / PER_SERVER))
    server_workers = max(1, math.ceil(target / replicas / 15000))
    nginx_workers = max(2, math.ceil(target / 7500))
    nofile = min(
        int(u["Soft"])
        for u in compose_file.runtime_kwargs("nginx")["ulimits"]
        if u["Name"] == "nofile"
    )
    return Setup(
        "capacity",
        f"gateway, {replicas} server container(s) of WS_WORKERS={server_workers}, "
        f"NGINX {nginx_workers} workers, ping every {settings.ping_interval:g} s",
        {"WS_WORKERS": str(server_workers), "WS_PING_INTERVAL": f"{settings.ping_interval:g}"},
        {
            "WORKER_PROCESSES": str(nginx_workers),
            "WORKER_CONNECTIONS": str(min(nofile, 65536)),
            "WORKER_RLIMIT_NOFILE": str(min(nofile, 65536)),
            # The heartbeat keeps tunnels busy; NGINX must not time them out meanwhile.
            "PROXY_READ_TIMEOUT": "300s",
        },
        replicas=replicas,
    )


def run(session: Session) -> dict[str, Any]:
    """Ramp idle connections through NGINX; memory per connection; heartbeats; samples."""
    s, progress = session.settings, session.progress
    target = s.capacity
    setup = setup_for(s)
    stack = session.stack(setup)
    processes = max(s.clients, math.ceil(target / 12000))
    result: dict[str, Any] = {
        "setup": setup.title,
        "target": target,
        "steps": [],
        "client_processes": processes,
    }
    try:
        containers = Containers({"server": stacks.server_ids(stack), "nginx": [stack.nginx.id]})
        limits = {role: compose_file.memory_limit(role) for role in ("server", "nginx")}
        result["compose_memory_limits"] = dict(limits)
        if not s.keep_limits:
            _raise_limits(containers, limits, target)
        targets = _targets(stack, target)
        result["targets"] = [f"{h}:{p}" for h, p, _ in targets]
        settled(lambda: sum(containers.memory().values()), "capacity: memory at rest")
        base = containers.memory()
        base_anon = containers.anon()
        result["idle_memory"] = base
        with ClientPool(processes) as pool:
            opened, limit_reason = _ramp(session, pool, containers, limits, targets, result)
            result["reached"] = opened
            result["limit"] = limit_reason
            htask = _hold(session, pool, opened, result)
            mem, anon = containers.memory(), containers.anon()
            still_open = result["held"]
            sample_n = min(s.capacity_sample, still_open)
            samples = pool.call(
                [{"op": "sample", "count": n} for n in split(sample_n, processes)], timeout=60
            )
            result["sample_ok"] = sum(r["ok"] for r in samples)
            result["sample_failed"] = sum(r["failed"] for r in samples)
            result["memory"] = mem
            for role in ("server", "nginx"):
                result[f"{role}_bytes_per_connection"] = (mem[role] - base[role]) / max(
                    1, still_open
                )
                result[f"{role}_anon_bytes_per_connection"] = (anon[role] - base_anon[role]) / max(
                    1, still_open
                )
            result["memory_limits"] = limits
            result["oom_kills"] = containers.oom_kills()
            progress.update(
                htask,
                completed=result["hold_seconds"],
                info=f"held {still_open:,}; pings {result['pings_during_hold']:,}; "
                f"sample {result['sample_ok']}/{sample_n} echoed; "
                f"{result['server_bytes_per_connection'] / 1024:.1f} KiB/conn server, "
                f"{result['nginx_bytes_per_connection'] / 1024:.1f} KiB/conn NGINX",
            )
            ctask = progress.add_task("capacity: close all", total=None, info="")
            pool.call({"op": "close", "within": 30}, timeout=120)
            progress.update(ctask, total=1, completed=1)
    finally:
        stack.down()
    return result


def run_published(session: Session) -> dict[str, Any]:
    """Idle connections through NGINX's published 127.0.0.1 port: the host user's path.

    On an engine with its userland proxy on (the default), every connection goes through
    ``docker-proxy`` (two sockets and two splice pipes each, against its own descriptor
    limit). The ramp stops where handshakes start failing; afterwards a new connection
    shows whether the port still answers at all.
    """
    s = session.settings
    target, step = s.published_capacity, max(1, s.published_capacity // 10)
    setup = setup_for(s)
    stack = session.stack(setup)
    result: dict[str, Any] = {"target": target, "steps": [], "port": stack.port}
    try:
        containers = Containers({"server": stacks.server_ids(stack), "nginx": [stack.nginx.id]})
        limits = {role: compose_file.memory_limit(role) for role in ("server", "nginx")}
        targets = [("127.0.0.1", stack.port, "localhost")]
        with ClientPool(s.clients) as pool:
            opened, reason = _ramp(
                session, pool, containers, limits, targets, result, target, step, "published port"
            )
            result["held"] = sum(r["open"] for r in pool.call({"op": "status"}, timeout=60))
            result["limit"] = reason
            result["port_answers"] = _answers(stack)
            pool.call({"op": "close", "within": 30}, timeout=120)
        result["reached"] = opened
        result["port_answers_after_close"] = _answers(stack)
    finally:
        stack.down()
    return result


def _answers(stack: GatewayStack) -> bool:
    """Whether a new WebSocket through the published port echoes."""
    try:
        return GatewayStack.echo_once(stack.url)
    except Exception:
        return False


def _raise_limits(containers: Containers, limits: dict[str, int], target: int) -> None:
    """Give each container room for its share of ``target`` (``limits`` records it).

    The compose limits are sized for everyday use; the capacity run gives each container
    room for the target (and says so), so the figure shows where the connections stop,
    not where a default limit was set.
    """
    for role, cids in containers.ids.items():
        share = target / len(cids)
        need = int(64 * 2**20 + share * BYTES_PER_CONNECTION[role])
        if need > limits[role]:
            limits[role] = need
            for cid in cids:
                stacks.set_memory(cid, need)


def _targets(stack: GatewayStack, target: int) -> list[tuple[str, int, str]]:
    """NGINX's addresses to connect to: (host, port, Host header).

    Several destination addresses: one (source, destination) pair has ~28,000 ephemeral
    ports. NGINX listens on both its networks; the host reaches both.
    """
    targets = [
        (stack.nginx.ip(stack.edge), NGINX_PORT, "localhost"),
        (stack.nginx.ip(stack.backend), NGINX_PORT, "localhost"),
    ]
    return targets if target > PER_SERVER else targets[:1]


def _ramp(
    session: Session,
    pool: ClientPool,
    containers: Containers,
    limits: dict[str, int],
    targets: list[tuple[str, int, str]],
    result: dict[str, Any],
    target: int | None = None,
    step_size: int | None = None,
    via: str = "NGINX",
) -> tuple[int, str | None]:
    """Open connections step by step until the target or a limit: (open, why it stopped)."""
    s, progress = session.settings, session.progress
    target = target or s.capacity
    step_size = step_size or s.capacity_step
    task = progress.add_task(f"capacity: ramp to {target:,} via {via}", total=target, info="")
    opened = 0
    steps_left = math.ceil(target / step_size) + 2  # bounded, whatever fails
    while opened < target and steps_left > 0:
        steps_left -= 1
        before = opened
        step = min(step_size, target - opened)
        t0 = time.monotonic()
        answers = pool.call(
            [
                {
                    "op": "open",
                    "targets": targets,
                    "count": n,
                    "concurrency": 50,
                    "first": opened + i,
                }
                for i, n in enumerate(split(step, pool.processes))
            ],
            timeout=300,
            tick=lambda: progress.update(
                task, completed=pool.total(2), info=f"open {pool.total(2):,.0f}"
            ),
        )
        failed = sum(r["failed"] for r in answers)
        errors = error_counts(answers)
        retried_ok = 0
        if failed:
            answers = _retry(pool, answers, targets, opened)
            retried_ok = sum(r["opened"] for r in answers)
        ramp_s = time.monotonic() - t0
        opened = sum(r["open"] for r in answers)
        settled(lambda: sum(containers.memory().values()), f"capacity: memory at {opened:,}")
        mem = containers.memory()
        result["steps"].append(
            {
                "connections": opened,
                "failed": failed,
                "errors": errors,
                "retried_ok": retried_ok,
                "seconds": ramp_s,
                "server_bytes": mem["server"],
                "nginx_bytes": mem["nginx"],
            }
        )
        progress.update(
            task,
            completed=opened,
            info=f"open {opened:,}  server {mem['server'] / 2**20:.0f} MiB  "
            f"nginx {mem['nginx'] / 2**20:.0f} MiB"
            + (f"  failed {failed} {errors}" if failed else ""),
        )
        kills = containers.oom_kills()
        dropped = before + (step - failed) + retried_ok - opened
        if any(kills.values()) or dropped > max(10, step // 200):
            return opened, (
                f"{max(0, dropped):,} open connections dropped; processes killed "
                f"for memory: {kills} (limits "
                + ", ".join(f"{k} {v / 2**20:.0f} MiB" for k, v in limits.items())
                + ")"
            )
        if failed - retried_ok > max(10, step // 200):
            return opened, (
                f"{failed} of {step} handshakes failed ({errors}), {retried_ok} passed when retried"
            )
    if opened < target:
        return opened, f"the ramp stopped at {opened:,} (handshakes kept failing)"
    return opened, None


def _retry(
    pool: ClientPool,
    answers: list[dict[str, Any]],
    targets: list[tuple[str, int, str]],
    opened: int,
) -> list[dict[str, Any]]:
    """Once more, slower, for the handshakes that failed: a transient overload (SYN backlog,
    CPU) passes, a hard limit fails again."""
    time.sleep(2)
    return pool.call(
        [
            {
                "op": "open",
                "targets": targets,
                "count": r["failed"],
                "concurrency": 10,
                "within": 20.0,
                "first": opened + i,
            }
            for i, r in enumerate(answers)
        ],
        timeout=300,
    )


def _hold(session: Session, pool: ClientPool, opened: int, result: dict[str, Any]) -> TaskID:
    """Hold: every connection must see the server's heartbeat at least once (its task)."""
    progress = session.progress
    pings0 = sum(r["pings"] for r in pool.call({"op": "status"}, timeout=60))
    hold = session.settings.ping_interval * 1.5 + 2
    htask = progress.add_task(f"capacity: hold {opened:,} with heartbeats", total=hold, info="")
    t0 = time.monotonic()
    while time.monotonic() - t0 < hold:
        time.sleep(0.5)
        progress.update(
            htask,
            completed=time.monotonic() - t0,
            info=f"pings answered {pool.total(3) - pings0:,.0f}  open {pool.total(2):,.0f}",
        )
    status = pool.call({"op": "status"}, timeout=60)
    result["held"] = sum(r["open"] for r in status)
    result["pings_during_hold"] = sum(r["pings"] for r in status) - pings0
    result["hold_seconds"] = hold
    return htask
