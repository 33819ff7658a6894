"""10. Hostile clients: slow readers, a ping flood, aborted and unfinished handshakes at once."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from stack import helper_containers
from stack.bench import resource_usage
from stack.echo_client.fleet import Fleet
from stack.echo_client.ledger import Outcome
from stack.gateway import GatewayStack, StackOptions
from stack.prometheus import Samples
from stack.scenarios import hostile_attackers
from stack.scenarios.base import Context, Scenario
from stack.scenarios.common import account
from stack.scenarios.hostile_attackers import (
    ABORTED,
    EDGE_ADDRESSES,
    FLOODERS,
    MESSAGE,
    PER_IP_CAP,
    PLACE_WITHIN,
    SLOW_PER_ADDRESS,
    UNFINISHED,
)
from stack.scenarios.resources import SAMPLE_PERIOD, StatsSampler
from stack.waits import seconds

MiB = 2**20
HEALTHY = 20  # clients echoing through NGINX from the host all along
ECHO_WAIT = 15.0  # a healthy message without its echo after this long (s) is lost
HOLD = 10.0  # seconds the full attack is held while the healthy clients are measured
SLOW_ECHO = 0.1  # a healthy round trip over this (s) is counted and placed in time
HEALTHY_P99 = 0.25  # the healthy clients' 99th percentile round trip (s) during the attack

OPTIONS = StackOptions(
    # The per-IP cap stays at its default and every address stays under it (60 slow
    # readers, 1 flooder, at most 20 aborted handshakes in flight). The handshake rate is
    # raised: at the default 100r/m (burst 20) an address needs a minute for its ~110
    # handshakes, or the attack 15+ addresses (containers on 2 cores). The rate only slows
    # how fast an address gathers connections; how many it holds is what the cap bounds.
    nginx_env={
        "WS_RATE_LIMIT": "6000r/m",
        "WS_RATE_BURST": "1000",
        "WS_CONN_LIMIT_PER_IP": str(PER_IP_CAP),
    },
)


class _CgroupMemory:
    """What StatsSampler samples, read from the cgroup's files: instant, where one
    ``docker stats`` sample takes a second or two (usage falls back to it without them)."""

    def __init__(self, service, limit: int) -> None:
        self.id, self.limit = service.id, limit

    def stats(self) -> dict[str, float]:
        return {
            "memory_bytes": resource_usage.memory_bytes(self.id),
            "memory_limit_bytes": self.limit,
        }


def _round_trips(fleet: Fleet, start: float, end: float) -> list[tuple[float, float]]:
    """(seconds from send to echo, seconds after ``start`` it was sent) of the healthy
    messages sent between ``start`` and ``end``, slowest last."""
    return sorted(
        (m.settled_at - m.sent_at, m.sent_at - start)
        for c in fleet.clients
        for m in c.ledger.messages.values()
        if m.outcome is Outcome.ECHOED and start <= m.sent_at <= end and m.settled_at
    )


def _budget(metrics: Samples, started: list[dict[str, Any]]) -> tuple[float | None, str]:
    """The server's memory budget in bytes and where it was read; None if it states none."""
    for name in metrics.names("ws_memory_budget"):
        return metrics.value(name), name
    for event in started[-1:]:
        for key, value in (event.get("config") or {}).items():
            if "memory_budget" in key and isinstance(value, int | float):
                return float(value), f"server_started config {key}"
    return None, ""


async def _watch_memory_metrics(ctx: Context, stop: asyncio.Event, peaks: dict) -> None:
    """Read /metrics about once a second until ``stop`` (at most 120 times): the peaks of
    the server's ``ws_memory*`` figures (what it holds for clients, by its own count)."""
    for _ in range(120):
        try:
            metrics = await ctx.metrics()
            for key, value in metrics.flat(*metrics.names("ws_memory")).items():
                peaks[key] = max(value, peaks.get(key, value))
        except (OSError, KeyError, ValueError):
            pass  # a busy or stopped server: the cgroup sampler still watches
        try:
            await asyncio.wait_for(stop.wait(), 1)  # pacing, ended at once by stop
            return
        except TimeoutError:
            continue


def _state(service) -> dict[str, Any]:
    state = service.inspect()
    return {
        "status": state["State"]["Status"],
        "oom": bool(state["State"].get("OOMKilled")),
        "restarts": state.get("RestartCount", 0),
        "started": state["State"]["StartedAt"],
    }


async def _new_client(url: str) -> tuple[int, float]:
    """(HTTP status, seconds) of one new client's handshake and echo."""
    started = time.monotonic()
    try:
        async with connect(url, proxy=None, open_timeout=5, close_timeout=2) as ws:
            await ws.send("new client after the attack")
            ok = await asyncio.wait_for(ws.recv(), 5) == "new client after the attack"
            return (101 if ok else 0), time.monotonic() - started
    except InvalidStatus as e:
        return e.response.status_code, time.monotonic() - started


@dataclass
class _Timeline:
    """When the attack's phases began (epoch seconds; 0 until they did)."""

    dropped_by: float  # time.monotonic() by which the server's heartbeat dropped every attacker
    attack_start: float = 0.0
    attack_hold: float = 0.0
    attack_end: float = 0.0
    let_go: float = 0.0


async def run(ctx: Context) -> None:
    stack = ctx.stack
    before = await ctx.blocking(_states, stack)
    limit, budget, heartbeat = await _memory_bounds(ctx)
    memory = StatsSampler(_CgroupMemory(stack.server, limit))
    memory.start()
    watching = asyncio.Event()
    held: dict[str, float] = {}  # the highest value of each ws_memory* metric seen
    watcher = asyncio.get_running_loop().create_task(_watch_memory_metrics(ctx, watching, held))
    # A message is lost when its echo does not come back at all, not when it comes late
    # (the round trips are a figure of their own): the clients wait ECHO_WAIT s for it.
    fleet = Fleet.of(
        HEALTHY, stack.url, prefix="healthy", interval=0.1, window=2, echo_timeout=ECHO_WAIT
    )
    helpers: list[helper_containers.Helper] = []
    times = _Timeline(dropped_by=time.monotonic() + heartbeat)
    try:
        await _attack(ctx, fleet, helpers, times, heartbeat)
    finally:
        memory.stop()
        watching.set()
        await watcher
        for helper in helpers:
            await ctx.blocking(helper.remove)

    after = await ctx.blocking(_states, stack)
    _check_survived(ctx, before, after)
    _report_memory(ctx, memory, limit, budget, held)
    _report_round_trips(ctx, fleet, times)
    if after["server"]["status"] == "running":
        await _after_attack(ctx, stack, times.let_go, times.dropped_by)
    else:
        ctx.check("after the attack the gateway serves again", False, "the server is not running")
    await _stop_healthy_clients(ctx, fleet, times)


async def _memory_bounds(ctx: Context) -> tuple[int, float | None, float]:
    """The server's memory limit and budget (bytes; None: it states none), and how long
    its heartbeat takes at most to drop a connection whose peer is gone (s)."""
    limit = (await ctx.blocking(ctx.stack.server.inspect))["HostConfig"]["Memory"]
    started = await ctx.server_events(event="server_started")
    budget, budget_source = _budget(await ctx.metrics(), started)
    config = (started[-1].get("config") or {}) if started else {}
    # The server's heartbeat drops a connection whose peer is gone this long after it
    # opened at the latest (a few tunnels outlive their client at NGINX: seen 2-4 of 300).
    heartbeat = float(config.get("ping_interval", 20)) + float(config.get("ping_timeout", 20))
    ctx.figure("server memory limit", limit / MiB, "MiB")
    ctx.figure(
        "server memory budget",
        f"{budget / MiB:.0f} MiB ({budget_source})" if budget else "none stated",
    )
    return limit, budget, heartbeat


async def _attack(
    ctx: Context,
    fleet: Fleet,
    helpers: list[helper_containers.Helper],
    times: _Timeline,
    heartbeat: float,
) -> None:
    """The healthy clients echo; the attackers connect, attack, hold, let go.

    The helpers it starts go into ``helpers`` (the caller removes them, also on failure).
    """
    ctx.step(f"{HEALTHY} healthy clients echo through NGINX from the host")
    fleet.start()
    await ctx.expect(lambda: fleet.all_echoing(3), f"all {HEALTHY} healthy clients echo", 15)

    ctx.step(
        f"attackers connect from {EDGE_ADDRESSES} addresses on the edge network and one on"
        f" the backend network: {EDGE_ADDRESSES * SLOW_PER_ADDRESS} slow readers and"
        f" {FLOODERS} ping flooders, sending nothing yet"
    )
    helpers += await ctx.blocking(hostile_attackers.start, ctx.stack)
    weights = await ctx.blocking(lambda: {h.inspect()["HostConfig"]["CpuShares"] for h in helpers})
    ctx.figure(
        "attackers' CPU weight (as if on machines of their own; Docker's default 1024)",
        ", ".join(map(str, sorted(weights))),
    )
    what = "every attacker has connected (or given up)"
    hostile_attackers.report_connected(
        ctx, await hostile_attackers.reported(ctx, helpers, "connected", what, PLACE_WITHIN + 10)
    )
    times.dropped_by = time.monotonic() + heartbeat  # every attacker gone by then

    ctx.step(
        f"all at once: the slow readers send {MESSAGE // MiB} MiB messages and never read,"
        f" the flooders ping and never read, {ABORTED} aborted and {UNFINISHED:,}"
        " unfinished handshakes (half through NGINX, half straight at the server)"
    )
    times.attack_start = time.time()
    await hostile_attackers.touch(ctx, helpers, "/tmp/go")
    what = "the attack is on (each slow reader and flooder pushed, or is held back already)"
    hostile_attackers.report_attack(
        ctx, await hostile_attackers.reported(ctx, helpers, "attacking", what, PLACE_WITHIN + 10)
    )

    ctx.step(f"holding the attack for {HOLD:g} s while the healthy clients echo")
    times.attack_hold = time.time()
    await ctx.holds_for(
        lambda: fleet.connected == HEALTHY,
        f"all {HEALTHY} healthy clients stay connected under the attack",
        HOLD,
    )
    times.attack_end = time.time()
    ctx.step("the attackers drop everything")
    times.let_go = time.time()
    await hostile_attackers.touch(ctx, helpers, "/tmp/stop")
    hostile_attackers.report_let_go(
        ctx, await hostile_attackers.reported(ctx, helpers, "done", "every attacker has let go", 15)
    )


def _states(stack: GatewayStack) -> dict[str, dict[str, Any]]:
    """:func:`_state` of the server and NGINX, by role (blocking: Docker)."""
    return {s.role: _state(s) for s in (stack.server, stack.nginx)}


def _check_survived(ctx: Context, before: dict[str, Any], after: dict[str, Any]) -> None:
    """Neither the server nor NGINX was OOM-killed, restarted or stopped."""
    for role in ("server", "nginx"):
        was, now = before[role], after[role]
        ctx.check(
            f"{role}: not OOM-killed, not restarted, still running",
            not now["oom"]
            and now["restarts"] == was["restarts"]
            and now["started"] == was["started"]
            and now["status"] == "running",
            f"OOMKilled={now['oom']}, restarts {was['restarts']}->{now['restarts']},"
            f" status {now['status']}",
        )


def _report_memory(
    ctx: Context,
    memory: StatsSampler,
    limit: int,
    budget: float | None,
    held: dict[str, float],
) -> None:
    """The server's memory peak against its budget and limit, and its own figures."""
    peak = memory.peak
    ctx.figure(
        "server memory peak (cgroup, sampled)",
        f"{peak / MiB:.0f} MiB of {limit / MiB:.0f} MiB limit,"
        f" {len(memory.samples)} samples every {SAMPLE_PERIOD:g} s",
    )
    ctx.check(
        "the server's memory peak stayed below its budget and its limit",
        budget is not None and 0 < peak < budget < limit,
        f"peak {peak / MiB:.0f} MiB, budget "
        + (f"{budget / MiB:.0f} MiB" if budget else "none stated (no *memory_budget* metric)")
        + f", limit {limit / MiB:.0f} MiB",
    )
    ctx.figure(
        "the server's own memory metrics at their highest",
        ", ".join(
            f"{k} {v / MiB:.0f} MiB" if "bytes" in k else f"{k} {v:g}" for k, v in held.items()
        )
        or "none (no ws_memory* metric)",
    )


def _report_round_trips(ctx: Context, fleet: Fleet, times: _Timeline) -> None:
    """The healthy clients' round trips while the attack was on."""
    trips = _round_trips(fleet, times.attack_start, times.attack_end)
    p99 = trips[int(len(trips) * 0.99)][0] if trips else float("inf")
    if trips:
        ctx.figure(
            "healthy round trip during the attack",
            f"p50 {1000 * trips[len(trips) // 2][0]:.0f} ms, p99 {1000 * p99:.0f} ms,"
            f" max {1000 * trips[-1][0]:.0f} ms ({len(trips)} messages)",
        )
    ctx.check(
        f"the healthy clients' p99 round trip during the attack is under"
        f" {1000 * HEALTHY_P99:.0f} ms",
        p99 < HEALTHY_P99,
        f"p99 {1000 * p99:.0f} ms of {len(trips)} round trips",
    )
    slow = sorted(at for took, at in trips if took > SLOW_ECHO)
    if slow:
        ctx.figure(
            f"healthy echoes slower than {1000 * SLOW_ECHO:.0f} ms",
            f"{len(slow)}, sent {slow[0]:.1f}-{slow[-1]:.1f} s after the attack began",
        )


async def _stop_healthy_clients(ctx: Context, fleet: Fleet, times: _Timeline) -> None:
    """Stop the healthy clients: none lost a message, reconnected or was refused."""
    ctx.step("stopping the healthy clients")
    await fleet.stop()
    start = times.attack_start
    failed = sorted(m.settled_at - start for m in fleet.failed_messages() if m.settled_at)
    if failed:
        ctx.note(
            f"healthy messages failed {failed[0]:.1f}-{failed[-1]:.1f} s after the attack began"
            f" (the hold ran {times.attack_hold - start:.1f}-{times.attack_end - start:.1f} s)"
        )
    account(ctx, fleet, failures_expected=False)
    ctx.check(
        "every healthy client kept its one connection (no reconnect, no refused handshake)",
        all(len(c.sessions) == 1 for c in fleet.clients) and not fleet.handshake_failures(),
        f"{len(fleet.sessions())} sessions, {len(fleet.handshake_failures())} failed handshakes",
    )


async def _after_attack(
    ctx: Context, stack: GatewayStack, let_go: float, dropped_by: float
) -> None:
    """Once the attackers let go: the gauge, readiness, a new client, what the server counted."""
    last: list[float] = []

    async def back_to_healthy() -> bool:
        last.append(await ctx.gauge())
        return last[-1] == HEALTHY

    await ctx.expect(
        back_to_healthy,
        f"ws_connections_active is back to the {HEALTHY} healthy clients (by the"
        " server's heartbeat at the latest)",
        max(10.0, dropped_by - time.monotonic() + 5),
        detail=lambda: (
            f"gauge {last[0]:g} when the attackers let go, now {last[-1]:g}" if last else ""
        ),
        poll=0.25,
    )
    status, _, _ = await ctx.blocking(stack.server_get, "/readyz")
    ctx.check("/readyz answers 200", status == 200, f"{status}")
    code, took = await _new_client(stack.url)
    ctx.check(
        "a new client is served at once (101 and its echo, no 503)",
        code == 101 and took < seconds(2),
        f"{code} after {took:.2f} s",
    )
    late = Counter()
    for e in await ctx.server_events(event="connection_closed"):
        after = datetime.fromisoformat(e["ts"]).timestamp() - let_go
        if after > 1:
            kind = "-".join(str(e.get("request_id") or "?").split("-")[:-1]) or "?"
            late[f"{kind} {e.get('drop_reason') or e.get('closed_by')} ~{after:.0f} s"] += 1
    if late:
        ctx.note(
            "closed more than 1 s after the attackers let go: "
            + ", ".join(f"{k} x{n}" for k, n in sorted(late.items()))
        )
    metrics = await ctx.metrics()
    shown = metrics.flat(
        "ws_errors_total", "ws_connections_rejected_total", *metrics.names("ws_memory")
    )
    shown["ws_closes_total{code=1013}"] = metrics.value("ws_closes_total", code="1013")
    counted = {k: v for k, v in shown.items() if v}
    ctx.note("the server counted: " + (", ".join(f"{k}={v:g}" for k, v in counted.items()) or "-"))


SCENARIO = Scenario(
    name="hostile-clients",
    number=10,
    title="Hostile clients from many addresses at once",
    proves=(
        f"{EDGE_ADDRESSES * SLOW_PER_ADDRESS} slow readers sending {MESSAGE // MiB} MiB"
        f" messages from {EDGE_ADDRESSES} addresses (each under NGINX's per-IP cap), ping"
        f" floods, {ABORTED} aborted and {UNFINISHED:,} unfinished handshakes, through NGINX"
        " and straight at the server, all at once: nothing is OOM-killed or restarted, the"
        f" server's memory peak stays below its budget and its limit, {HEALTHY} healthy"
        f" clients lose no message and their p99 round trip stays under"
        f" {1000 * HEALTHY_P99:.0f} ms, and afterwards the gauge is back"
        " to the healthy count, /readyz is 200 and a new client is served at once."
    ),
    run=run,
    stacks={"main": OPTIONS},
    deadline=90,
)
