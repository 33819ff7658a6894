"""2. NGINX reload with a changed setting: old connections live on, new ones get the change."""

from __future__ import annotations

import asyncio
import time
from contextlib import suppress

from websockets.asyncio.client import ClientConnection, connect

from stack.echo_client.fleet import Fleet
from stack.gateway import StackOptions
from stack.scenarios.base import Context, Scenario
from stack.scenarios.common import account, codes, nginx_master_pid_started, nginx_workers, spread
from stack.waits import seconds

CLIENTS = 10
SHUTDOWN_TIMEOUT = 8  # WORKER_SHUTDOWN_TIMEOUT: old workers close their WebSockets after this
OLD_READ_TIMEOUT = 60
NEW_READ_TIMEOUT = 2  # the changed setting: proxy_read_timeout, 60s -> 2s
SNIPPET = "/tmp/nginx/snippets/proxy-websocket.conf"

OPTIONS = StackOptions(
    # No server pings: an idle connection is really idle, so proxy_read_timeout shows.
    server_env={"WS_PING_INTERVAL": "0"},
    nginx_env={
        "WORKER_SHUTDOWN_TIMEOUT": f"{SHUTDOWN_TIMEOUT}s",
        "PROXY_READ_TIMEOUT": f"{OLD_READ_TIMEOUT}s",
        "WS_RATE_LIMIT": "6000r/m",  # reconnects of 10 clients from one address: not limited
        "WS_RATE_BURST": "100",
    },
)


async def _idle_connection(url: str):
    """A WebSocket that sends nothing and does not ping: only NGINX's timeout can end it."""
    return await connect(url, proxy=None, compression=None, ping_interval=None, open_timeout=5)


async def run(ctx: Context) -> None:
    stack = ctx.stack
    url = stack.url  # a reload keeps the container, so the published port stays
    nginx_before = await ctx.blocking(nginx_master_pid_started, stack)
    fleet = Fleet.of(CLIENTS, url, prefix="l", interval=0.1, window=2, echo_timeout=10)
    old_idle = None
    try:
        ctx.step(f"starting {CLIENTS} echoing clients and one idle connection")
        fleet.start()
        old_idle = await _idle_connection(url)
        await ctx.expect(
            fleet.all_echoing,
            f"all {CLIENTS} clients echoing",
            20,
        )
        old_workers = await ctx.blocking(nginx_workers, stack)
        ctx.note(f"NGINX workers before the reload: {sorted(old_workers)}")
        echoed_at_reload, reloaded_at = await _reload(ctx, fleet, old_workers)
        await _check_old_and_new(ctx, fleet, old_idle, echoed_at_reload, reloaded_at)
        await _old_workers_leave(ctx, fleet, old_workers, reloaded_at)
        ctx.check(
            "NGINX itself was not restarted",
            await ctx.blocking(nginx_master_pid_started, stack) == nginx_before,
        )
    finally:
        ctx.step("stopping the clients")
        await fleet.stop()
        if old_idle is not None:
            await old_idle.close()
    account(ctx, fleet)


async def _reload(
    ctx: Context, fleet: Fleet, old_workers: dict[int, str]
) -> tuple[list[int], float]:
    """Change proxy_read_timeout in the rendered config and reload NGINX; wait for its new
    workers. Each client's echoes at the reload, and when it was (epoch s)."""
    stack = ctx.stack
    ctx.step(
        f"changing proxy_read_timeout {OLD_READ_TIMEOUT}s -> {NEW_READ_TIMEOUT}s in the"
        " rendered config, then `nginx -s reload`"
    )
    code, out = await ctx.blocking(
        stack.nginx.exec,
        [
            "sed",
            "-i",
            f"s/proxy_read_timeout {OLD_READ_TIMEOUT}s;/proxy_read_timeout {NEW_READ_TIMEOUT}s;/",
            SNIPPET,
        ],
    )
    _, grep = await ctx.blocking(stack.nginx.exec, ["grep", "^proxy_read_timeout", SNIPPET])
    ctx.check(
        "the rendered config carries the new setting",
        code == 0 and f"proxy_read_timeout {NEW_READ_TIMEOUT}s;" in grep,
        grep.strip(),
    )
    echoed_at_reload = [c.ledger.echoed for c in fleet.clients]
    code, out = await ctx.blocking(stack.reload_nginx)
    reloaded_at = time.time()
    ctx.check("nginx -s reload accepted the config", code == 0, out.strip() or "exit 0")

    # `-s reload` only signals the master: new connections get the new configuration
    # once it has started new workers and told the old ones to stop accepting.
    seen: dict[int, str] = {}
    await ctx.expect(
        lambda: _reload_done(ctx, old_workers, seen),
        "NGINX started new workers; the old ones are shutting down",
        10,
        detail=lambda: f"workers now {sorted(seen)}",
    )
    return echoed_at_reload, reloaded_at


async def _check_old_and_new(
    ctx: Context,
    fleet: Fleet,
    old_idle: ClientConnection,
    echoed_at_reload: list[int],
    reloaded_at: float,
) -> None:
    """A new connection gets the new timeout; the old ones keep the old and echo on."""
    ctx.step("opening a new idle connection: it must get the new 2 s read timeout")
    new_idle = await _idle_connection(ctx.stack.url)
    opened = time.time()
    with suppress(TimeoutError):
        await asyncio.wait_for(new_idle.wait_closed(), NEW_READ_TIMEOUT + 4)
    lived = time.time() - opened
    ctx.figure("new idle connection closed by NGINX after", lived, "s")
    ctx.check(
        f"the new setting applies to a new connection: closed after ~{NEW_READ_TIMEOUT} s idle",
        new_idle.state.name == "CLOSED"
        and NEW_READ_TIMEOUT - 0.5 <= lived <= NEW_READ_TIMEOUT + seconds(3),
        f"closed after {lived:.2f} s, code {new_idle.close_code}",
    )
    since_reload = time.time() - reloaded_at
    ctx.check(
        f"the idle connection opened before the reload keeps the old {OLD_READ_TIMEOUT} s"
        f" timeout ({since_reload:.1f} s after the reload)",
        old_idle.state.name == "OPEN" and since_reload < SHUTDOWN_TIMEOUT,
        f"state {old_idle.state.name}",
    )
    ctx.check(
        "existing connections kept echoing across the reload, none closed",
        all(len(c.sessions) == 1 and c.connected for c in fleet.clients)
        and all(
            c.ledger.echoed > n + 3 for c, n in zip(fleet.clients, echoed_at_reload, strict=True)
        ),
        f"echoes since the reload:"
        f" {sum(c.ledger.echoed for c in fleet.clients) - sum(echoed_at_reload)}",
    )
    await old_idle.send("still here?")
    ctx.check(
        "the old idle connection still echoes",
        await asyncio.wait_for(old_idle.recv(), 5) == "still here?",
    )


async def _old_workers_leave(
    ctx: Context, fleet: Fleet, old_workers: dict[int, str], reloaded_at: float
) -> None:
    """The old workers exit within their shutdown timeout; their clients reconnect."""
    ctx.step(f"waiting for the old workers to exit (WORKER_SHUTDOWN_TIMEOUT={SHUTDOWN_TIMEOUT}s)")
    gone = await ctx.expect(
        lambda: _old_workers_gone(ctx, old_workers),
        f"old workers exited within the shutdown timeout ({SHUTDOWN_TIMEOUT} s + 3 s slack)",
        SHUTDOWN_TIMEOUT + 3 - (time.time() - reloaded_at),
    )
    if gone is not None:
        ctx.figure("old workers gone after the reload", time.time() - reloaded_at, "s")
    await ctx.expect(
        lambda: all(
            c.connected and len(c.sessions) >= 2 and c.current.echoed >= 3 for c in fleet.clients
        ),
        "the clients the old workers dropped reconnected to the new workers and echo",
        20,
    )
    dropped = [c.sessions[0] for c in fleet.clients if not c.sessions[0].open]
    ctx.figure(
        "old connections dropped after the reload",
        spread([s.closed_at - reloaded_at for s in dropped]),
    )
    ctx.note(f"how they ended: {codes(dropped)}")


async def _reload_done(ctx: Context, old: dict[int, str], seen: dict[int, str]) -> bool:
    now = await ctx.blocking(nginx_workers, ctx.stack)
    seen.clear()
    seen.update(now)
    fresh = set(now) - set(old)
    still_accepting = [pid for pid in old if pid in now and "shutting down" not in now[pid]]
    return bool(fresh) and not still_accepting


async def _old_workers_gone(ctx: Context, old: dict[int, str]) -> bool:
    now = await ctx.blocking(nginx_workers, ctx.stack)
    return not set(old) & set(now)


SCENARIO = Scenario(
    name="nginx-reload",
    number=2,
    title="NGINX reload with a changed setting",
    proves=(
        "After `nginx -s reload` with proxy_read_timeout changed from 60 s to 2 s, existing"
        " connections keep echoing on the old workers, a new idle connection is closed after"
        " 2 s (the new setting) while an old one is not, and the old workers exit within"
        " WORKER_SHUTDOWN_TIMEOUT; the clients they drop reconnect, nothing is lost."
    ),
    run=run,
    stacks={"main": OPTIONS},
    deadline=90,
)
