"""3. Server restart and SIGKILL: NGINX answers 502 meanwhile, then finds the new server."""

from __future__ import annotations

import time

from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from stack import helper_containers
from stack.echo_client.fleet import Fleet
from stack.gateway import StackOptions
from stack.scenarios.base import Context, Scenario
from stack.scenarios.common import account, codes, nginx_master_pid_started, spread
from stack.waits import seconds

CLIENTS = 20
RESOLVER_VALID = 5  # NGINX re-resolves the server's name at least this often (default)
CONNECT_TIMEOUT = 2  # PROXY_CONNECT_TIMEOUT: a dead address fails the handshake after this

OPTIONS = StackOptions(
    nginx_env={
        "RESOLVER_VALID": f"{RESOLVER_VALID}s",
        "PROXY_CONNECT_TIMEOUT": f"{CONNECT_TIMEOUT}s",
        # 20 clients retrying from one address while the server is down: the per-IP rate
        # limit (scenario 8) must not be what slows their recovery down here.
        "WS_RATE_LIMIT": "12000r/m",
        "WS_RATE_BURST": "1000",
    },
)


async def _handshake_status(url: str) -> tuple[int, float]:
    """Status of one handshake through NGINX (101 when it opened) and how long it took."""
    started = time.monotonic()
    try:
        ws = await connect(url, proxy=None, compression=None, open_timeout=CONNECT_TIMEOUT + 5)
    except InvalidStatus as e:
        return e.response.status_code, time.monotonic() - started
    await ws.close()
    return 101, time.monotonic() - started


async def run(ctx: Context) -> None:
    stack = ctx.stack
    nginx_before = await ctx.blocking(nginx_master_pid_started, stack)
    fleet = Fleet.of(CLIENTS, stack.url, prefix="s", interval=0.1, window=2, echo_timeout=10)
    try:
        ctx.step(f"starting {CLIENTS} echoing clients")
        fleet.start()
        await ctx.expect(
            fleet.all_echoing,
            f"all {CLIENTS} clients echoing",
            20,
        )
        await _restart(ctx, fleet)
        ip_after = stack.server_ip
        ctx.note(f"restarted server at {ip_after}")
        killed_at = await _kill(ctx, fleet)
        await _check_down_answers(ctx)
        new_ip = await _replace(ctx, fleet, ip_after, killed_at)
        ctx.check("the server has a new address", new_ip != ip_after, f"{ip_after} -> {new_ip}")
        ctx.check(
            "NGINX was never restarted",
            await ctx.blocking(nginx_master_pid_started, stack) == nginx_before,
        )
        gauge = await ctx.gauge()
        ctx.check(
            f"the new server counts {CLIENTS} connections", gauge == CLIENTS, f"gauge {gauge:g}"
        )
    finally:
        ctx.step("stopping the clients")
        await fleet.stop()
    account(ctx, fleet)


async def _restart(ctx: Context, fleet: Fleet) -> None:
    """A: docker restart (SIGTERM: the server drains; then the same container)."""
    ctx.step(f"restarting the server container (docker restart, server at {ctx.stack.server_ip})")
    restarted_at = time.time()
    await ctx.blocking(ctx.stack.server.restart, 15)
    ctx.figure("server restart took", time.time() - restarted_at, "s")
    first = [c.sessions[0] for c in fleet.clients]
    ctx.check(
        "every client was told 1001 (going away) by the draining server",
        all(s.code == 1001 and s.closed_by == "server" for s in first),
        codes(first),
    )
    await ctx.expect(
        lambda: all(
            c.connected and len(c.sessions) >= 2 and c.current.echoed >= 3 for c in fleet.clients
        ),
        "all clients reconnected to the restarted server and echo",
        RESOLVER_VALID + 15,
    )
    back = [c.sessions[1].opened_at - restarted_at for c in fleet.clients]
    ctx.figure("restart command to clients reconnected", spread(back))


async def _kill(ctx: Context, fleet: Fleet) -> float:
    """B: SIGKILL, no drain: every client sees its connection drop. When (epoch s)."""
    ctx.step("SIGKILL to the server: no drain, no close frames")
    sessions_before = [len(c.sessions) for c in fleet.clients]
    killed_at = time.time()
    await ctx.blocking(ctx.stack.server.kill, "SIGKILL")
    await ctx.expect(
        lambda: (
            all(
                not c.connected or len(c.sessions) > n
                for c, n in zip(fleet.clients, sessions_before, strict=True)
            )
            and all(
                not c.sessions[n - 1].open
                for c, n in zip(fleet.clients, sessions_before, strict=True)
            )
        ),
        "every client saw its connection drop",
        10,
    )
    dropped = [c.sessions[n - 1] for c, n in zip(fleet.clients, sessions_before, strict=True)]
    ctx.note(f"connections ended: {codes(dropped)}")
    return killed_at


async def _check_down_answers(ctx: Context) -> None:
    """While the server is down, NGINX answers every handshake in time, 502 once re-resolved."""
    # Until NGINX re-resolves the name, it still tries the dead address: the handshake
    # fails after PROXY_CONNECT_TIMEOUT (502/504); once the name is gone from Docker's
    # DNS, NGINX has no server left and answers 502 at once.
    tries: list[tuple[int, float]] = []

    async def answers_502_at_once() -> bool:
        tries.append(await _handshake_status(ctx.stack.url))
        return tries[-1][0] == 502 and tries[-1][1] < 0.5

    await ctx.expect(
        answers_502_at_once,
        f"NGINX answers 502 at once once it re-resolved (RESOLVER_VALID={RESOLVER_VALID}s)",
        RESOLVER_VALID + CONNECT_TIMEOUT + 3,
    )
    ctx.figure(
        "handshakes through NGINX while the server is down",
        ", ".join(f"{s} in {t:.2f} s" for s, t in tries),
    )
    ctx.check(
        f"no handshake hung while the server was down (each failed with 502/504 within"
        f" PROXY_CONNECT_TIMEOUT={CONNECT_TIMEOUT}s + 1 s)",
        all(s in (502, 504) and t <= CONNECT_TIMEOUT + seconds(1) for s, t in tries),
    )


async def _replace(ctx: Context, fleet: Fleet, ip_after: str, killed_at: float) -> str:
    """A new server container with a new address; the clients find it through NGINX,
    which is left alone. The new address."""
    stack = ctx.stack
    # Docker hands a freed address to the next container: a placeholder takes the dead
    # server's one, so the new server surely gets another address and NGINX can only
    # find it by re-resolving the name (an address remembered from start-up won't do).
    holder = await ctx.blocking(helper_containers.placeholder, stack, stack.backend)
    ctx.step("starting a new server container (new address); NGINX is left alone")
    await ctx.blocking(stack.replace_server)
    await ctx.blocking(holder.remove)
    ready_at = time.time()
    new_ip = stack.server_ip
    ctx.note(
        f"new server ready at {new_ip} (was {ip_after}),"
        f" {ready_at - killed_at:.1f} s after the kill"
    )
    statuses = {f.status for c in fleet.clients for f in c.handshake_failures if f.at >= killed_at}
    ctx.note(f"client handshakes failed meanwhile with: {sorted(map(str, statuses))}")
    took = await ctx.expect(
        lambda: all(
            c.connected and c.current.opened_at > ready_at - 1 and c.current.echoed >= 3
            for c in fleet.clients
        ),
        f"all clients recovered on the new server, without an NGINX restart"
        f" (re-resolved within RESOLVER_VALID={RESOLVER_VALID}s + backoff)",
        RESOLVER_VALID + 15,
    )
    if took is not None:
        ctx.figure("new server ready to all clients echoing", took, "s")
    return new_ip


SCENARIO = Scenario(
    name="server-restart",
    number=3,
    title="Server restart and SIGKILL",
    proves=(
        "A restarted server tells its clients 1001 and they come back. After a SIGKILL no"
        " handshake hangs: NGINX fails it after PROXY_CONNECT_TIMEOUT (504) while it still"
        " knows the dead address, and with 502 at once after re-resolving the name; then it"
        " routes to a new server container with a new address, without an NGINX restart."
        " Clients recover by themselves and every message is accounted for."
    ),
    run=run,
    stacks={"main": OPTIONS},
    deadline=120,
)
