"""10. Rolling update on Docker Swarm: every replica replaced, no message lost, no 5xx.

A one-node swarm (stack/swarm.py: machine-wide lock, the stack always removed, the swarm
left if the scenario made it; in a test run, the run's swarm), 3 server replicas behind
NGINX (least_conn over `tasks.server`, `proxy_next_upstream` on 503 and refusals). While
100 reconnecting clients echo, `docker service update --force` replaces each replica, one
at a time, start-first. Then an update to a server version that cannot start (a bad WS_*
value: exit 2, never healthy) is rolled back by the swarm on its own.
"""

from __future__ import annotations

import statistics
import time
from collections import Counter
from typing import Any

from stack import swarm
from stack.containers import parse_json_lines
from stack.echo_client.fleet import Fleet
from stack.echo_client.ledger import Outcome
from stack.echo_client.reconnecting import ReconnectingClient, Session
from stack.scenarios.base import Context, Scenario
from stack.scenarios.common import account, codes, spread

CLIENTS = 100
REPLICAS = 3
PREFIX = "u"  # client names and X-Request-IDs: u000-1, u000-2, ...
BAD_SETTING = "WS_MAX_CONNECTIONS=0"  # out of range: the server exits 2, never healthy
SETTINGS = {
    # Pace the update for a test (production: 2s between replicas, watched 20s each).
    "SERVER_UPDATE_DELAY": "1s",
    "SERVER_UPDATE_MONITOR": "8s",
    # 100 clients on one address, each reconnecting up to once per replica: allow them.
    "WS_RATE_LIMIT": "60000r/m",
    "WS_RATE_BURST": "10000",
    "WS_CONN_LIMIT_PER_IP": "2000",
    "WS_LOG_MESSAGES": "false",  # connection events are what this story reads
}


# ---- what the swarm says (blocking: docker CLI) -------------------------------------------
def update_state() -> str:
    return (swarm.inspect("server").get("UpdateStatus") or {}).get("State", "")


def server_spec() -> tuple[str, list[str]]:
    """(image, env) of the server service's current spec."""
    spec = swarm.inspect("server")["Spec"]["TaskTemplate"]["ContainerSpec"]
    return spec["Image"], sorted(spec.get("Env") or [])


def replica_gauges() -> dict[str, int]:
    """{container id: ws_connections_active} of every running server replica."""
    return {c[:12]: swarm.active_connections(c) for c in swarm.containers("server")}


def healthy_replicas() -> list[str]:
    return [c[:12] for c in swarm.containers("server") if swarm.health(c) == "healthy"]


def nginx_handshakes() -> list[dict[str, Any]]:
    """NGINX's access-log entries of our clients' handshakes (logged when tunnels close)."""
    return [
        e
        for e in parse_json_lines(swarm.logs("nginx"))
        if str(e.get("request", "")).startswith("GET /ws")
        and str(e.get("request_id", "")).startswith(PREFIX)
    ]


def replica_of(handshakes: list[dict[str, Any]]) -> dict[str, str]:
    """{X-Request-ID: address of the replica NGINX passed it to} (the last one it tried).

    The address names the replica: the swarm hands out overlay addresses in turn, so a
    new task does not get the one an old task just freed (were it to, the once-per-replica
    check would fail, not pass, wrongly).
    """
    return {
        str(e["request_id"]): str(e.get("upstream_addr", "")).split(",")[-1].strip() or "?"
        for e in handshakes
    }


# ---- what the clients saw ------------------------------------------------------------------
def drops(fleet: Fleet, start: float, end: float) -> list[tuple[ReconnectingClient, Session]]:
    """Sessions that ended between ``start`` and ``end`` (epoch s), with their client."""
    return [
        (c, s)
        for c in fleet.clients
        for s in c.sessions
        if s.closed_at is not None and start <= s.closed_at < end
    ]


def back_after(client: ReconnectingClient, dropped_at: float) -> float | None:
    """Seconds from a drop to the client's next intact echo (None: none came)."""
    echoes = [
        m.settled_at
        for m in client.ledger.messages.values()
        if m.outcome is Outcome.ECHOED and m.settled_at and m.settled_at >= dropped_at
    ]
    return min(echoes) - dropped_at if echoes else None


def p99(values: list[float]) -> float:
    return statistics.quantiles(values, n=100)[98] if len(values) > 1 else values[0]


def report_drops(ctx: Context, label: str, dropped: list, replicas: dict[str, str]) -> None:
    """Figures and checks of one phase's drops: time to the next echo, once per replica."""
    ctx.figure(f"{label}: connections dropped", len(dropped))
    ctx.note(f"{label}: dropped connections ended {codes(s for _, s in dropped)}")
    gaps = [back_after(c, s.closed_at) for c, s in dropped]
    never = sum(g is None for g in gaps)
    gaps = [g for g in gaps if g is not None]
    if gaps:
        ctx.figure(f"{label}: drop to next intact echo, max", max(gaps), "s")
        ctx.figure(f"{label}: drop to next intact echo, p99", p99(gaps), "s")
        ctx.figure(f"{label}: drop to next intact echo", spread(gaps))
    ctx.check(f"{label}: every dropped client echoed again", never == 0, f"{never} did not")
    twice = []
    for client in {c for c, _ in dropped}:
        on = Counter(replicas.get(s.request_id, "?") for c, s in dropped if c is client)
        twice += [f"{client.name} x{n} on {t}" for t, n in on.items() if n > 1 or t == "?"]
    ctx.check(
        f"{label}: each client reconnected at most once per replica it was on",
        not twice,
        ", ".join(twice[:5]) or f"{len({c for c, _ in dropped})} clients reconnected",
    )


async def spread_over_replicas(ctx: Context, when: str) -> dict[str, int]:
    """Check that the replicas' gauges add up to the clients, least_conn spreading them
    (each replica at least half its fair share); return {container: gauge}."""
    await ctx.expect(
        lambda: ctx.blocking(lambda: sum(replica_gauges().values()) == CLIENTS),
        f"{when} the update: the replicas' gauges add up to {CLIENTS}, none left behind",
        20,
    )
    gauges = await ctx.blocking(replica_gauges)
    ctx.figure(f"connections per replica {when}", sorted(gauges.values()))
    ctx.check(
        f"{when} the update: least_conn spread the clients over every replica",
        len(gauges) == REPLICAS and min(gauges.values()) >= CLIENTS // (2 * REPLICAS),
        str(gauges),
    )
    return gauges


async def run(ctx: Context) -> None:
    with swarm.deployed(REPLICAS, settings=SETTINGS) as url:  # blocks; nothing runs yet
        ctx.note(f"stack {swarm.STACK} on a one-node swarm, {REPLICAS} replicas, at {url}")
        await _story(ctx, url)
    ctx.check(
        "the stack is removed and the host is in the swarm state it started in",
        not swarm.containers("server") and not swarm.containers("nginx"),
        f"swarm: {swarm.node_state()}",
    )


async def _story(ctx: Context, url: str) -> None:
    before = {
        "spec": await ctx.blocking(server_spec),
        "nginx": await ctx.blocking(swarm.containers, "nginx"),
    }
    await ctx.expect(
        lambda: ctx.blocking(lambda: len(healthy_replicas()) == REPLICAS),
        f"all {REPLICAS} replicas healthy",
        90,
    )
    ctx.step(f"starting {CLIENTS} reconnecting clients through NGINX ({url})")
    fleet = Fleet.of(CLIENTS, url, prefix=PREFIX, interval=0.25, window=2, echo_timeout=10)
    fleet.start()
    stopped_at = float("inf")
    try:
        await ctx.expect(fleet.all_echoing, f"all {CLIENTS} clients echoing", 60)
        updated_at, done_at, replicas_after = await _rolling_update(ctx, fleet)
        bad_at = await _failed_update(ctx, fleet, before["spec"], replicas_after)
    finally:
        ctx.step("stopping the clients")
        stopped_at = time.time()
        await fleet.stop()

    sessions = len(fleet.sessions())
    logged = await ctx.expect(
        lambda: ctx.blocking(lambda: len(nginx_handshakes()) >= sessions),
        f"NGINX logged all {sessions} of our tunnels",
        20,
        poll=0.5,
    )
    handshakes = await ctx.blocking(nginx_handshakes)
    replicas = replica_of(handshakes)
    report_drops(ctx, "update", drops(fleet, updated_at, done_at), replicas)
    report_drops(ctx, "failed update", drops(fleet, bad_at, stopped_at), replicas)
    await _check_handshakes(ctx, fleet, handshakes, logged is not None)

    spec = await ctx.blocking(server_spec)
    nginx = await ctx.blocking(swarm.containers, "nginx")
    ctx.check(
        "the stack is left as it was: same server spec, same NGINX container, all healthy",
        spec == before["spec"]
        and nginx == before["nginx"]
        and len(await ctx.blocking(healthy_replicas)) == REPLICAS,
        f"NGINX {nginx[0][:12] if nginx else 'gone'}",
    )
    account(ctx, fleet, failures_expected=False)


async def _rolling_update(ctx: Context, fleet: Fleet) -> tuple[float, float, set[str]]:
    """docker service update --force while the clients echo: every replica replaced.

    When the update began and when the swarm completed it (epoch s), and the new replicas.
    """
    gauges = await spread_over_replicas(ctx, "before")
    ctx.step("docker service update --force: replace every replica, one at a time")
    old = set(gauges)
    updated_at = time.time()
    await ctx.blocking(
        swarm.docker,
        *("service", "update", "--detach", "--force", "--no-resolve-image"),
        f"{swarm.STACK}_server",
    )
    took = await ctx.expect(
        lambda: ctx.blocking(lambda: update_state() == "completed"),
        "the swarm completed the rolling update",
        180,
        poll=1,
    )
    done_at = time.time()
    ctx.figure("rolling update took (3 replicas, then the monitor period)", took or 0, "s")
    await ctx.expect(
        lambda: ctx.blocking(
            lambda: len(healthy_replicas()) == REPLICAS and not old & set(healthy_replicas())
        ),
        f"{REPLICAS} new healthy replicas, none of the old ones left",
        30,
    )
    await ctx.expect(
        lambda: fleet.all_echoing() and fleet.connected == CLIENTS,
        f"all {CLIENTS} clients connected and echoing after the update",
        30,
    )
    gauges = await spread_over_replicas(ctx, "after")
    return updated_at, done_at, set(gauges)


async def _failed_update(
    ctx: Context, fleet: Fleet, spec_before: tuple[str, list[str]], kept: set[str]
) -> float:
    """An update to a version that never starts: the swarm rolls it back while the clients
    echo. When it began (epoch s)."""
    ctx.step(f"docker service update --env-add {BAD_SETTING}: a version that never starts")
    echoed = {c.name: c.ledger.echoed for c in fleet.clients}
    bad_at = time.time()
    await ctx.blocking(
        swarm.docker,
        *("service", "update", "--detach", "--no-resolve-image"),
        *("--env-add", BAD_SETTING, f"{swarm.STACK}_server"),
    )
    took = await ctx.expect(
        lambda: ctx.blocking(lambda: update_state() == "rollback_completed"),
        "the swarm rolled the update back on its own (UpdateStatus rollback_completed)",
        180,
        poll=1,
    )
    ctx.figure("bad update to rollback completed", took or 0, "s")
    message = (await ctx.blocking(swarm.inspect, "server"))["UpdateStatus"].get("Message")
    errors = {t.get("Error") for t in await ctx.blocking(swarm.tasks, "server")} - {""}
    ctx.note(f"swarm says: {message}; the new task: {', '.join(sorted(errors))}")
    spec = await ctx.blocking(server_spec)
    ctx.check(
        "the service is back on the old spec (image, environment)",
        spec == spec_before,
        f"image {spec[0]}, {BAD_SETTING} {'still set' if BAD_SETTING in spec[1] else 'gone'}",
    )
    await ctx.expect(
        lambda: ctx.blocking(lambda: len(healthy_replicas()) == REPLICAS),
        f"{REPLICAS} healthy replicas after the rollback",
        30,
    )
    ctx.note(
        "replicas the rollback kept: "
        f"{len(kept & set(await ctx.blocking(healthy_replicas)))} of {REPLICAS}"
    )
    await ctx.expect(
        lambda: (
            fleet.connected == CLIENTS
            and all(c.ledger.echoed >= echoed[c.name] + 3 for c in fleet.clients)
        ),
        f"all {CLIENTS} clients kept echoing through the failed update and its rollback",
        30,
    )
    return bad_at


async def _check_handshakes(
    ctx: Context, fleet: Fleet, handshakes: list[dict[str, Any]], all_logged: bool
) -> None:
    """Every handshake was answered 101, as the clients saw it and as NGINX logged it."""
    failures = fleet.handshake_failures()
    statuses = Counter(f.status for f in failures if f.status is not None)
    ctx.figure("connection attempts that failed (refused, reset, timed out)", len(failures))
    ctx.check(
        "no handshake was answered with anything but 101 (as the clients saw it)",
        not statuses,
        ", ".join(f"{s} x{n}" for s, n in statuses.items()) or f"{len(fleet.sessions())} x 101",
    )
    for e in [e for e in handshakes if e.get("status") != 101][:5]:
        ctx.note(
            f"NGINX answered {e.get('status')} to {e.get('request_id')} at {e.get('time')}:"
            f" upstream {e.get('upstream_addr')} said {e.get('upstream_status') or 'nothing'}"
        )
    if any(e.get("status") != 101 for e in handshakes):
        text = await ctx.blocking(swarm.logs, "nginx")
        for line in [x for x in text.splitlines() if "[error]" in x][:5]:
            ctx.note(f"NGINX: {line[:300]}")
    if all_logged:
        answers = Counter(e.get("status") for e in handshakes)
        ctx.check(
            "no handshake was answered with anything but 101 (NGINX's access log)",
            set(answers) == {101},
            ", ".join(f"{s} x{n}" for s, n in sorted(answers.items())),
        )


SCENARIO = Scenario(
    name="rolling-update",
    number=11,
    title="Rolling update on a swarm",
    proves=(
        f"On a one-node Docker Swarm with {REPLICAS} server replicas, {CLIENTS} clients echo"
        " through NGINX while `docker service update --force` replaces every replica one at a"
        " time (start-first): no message is lost (those in flight at a drop are resent),"
        " every handshake is answered 101, each client reconnects at most once per replica"
        " it was on and echoes again within about a second, the connections spread over"
        " the replicas before and after, and the stack is left as it was. An update to a"
        " version that cannot start is rolled back by the swarm while the clients echo."
    ),
    run=run,
    stacks={},  # a swarm of its own (swarm.deployed), not a compose-like stack
    deadline=420,
)
