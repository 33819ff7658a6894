"""7. Timeouts: NGINX closes a silent WebSocket at proxy_read_timeout; server pings prevent it."""

from __future__ import annotations

import asyncio
import time

from websockets.asyncio.client import ClientConnection, connect

from stack.gateway import StackOptions
from stack.scenarios.base import Context, Scenario
from stack.waits import seconds

READ_TIMEOUT = 3  # PROXY_READ_TIMEOUT of both stacks
PING_INTERVAL = 1  # WS_PING_INTERVAL of the "pings" stack (0 turns the heartbeat off)

STACKS = {
    # Both stacks differ only in the server's heartbeat.
    "main": StackOptions(
        server_env={"WS_PING_INTERVAL": "0"},
        nginx_env={"PROXY_READ_TIMEOUT": f"{READ_TIMEOUT}s"},
    ),
    "pings": StackOptions(
        server_env={"WS_PING_INTERVAL": str(PING_INTERVAL), "WS_PING_TIMEOUT": "5"},
        nginx_env={"PROXY_READ_TIMEOUT": f"{READ_TIMEOUT}s"},
    ),
}


async def _idle(url: str) -> ClientConnection:
    """A client that sends nothing and never pings (it still answers pings, as it must)."""
    return await connect(url, proxy=None, compression=None, ping_interval=None, open_timeout=5)


async def _lifetime(ws: ClientConnection, limit: float) -> float | None:
    """Seconds until ``ws`` closes, or None if it outlives ``limit``."""
    started = time.monotonic()
    try:
        await asyncio.wait_for(ws.wait_closed(), limit)
    except TimeoutError:
        return None
    return time.monotonic() - started


async def run(ctx: Context) -> None:
    quiet, pinging = ctx.stacks["main"], ctx.stacks["pings"]
    watch = 3 * READ_TIMEOUT  # how long the pinged connection must live on (3x the timeout)
    ctx.step(
        f"one idle connection through each NGINX (proxy_read_timeout {READ_TIMEOUT}s):"
        f" server heartbeat off / every {PING_INTERVAL} s"
    )
    idle_quiet = await _idle(quiet.url)
    idle_pinged = await _idle(pinging.url)
    try:
        quiet_life, pinged_life = await asyncio.gather(
            _lifetime(idle_quiet, READ_TIMEOUT + 5), _lifetime(idle_pinged, watch)
        )
        if quiet_life is not None:
            ctx.figure("idle connection without server pings closed after", quiet_life, "s")
        ctx.check(
            f"without server pings NGINX closed the idle connection at proxy_read_timeout"
            f" ({READ_TIMEOUT} s)",
            quiet_life is not None
            and READ_TIMEOUT - 0.5 <= quiet_life <= READ_TIMEOUT + seconds(2),
            f"closed after {quiet_life:.2f} s, close code {idle_quiet.close_code}"
            if quiet_life is not None
            else "still open",
        )
        ctx.check(
            f"with server pings every {PING_INTERVAL} s the idle connection outlived it"
            f" ({watch} s = 3x the timeout)",
            pinged_life is None,
            "still open" if pinged_life is None else f"closed after {pinged_life:.2f} s",
        )
        if pinged_life is None:
            await idle_pinged.send("after 3x the read timeout")
            echo = await asyncio.wait_for(idle_pinged.recv(), 5)
            ctx.check("and it still echoes", echo == "after 3x the read timeout")
        pings = await ctx.metrics(pinging)
        ctx.note(
            f"the server behind the pinging stack has {pings.value('ws_connections_active'):g}"
            " open connection(s)"
        )
        closed = await ctx.server_events(quiet, event="connection_closed")
        ctx.note(
            "quiet server saw: "
            + "; ".join(
                f"code {e.get('code')} by {e.get('closed_by')} after {e.get('duration_s')} s"
                for e in closed
                if e.get("duration_s", 0) > 1
            )
        )
    finally:
        await idle_quiet.close()
        await idle_pinged.close()


SCENARIO = Scenario(
    name="timeouts",
    number=7,
    title="proxy_read_timeout with and without server pings",
    proves=(
        f"With proxy_read_timeout {READ_TIMEOUT}s, NGINX closes an idle WebSocket after"
        f" {READ_TIMEOUT} s when the server does not ping; with the server pinging every"
        f" {PING_INTERVAL} s the same idle connection lives on (3x the timeout) and still"
        " echoes. So WS_PING_INTERVAL must stay below PROXY_READ_TIMEOUT."
    ),
    run=run,
    stacks=STACKS,
    deadline=45,
)
