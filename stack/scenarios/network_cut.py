"""4. Network cut: the server's heartbeat finds the dead peers, nothing hangs, all recover."""

from __future__ import annotations

import time
from datetime import datetime

from stack.echo_client.fleet import Fleet
from stack.gateway import StackOptions
from stack.scenarios.base import Context, Scenario
from stack.scenarios.common import account, codes, spread
from stack.waits import seconds

CLIENTS = 20
PING_INTERVAL = 1  # WS_PING_INTERVAL
PING_TIMEOUT = 2  # WS_PING_TIMEOUT: a peer is dead after interval + timeout without a pong
ECHO_TIMEOUT = 3  # the clients' own liveness: no echo for this long and they reconnect
RESOLVER_VALID = 5

OPTIONS = StackOptions(
    server_env={"WS_PING_INTERVAL": str(PING_INTERVAL), "WS_PING_TIMEOUT": str(PING_TIMEOUT)},
    nginx_env={
        "RESOLVER_VALID": f"{RESOLVER_VALID}s",
        "PROXY_CONNECT_TIMEOUT": "2s",  # retries against the vanished server fail fast
        "WS_RATE_LIMIT": "12000r/m",  # 20 clients retrying from one address: not limited
        "WS_RATE_BURST": "1000",
    },
)


def _ts(event: dict) -> float:
    return datetime.fromisoformat(event["ts"].replace("Z", "+00:00")).timestamp()


async def run(ctx: Context) -> None:
    stack = ctx.stack
    fleet = Fleet.of(
        CLIENTS, stack.url, prefix="n", interval=0.1, window=2, echo_timeout=ECHO_TIMEOUT
    )
    try:
        ctx.step(f"starting {CLIENTS} echoing clients")
        fleet.start()
        await ctx.expect(
            fleet.all_echoing,
            f"all {CLIENTS} clients echoing",
            20,
        )
        await ctx.expect(lambda: ctx.gauge_is(CLIENTS), f"server gauge = {CLIENTS}", 10)

        ctx.step("cutting the server off the backend network (docker network disconnect)")
        cut_at = time.time()
        await ctx.blocking(stack.disconnect_server)
        detect = PING_INTERVAL + PING_TIMEOUT
        took = await ctx.expect(
            lambda: ctx.gauge_is(0, inside=True),
            f"the server's heartbeat dropped every dead peer: gauge 0 within ping interval"
            f" + timeout ({detect} s) + 2 s",
            detect + 2,
            poll=0.2,
        )
        if took is not None:
            ctx.figure("cut to server gauge 0 (seen from inside)", took, "s")
        drops = [
            e
            for e in await ctx.server_events(event="connection_closed")
            if e.get("drop_reason") == "heartbeat_timeout"
        ]
        latest = max((_ts(e) - cut_at for e in drops), default=float("nan"))
        ctx.figure("cut to last heartbeat drop (server log)", latest, "s")
        ctx.check(
            f"the server logged a heartbeat drop for each of the {CLIENTS} peers,"
            f" the last within {detect} s + 1 s",
            len(drops) == CLIENTS and latest <= detect + seconds(1),
            f"{len(drops)} heartbeat_timeout closes",
        )
        await ctx.expect(
            lambda: all(not c.sessions[0].open for c in fleet.clients),
            f"nothing hangs: every client gave up its dead connection (echo timeout"
            f" {ECHO_TIMEOUT} s)",
            ECHO_TIMEOUT + 4,
        )
        first = [c.sessions[0] for c in fleet.clients]
        ctx.figure("cut to client connection closed", spread([s.closed_at - cut_at for s in first]))
        ctx.note(f"how they ended: {codes(first)}; {first[0].note or 'closed by the peer'}")
        await ctx.expect(
            lambda: len({f.status for f in fleet.handshake_failures() if f.at > cut_at}) > 0,
            "reconnect attempts fail fast while the server is unreachable",
            10,
            detail=lambda: (
                "statuses "
                + ", ".join(
                    sorted({str(f.status) for f in fleet.handshake_failures() if f.at > cut_at})
                )
            ),
        )

        ctx.step("reconnecting the server to the backend network")
        await ctx.blocking(stack.connect_server)
        ctx.note(f"server back at {stack.server_ip}")
        took = await ctx.expect(
            lambda: all(
                c.connected and len(c.sessions) >= 2 and c.current.echoed >= 3
                for c in fleet.clients
            ),
            "all clients recovered and echo",
            RESOLVER_VALID + 15,
        )
        if took is not None:
            ctx.figure("network back to all clients echoing", took, "s")
        await ctx.expect(lambda: ctx.gauge_is(CLIENTS), f"server gauge back to {CLIENTS}", 10)
    finally:
        ctx.step("stopping the clients")
        await fleet.stop()
    account(ctx, fleet)


SCENARIO = Scenario(
    name="network-cut",
    number=4,
    title="Network cut between NGINX and the server",
    proves=(
        "With the server cut off the network while clients are connected, its heartbeat"
        f" (ping every {PING_INTERVAL} s, timeout {PING_TIMEOUT} s) drops every dead peer"
        " within interval + timeout and its gauge falls to 0; clients notice the silence"
        " and reconnect instead of hanging; once the network is back they all recover and"
        " every message is accounted for."
    ),
    run=run,
    stacks={"main": OPTIONS},
    deadline=90,
)
