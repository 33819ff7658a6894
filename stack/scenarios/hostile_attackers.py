"""The hostile-clients scenario's attackers: helper containers running the attack.

Each helper runs stack/scenarios/programs/hostile_attack.py with its share of the attack
in its environment; this module starts them, gives them the word (a file in their /tmp)
and reads what they report on their ``PROBE`` lines.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from stack import helper_containers, images
from stack.gateway import NGINX_PORT, SERVER_PORT, GatewayStack
from stack.scenarios.base import Context
from stack.wire import handshake

MiB = 2**20
EDGE_ADDRESSES = 5  # helper containers on the edge network, one address each
SLOW_PER_ADDRESS = 60  # 5 x 60 = 300 slow readers, each address under NGINX's cap of 100
MESSAGE = 2**20  # what a slow reader sends: 1 MiB messages (WS_MAX_MESSAGE_BYTES)
PUSH_CAP = 64  # messages a slow reader sends at most (bounded even if never held back)
PINGERS = {"edge": 1, "backend": 2}  # ping flooders per helper
FLOODERS = EDGE_ADDRESSES * PINGERS["edge"] + PINGERS["backend"]
PINGS = 100_000  # pings a flooder sends at most: 12 MB of pongs, more than socket buffers hold
TRIES = 5  # handshakes a slow reader or flooder tries before it gives up
HELD = 3.0  # a send or ping that waits this long (s) means the server stopped reading
PLACE_WITHIN = 20  # a helper reports how far its attackers got after this long at most
ABORTED = 500  # upgrade requests closed right after sending them (RST, FIN, SHUT_WR)
UNFINISHED = 1000  # TCP connections with no request or half a request, never finished
LIFETIME = 60  # a helper ends its attack after this many seconds, whatever happens
PER_IP_CAP = 100  # WS_CONN_LIMIT_PER_IP, NGINX's default, kept
# The attackers' CPU weight (Docker's default: 1024). Attackers run on machines of their own;
# here they share the gateway's two cores, and at the default weight their own Python loops
# (pushing 1 MiB messages, pinging) took up to a quarter of the cores in the attack's first
# second, which the healthy clients' round trips paid for (p99 121-214 ms in eight runs,
# 26-63 ms in eight with this weight, three of them in the full suite). At this weight they
# get what the gateway leaves idle, and still push as much: 341-466 MiB in all (299-311 MiB
# at the default).
ATTACKER_CPU_SHARES = 64

# Runs in each helper container: every attack at once, bounded in count and time.
ATTACK = Path(__file__).parent / "programs" / "hostile_attack.py"


def start(stack: GatewayStack) -> list[helper_containers.Helper]:
    """The attackers: EDGE_ADDRESSES through NGINX, one straight at the server."""
    common = {
        "MESSAGE": MESSAGE,
        "PUSH_CAP": PUSH_CAP,
        "PINGS": PINGS,
        "TRIES": TRIES,
        "HELD": HELD,
        "PLACE_WITHIN": PLACE_WITHIN,
        "LIFETIME": LIFETIME,
    }
    plans = [
        (
            f"edge-{i}",
            stack.edge,
            {"HOST": "nginx", "PORT": NGINX_PORT, "SLOW": SLOW_PER_ADDRESS},
        )
        for i in range(1, EDGE_ADDRESSES + 1)
    ]
    plans.append(("backend", stack.backend, {"HOST": "server", "PORT": SERVER_PORT, "SLOW": 0}))
    # Half the aborted and unfinished handshakes through NGINX, half straight at the server.
    for name, _, env in plans:
        edge = name.startswith("edge")
        env["PINGERS"] = PINGERS["edge" if edge else "backend"]
        env["ABORTED"] = ABORTED // 2 // EDGE_ADDRESSES if edge else ABORTED // 2
        env["UNFINISHED"] = UNFINISHED // 2 // EDGE_ADDRESSES if edge else UNFINISHED // 2
    image = images.ensure(images.SERVER)
    with ThreadPoolExecutor(len(plans)) as pool:
        futures = [
            pool.submit(
                helper_containers.program,
                stack,
                network,
                ATTACK,
                name,
                {k: str(v) for k, v in {**common, **env, "NAME": name}.items()},
                image,
                modules=[handshake],
                cpu_shares=ATTACKER_CPU_SHARES,
            )
            for name, network, env in plans
        ]
    helpers = [f.result() for f in futures if f.exception() is None]
    if len(helpers) < len(futures):
        for helper in helpers:
            helper.remove()
        raise next(f.exception() for f in futures if f.exception() is not None)
    return helpers


def results(helpers: list[helper_containers.Helper], step: str) -> list[dict[str, Any]]:
    """The PROBE line of ``step`` of every helper that printed it so far."""
    found = []
    for helper in helpers:
        found += [r for r in helper.results() if r.get("step") == step]
    return found


async def reported(
    ctx: Context, helpers: list[helper_containers.Helper], step: str, what: str, within: float
) -> list[dict[str, Any]]:
    """Wait until every helper printed ``step`` (a check); what they printed for it."""
    await ctx.expect(
        lambda: ctx.blocking(lambda: len(results(helpers, step)) == len(helpers)),
        what,
        within,
        poll=0.5,
    )
    return await ctx.blocking(results, helpers, step)


async def touch(ctx: Context, helpers: list[helper_containers.Helper], path: str) -> None:
    """Create ``path`` in every helper at once: the word they wait for."""
    await asyncio.gather(*(ctx.blocking(h.exec, ["touch", path]) for h in helpers))


def report_connected(ctx: Context, connected: list[dict[str, Any]]) -> None:
    """How many slow readers and flooders got their WebSocket, before the attack."""
    for kind in ("slow", "ping"):
        tally = Counter()
        for r in connected:
            tally.update(r[kind]["outcomes"])
        tries = sum(r[kind]["tries"] for r in connected)
        ctx.figure(
            "slow readers connected" if kind == "slow" else "ping flooders connected",
            ", ".join(f"{k}: {n}" for k, n in sorted(tally.items())) + f" ({tries} tries)",
        )
    slow = sum(r["slow"]["outcomes"].get("connected", 0) for r in connected)
    ctx.check(
        f"{EDGE_ADDRESSES * SLOW_PER_ADDRESS} slow readers hold a WebSocket through NGINX,"
        f" at most {SLOW_PER_ADDRESS} per address (cap {PER_IP_CAP})",
        slow >= EDGE_ADDRESSES * SLOW_PER_ADDRESS,
        f"{slow} connected",
    )


def report_attack(ctx: Context, attacking: list[dict[str, Any]]) -> None:
    """Figures of the attack as the attackers saw it once in place."""
    slow, ping = Counter(), Counter()
    pushed, pings = [], []
    for r in attacking:
        slow.update(r["slow"]["outcomes"])
        ping.update(r["ping"]["outcomes"])
        pushed += r["slow"]["pushed"]
        pings += r["ping"]["pushed"]
    ctx.figure("slow readers", ", ".join(f"{k}: {n}" for k, n in sorted(slow.items())))
    if pushed:
        ctx.figure(
            "MiB each slow reader got out by then",
            f"min {min(pushed) * MESSAGE / MiB:.0f}, max {max(pushed) * MESSAGE / MiB:.0f},"
            f" total {sum(pushed) * MESSAGE / MiB:.0f}",
        )
    ctx.figure("ping flooders", ", ".join(f"{k}: {n}" for k, n in sorted(ping.items())))
    if pings:
        ctx.figure("pings each flooder got out by then", f"min {min(pings)}, max {max(pings)}")
    for kind in ("aborted", "unfinished"):
        for path in ("edge", "backend"):
            tally = Counter()
            for r in attacking:
                if r["name"].startswith(path):
                    tally.update(r[kind])
            ctx.figure(
                f"{kind} handshakes, {'through NGINX' if path == 'edge' else 'straight'}",
                ", ".join(f"{k}: {n}" for k, n in sorted(tally.items())),
            )
    ctx.figure("attack in place after", f"{max(r['t'] for r in attacking):.1f} s")


def report_let_go(ctx: Context, done: list[dict[str, Any]]) -> None:
    """Figures of the attack as the attackers saw it at the end."""
    final = Counter()
    for r in done:
        final.update(r["slow"]["outcomes"])
    ctx.figure("slow readers at the end", ", ".join(f"{k}: {n}" for k, n in final.items()))
    ctx.figure(
        "MiB the slow readers got out in all",
        sum(p for r in done for p in r["slow"]["pushed"]) * MESSAGE / MiB,
    )
    dropped = sorted(s for r in done for s in r["unfinished_dropped"])
    ctx.figure(
        "unfinished handshakes the gateway hung up on before the end",
        f"{len(dropped)} of {UNFINISHED}"
        + (f", after {dropped[0]:.1f}-{dropped[-1]:.1f} s" if dropped else ""),
    )
