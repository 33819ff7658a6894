"""1. NGINX restart mid-session: clients reconnect, the server cleans up, nothing is lost."""

from __future__ import annotations

import time

from stack.echo_client.fleet import Fleet
from stack.gateway import StackOptions
from stack.scenarios.base import Context, Scenario
from stack.scenarios.common import account, codes, spread

CLIENTS = 50
SHUTDOWN_TIMEOUT = 3  # WORKER_SHUTDOWN_TIMEOUT: old workers close WebSockets after this

OPTIONS = StackOptions(
    nginx_env={
        "WORKER_SHUTDOWN_TIMEOUT": f"{SHUTDOWN_TIMEOUT}s",
        # 50 clients share one source address (the host): allow their handshakes twice
        # over (start and reconnect) without meeting the per-IP rate limit, which is
        # scenario 8's subject, not this one's.
        "WS_RATE_LIMIT": "6000r/m",
        "WS_RATE_BURST": "200",
    }
)


def _server_identity(ctx: Context) -> tuple[str, str, int]:
    attrs = ctx.stack.server.inspect()
    return attrs["Id"], attrs["State"]["StartedAt"], attrs["RestartCount"]


async def run(ctx: Context) -> None:
    stack = ctx.stack
    server_before = await ctx.blocking(_server_identity, ctx)
    started_before = (await ctx.metrics()).value("ws_process_start_time_seconds")

    ctx.step(f"starting {CLIENTS} reconnecting clients through NGINX ({stack.url})")
    # Clients read the URL at each (re)connect: a restarted NGINX gets a new host port.
    fleet = Fleet.of(
        CLIENTS, lambda: stack.url, prefix="r", interval=0.1, window=2, echo_timeout=10
    )
    fleet.start()
    try:
        await ctx.expect(
            fleet.all_echoing,
            f"all {CLIENTS} clients connected and echoing",
            30,
        )
        await ctx.expect(
            lambda: ctx.gauge_is(CLIENTS), f"server gauge ws_connections_active = {CLIENTS}", 15
        )
        restarted_at = await _restart_nginx(ctx, fleet)
        await _clients_come_back(ctx, fleet, restarted_at)
        await _check_server_cleaned_up(ctx)
        server_after = await ctx.blocking(_server_identity, ctx)
        started_after = (await ctx.metrics()).value("ws_process_start_time_seconds")
        ctx.check(
            "the server was never restarted (same container, start time, process)",
            server_after == server_before and started_after == started_before,
            f"restart count {server_after[2]}, started {server_after[1]}",
        )
    finally:
        ctx.step("stopping the clients")
        await fleet.stop()
    # In flight at the drop, resent after the reconnect: the application loses nothing.
    account(ctx, fleet, failures_expected=False)


async def _restart_nginx(ctx: Context, fleet: Fleet) -> float:
    """docker restart NGINX; every client sees its connection close. When (epoch s)."""
    ctx.step(
        f"restarting the NGINX container (docker restart; SIGQUIT, workers close"
        f" WebSockets after WORKER_SHUTDOWN_TIMEOUT={SHUTDOWN_TIMEOUT}s)"
    )
    restarted_at = time.time()
    restart = ctx.background(ctx.stack.nginx.restart, 15)
    await ctx.expect(
        lambda: all(len(c.closed_sessions()) >= 1 for c in fleet.clients),
        f"every client saw its connection close within {SHUTDOWN_TIMEOUT + 4} s",
        SHUTDOWN_TIMEOUT + 4,
    )
    first = [c.sessions[0] for c in fleet.clients]
    ctx.figure(
        "connection closed after restart",
        spread([s.closed_at - restarted_at for s in first if s.closed_at]),
    )
    ctx.note(f"first connections ended: {codes(first)}")
    await restart
    ctx.figure("NGINX restart took", time.time() - restarted_at, "s")
    ctx.note(f"NGINX is back at {ctx.stack.url} (Docker publishes a new host port)")
    return restarted_at


async def _clients_come_back(ctx: Context, fleet: Fleet, restarted_at: float) -> None:
    """Every client reconnects on its own and echoes again; how long it took."""
    await ctx.expect(
        lambda: all(
            c.connected and len(c.sessions) >= 2 and c.current.echoed >= 3 for c in fleet.clients
        ),
        f"all {CLIENTS} clients reconnected on their own and echo again",
        30,
    )
    gaps = [
        c.sessions[1].opened_at - c.sessions[0].closed_at
        for c in fleet.clients
        if len(c.sessions) >= 2 and c.sessions[0].closed_at
    ]
    ctx.figure("reconnect after close", spread(gaps))
    back = max(c.sessions[1].opened_at for c in fleet.clients if len(c.sessions) >= 2)
    ctx.figure("restart command to last client reconnected", back - restarted_at, "s")
    ctx.figure("handshake attempts that failed meanwhile", len(fleet.handshake_failures()))


async def _check_server_cleaned_up(ctx: Context) -> None:
    """The server let go of the dropped upstream connections and logged each."""
    await ctx.expect(
        lambda: ctx.gauge_is(CLIENTS),
        f"server gauge back to {CLIENTS}, not {2 * CLIENTS}: dropped upstream"
        " connections were cleaned up",
        15,
    )
    closed = [
        e
        for e in await ctx.server_events(event="connection_closed")
        if str(e.get("request_id", "")).startswith("r")  # our clients' X-Request-ID
    ]
    ctx.check(
        f"the server logged the end of each of the {CLIENTS} dropped upstream connections",
        len(closed) == CLIENTS,
        f"{len(closed)} connection_closed events, codes "
        + ", ".join(sorted({f"{e.get('code')}/{e.get('closed_by')}" for e in closed})),
    )


SCENARIO = Scenario(
    name="nginx-restart",
    number=1,
    title="NGINX restart mid-session",
    proves=(
        f"{CLIENTS} echoing clients see their connection close within seconds of an NGINX"
        " restart, reconnect on their own with backoff and echo again; the server's"
        f" active-connection gauge returns to {CLIENTS} (not {2 * CLIENTS}), the server is"
        " never restarted, and every message is echoed intact: those in flight at the drop"
        " are resent after the reconnect (counted), none is lost."
    ),
    run=run,
    stacks={"main": OPTIONS},
    deadline=120,
)
