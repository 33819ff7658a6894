"""Capacity: idle connections ramped through NGINX, held with heartbeats, then sampled.

Every limit of the way is sized from the target (capacity_sizing.py).

Past the target, OVERFLOW more handshakes show which limit answers first, and that the
connections already open stay untouched. A run of 100,000 or more writes its table into
docs/benchmarks.md (section "100,000 connections").
"""

from __future__ import annotations

import math
import socket
import time
from contextlib import suppress
from dataclasses import dataclass
from typing import Any

from rich.progress import TaskID
from websockets.sync.client import connect

from stack import compose_file, prometheus
from stack.bench import resource_usage, stacks
from stack.bench.capacity_sizing import (
    BEYOND_WITHIN,
    BYTES_PER_CONNECTION,
    CLIENT_PROCESS,
    HANDSHAKES_IN_FLIGHT,
    HOLD_SECONDS,
    OVERFLOW,
    PER_PAIR,
    PER_SERVER,
    ping_interval_for,
    setup_for,
)
from stack.bench.capacity_table import write_docs
from stack.bench.loadgen import ClientPool, error_counts, split
from stack.bench.stacks import Session
from stack.gateway import NGINX_PORT, SERVER_PORT, GatewayStack
from stack.waits import ConditionTimeout, settled, until


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

    def cpu_seconds(self) -> dict[str, float]:
        """CPU seconds used so far by each role, and by the whole machine ("machine")."""
        used = {r: sum(resource_usage.cpu_seconds(c) for c in cids) for r, cids in self.ids.items()}
        return {**used, "machine": resource_usage.host_busy_seconds()}


def run(session: Session) -> dict[str, Any]:
    """Ramp idle connections through NGINX; hold them with heartbeats; memory per
    connection; samples; then past the target, what answers first."""
    s = session.settings
    target = s.capacity
    setup = setup_for(s)
    stack = session.stack(setup)
    processes = max(s.clients, math.ceil(target / CLIENT_PROCESS))
    result: dict[str, Any] = {
        "setup": setup.title,
        "server_env": setup.server_env,
        "nginx_env": setup.nginx_env,
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
        pairs = math.ceil(target * (1 + OVERFLOW) / PER_PAIR)  # the overflow too
        addresses = stacks.nginx_addresses(stack, pairs)
        targets = [(ip, NGINX_PORT, "localhost") for ip in addresses]
        result["targets"] = [f"{h}:{p}" for h, p, _ in targets]
        settled(lambda: sum(containers.memory().values()), "capacity: memory at rest")
        idle = containers.memory(), containers.anon()
        result["idle_memory"] = idle[0]
        with ClientPool(processes) as pool:
            started = time.monotonic()
            result["reached"], result["limit"] = ramp(
                session, pool, containers, limits, targets, result
            )
            result["ramp_seconds"] = time.monotonic() - started
            htask = _hold(session, pool, result["reached"], result)
            _measure_memory(containers, idle, result)
            result["memory_limits"] = limits
            sample_n = min(s.capacity_sample, result["held"])
            samples = pool.call(
                [{"op": "sample", "count": n} for n in split(sample_n, processes)], timeout=60
            )
            result["sample_ok"] = sum(r["ok"] for r in samples)
            result["sample_failed"] = sum(r["failed"] for r in samples)
            session.progress.update(
                htask,
                completed=result["hold_seconds"],
                info=f"held {result['held']:,}; unanswered {result['unpinged']:,}; "
                f"sample {result['sample_ok']}/{sample_n} echoed; "
                f"{result['server_bytes_per_connection'] / 1024:.1f} KiB/conn server, "
                f"{result['nginx_bytes_per_connection'] / 1024:.1f} KiB/conn NGINX",
            )
            result["beyond"] = _beyond(session, pool, stack, targets, result)
            result["oom_kills"] = containers.oom_kills()
            ctask = session.progress.add_task("capacity: close all", total=None, info="")
            pool.call({"op": "close", "within": 30}, timeout=120)
            session.progress.update(ctask, total=1, completed=1)
    finally:
        stacks.down(stack)
    if target >= 100000:
        write_docs(result)
    return result


def _measure_memory(
    containers: Containers, idle: tuple[dict[str, int], dict[str, int]], result: dict[str, Any]
) -> None:
    """Memory of each side at the top, and per connection held (cgroup and RssAnon)."""
    mem, anon = containers.memory(), containers.anon()
    result["memory"] = mem
    held = max(1, result["held"])
    for role in ("server", "nginx"):
        result[f"{role}_bytes_per_connection"] = (mem[role] - idle[0][role]) / held
        result[f"{role}_anon_bytes_per_connection"] = (anon[role] - idle[1][role]) / held


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
            opened, reason = ramp(
                session, pool, containers, limits, targets, result, target, step, "published port"
            )
            result["held"] = sum(r["open"] for r in pool.call({"op": "status"}, timeout=60))
            result["limit"] = reason
            result["port_answers"] = _answers(stack)
            pool.call({"op": "close", "within": 30}, timeout=120)
        result["reached"] = opened
        result["port_answers_after_close"] = _answers(stack)
    finally:
        stacks.down(stack)
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


def ramp(
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
    """Open connections step by step until the target or a limit: (open, why it stopped).

    Each step is recorded in ``result["steps"]`` (connections, failures, seconds, memory).
    """
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
        cpu0 = containers.cpu_seconds()
        answers = pool.call(
            _open_commands(pool, targets, step, opened),
            timeout=300,
            tick=lambda: progress.update(
                task, completed=pool.total(2), info=f"open {pool.total(2):,.0f}"
            ),
        )
        failed = sum(r["failed"] for r in answers)
        record = {
            "failed": failed,
            "errors": error_counts(answers),
            "retried_ok": 0,
            # the slowest process's opening time: handshakes, not the bench's bookkeeping
            "open_seconds": max(r["seconds"] for r in answers),
        }
        client_cpu = sum(r["cpu_seconds"] for r in answers)
        if failed:
            answers = _retry(pool, answers, targets, opened)
            record["retried_ok"] = sum(r["opened"] for r in answers)
            client_cpu += sum(r["cpu_seconds"] for r in answers)
        record["seconds"] = time.monotonic() - t0
        # What the step's handshakes (and the heartbeats meanwhile) cost each side.
        cpu1 = containers.cpu_seconds()
        record["cpu_seconds"] = {r: cpu1[r] - cpu0[r] for r in cpu1} | {"clients": client_cpu}
        opened = sum(r["open"] for r in answers)
        settled(lambda: sum(containers.memory().values()), f"capacity: memory at {opened:,}")
        mem = containers.memory()
        record.update(connections=opened, server_bytes=mem["server"], nginx_bytes=mem["nginx"])
        result["steps"].append(record)
        progress.update(
            task,
            completed=opened,
            info=f"open {opened:,}  server {mem['server'] / 2**20:.0f} MiB  "
            f"nginx {mem['nginx'] / 2**20:.0f} MiB"
            + (f"  failed {failed} {record['errors']}" if failed else ""),
        )
        stop = _stopped(containers, limits, step, before + step - failed, opened, record)
        if stop:
            return opened, stop
    if opened < target:
        return opened, f"the ramp stopped at {opened:,} (handshakes kept failing)"
    return opened, None


def _open_commands(
    pool: ClientPool,
    targets: list[tuple[str, int, str]],
    count: int,
    first: int,
    within: float = 10.0,
) -> list[dict[str, Any]]:
    """One "open" command per client process: its share of ``count`` new connections, and
    of HANDSHAKES_IN_FLIGHT."""
    concurrency = max(10, HANDSHAKES_IN_FLIGHT // pool.processes)
    return [
        {
            "op": "open",
            "targets": targets,
            "count": n,
            "concurrency": concurrency,
            "within": within,
            "first": first + i,
        }
        for i, n in enumerate(split(count, pool.processes))
    ]


def _stopped(
    containers: Containers,
    limits: dict[str, int],
    step: int,
    expected: int,
    opened: int,
    record: dict[str, Any],
) -> str | None:
    """Why the ramp must stop after this step (``expected`` open before retries), or None."""
    kills = containers.oom_kills()
    dropped = expected + record["retried_ok"] - opened
    if any(kills.values()) or dropped > max(10, step // 200):
        return (
            f"{max(0, dropped):,} open connections dropped; processes killed "
            f"for memory: {kills} (limits "
            + ", ".join(f"{k} {v / 2**20:.0f} MiB" for k, v in limits.items())
            + ")"
        )
    failed = record["failed"]
    if failed - record["retried_ok"] > max(10, step // 200):
        return (
            f"{failed} of {step} handshakes failed ({record['errors']}), "
            f"{record['retried_ok']} passed when retried"
        )
    return None


def _retry(
    pool: ClientPool,
    answers: list[dict[str, Any]],
    targets: list[tuple[str, int, str]],
    opened: int,
) -> list[dict[str, Any]]:
    """Once more, slower, for the handshakes that failed: a transient overload (SYN backlog,
    CPU) passes, a hard limit fails again. First, NGINX must answer a handshake again."""
    with suppress(ConditionTimeout):  # then the retry below fails too, and says how
        until(lambda: _echoes(*targets[0]), "capacity: NGINX echoes again", 20, errors=(Exception,))
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


def _echoes(host: str, port: int, host_header: str) -> bool:
    """Whether one new WebSocket to ``host:port`` (with ``host_header``) echoes."""
    with socket.create_connection((host, port), timeout=3) as sock:
        uri = f"ws://{host_header}/ws"
        with connect(uri, sock=sock, open_timeout=3, close_timeout=1) as ws:
            ws.send("capacity")
            return ws.recv(timeout=3) == "capacity"


def _hold(session: Session, pool: ClientPool, opened: int, result: dict[str, Any]) -> TaskID:
    """Hold for HOLD_SECONDS at least, until every connection has answered a heartbeat since
    the hold began (its task). Records held, unpinged (open, no heartbeat answered), lost."""
    progress = session.progress
    pool.call({"op": "mark"}, timeout=60)
    pings0 = sum(r["pings"] for r in pool.call({"op": "status"}, timeout=60))
    interval = ping_interval_for(session.settings)
    hold = max(HOLD_SECONDS, interval * 1.5 + 2)
    htask = progress.add_task(f"capacity: hold {opened:,} with heartbeats", total=hold, info="")
    t0 = time.monotonic()
    status: list[dict[str, Any]] = []

    def held_and_heard() -> bool:
        status[:] = pool.call({"op": "status"}, timeout=60)
        unpinged = sum(r["unpinged"] for r in status)
        progress.update(
            htask,
            completed=min(hold, time.monotonic() - t0),
            info=f"pings answered {pool.total(3) - pings0:,.0f}  open {pool.total(2):,.0f}  "
            f"silent {unpinged:,}",
        )
        return time.monotonic() - t0 >= hold and unpinged == 0

    # Every connection is pinged within WS_PING_INTERVAL plus the server's sweep.
    deadline = hold + 2 * interval + 10
    with suppress(ConditionTimeout):  # recorded below: unpinged > 0
        until(held_and_heard, "capacity: every connection answered a heartbeat", deadline)
    result["held"] = sum(r["open"] for r in status)
    result["unpinged"] = sum(r["unpinged"] for r in status)
    result["lost_during_hold"] = sum(r["lost"] for r in status)
    result["pings_during_hold"] = sum(r["pings"] for r in status) - pings0
    result["hold_seconds"] = time.monotonic() - t0
    return htask


def _beyond(
    session: Session,
    pool: ClientPool,
    stack: GatewayStack,
    targets: list[tuple[str, int, str]],
    result: dict[str, Any],
) -> dict[str, Any]:
    """Past the top: OVERFLOW of the target more handshakes. How each was answered (by
    kind), what the servers refused and why, and whether the connections held since the
    hold began were touched (closed, or silent to the heartbeat)."""
    extra = max(1, math.ceil(result["target"] * OVERFLOW))
    task = session.progress.add_task(f"capacity: {extra:,} more past the top", total=None, info="")
    before = server_refusals(stack)
    answers = pool.call(
        _open_commands(pool, targets, extra, result["reached"], within=BEYOND_WITHIN), timeout=300
    )
    status = pool.call({"op": "status"}, timeout=60)
    settled(lambda: sum(server_refusals(stack).values()), "capacity: servers' refusals")
    after = server_refusals(stack)
    refused = {k: n - before.get(k, 0) for k, n in after.items() if n != before.get(k, 0)}
    opened = sum(r["opened"] for r in answers)
    errors = error_counts(answers)
    env = result["server_env"]
    processes = int(env["WS_WORKERS"]) * len(stacks.server_ids(stack))
    cap = int(env["WS_MAX_CONNECTIONS"])
    if refused.get("max_connections"):
        first = (
            f"the servers' cap, WS_MAX_CONNECTIONS={cap:,} per process x {processes} "
            f"processes ({cap * processes:,}): HTTP 503, from {result['reached'] + opened:,} "
            "open on"
        )
    elif errors:
        first = f"no cap of the server: {errors}"
    else:
        first = f"none within {extra:,} more"
    beyond = {
        "tried": extra,
        "opened": opened,
        "errors": errors,
        "server_refused": refused,
        "open_after": sum(r["open"] for r in status),
        "held_lost": sum(r["lost"] for r in status),
        "held_silent": sum(r["unpinged"] for r in status),
        "first_limit": first,
    }
    session.progress.update(task, total=1, completed=1, info=f"{opened:,} opened, {errors}")
    return beyond


def server_refusals(stack: GatewayStack) -> dict[str, int]:
    """Handshakes the stack's server containers refused, by reason (all their workers)."""
    refused: dict[str, int] = {}
    for ip in stacks.server_ips(stack):
        samples = prometheus.fetch(f"http://{ip}:{SERVER_PORT}/metrics")
        for labels, n in samples.labelled("ws_connections_rejected_total"):
            refused[labels["reason"]] = refused.get(labels["reason"], 0) + int(n)
    return refused
