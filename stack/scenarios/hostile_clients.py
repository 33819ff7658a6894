"""10. Hostile clients: slow readers, a ping flood, aborted and unfinished handshakes at once."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import Any

from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from stack import helper_containers, images
from stack.bench import resource_usage
from stack.gateway import NGINX_PORT, SERVER_PORT, GatewayStack, StackOptions
from stack.scenarios.base import Context, Scenario
from stack.scenarios.common import account
from stack.scenarios.resources import SAMPLE_PERIOD, StatsSampler
from stack.waits import seconds
from stack.wire import handshake
from stack.wire.client import Fleet, Outcome

MiB = 2**20
HEALTHY = 20  # clients echoing through NGINX from the host all along
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
ECHO_WAIT = 15.0  # a healthy message without its echo after this long (s) is lost
HOLD = 10.0  # seconds the full attack is held while the healthy clients are measured
LIFETIME = 60  # a helper ends its attack after this many seconds, whatever happens
PER_IP_CAP = 100  # WS_CONN_LIMIT_PER_IP, NGINX's default, kept
SLOW_ECHO = 0.1  # a healthy round trip over this (s) is counted and placed in time

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

# Runs in each helper container after the source of stack/wire/handshake.py (which builds
# the upgrade requests): every attack at once, bounded in count and time, then the
# figures on PROBE lines. Real clients are websockets' own, kept from reading at all.
ATTACK = r"""
import asyncio, itertools, json, os, socket, time
from collections import Counter
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

E = os.environ
NAME, HOST, PORT = E["NAME"], E["HOST"], int(E["PORT"])
SLOW, PINGERS = int(E["SLOW"]), int(E["PINGERS"])
ABORTED, UNFINISHED = int(E["ABORTED"]), int(E["UNFINISHED"])
MESSAGE, PUSH_CAP, PINGS = int(E["MESSAGE"]), int(E["PUSH_CAP"]), int(E["PINGS"])
TRIES = int(E["TRIES"])
HELD, PLACE_WITHIN, LIFETIME = float(E["HELD"]), float(E["PLACE_WITHIN"]), float(E["LIFETIME"])
URL = f"ws://{HOST}:{PORT}/ws"
AUTHORITY = f"{HOST}:{PORT}"
# Resolved once: 300 lookups at once overwhelm Docker's DNS and the resolver's threads.
IP = socket.gethostbyname(HOST)
PAYLOAD = os.urandom(MESSAGE)
started = time.monotonic()
conns, sockets = [], []
numbers = itertools.count()

def out(**fields):
    print("PROBE " + json.dumps(fields), flush=True)

async def flood(ws):
    await ws.ping(next(numbers).to_bytes(8, "big") + b"p" * 117)  # 125 bytes: a ping's most
    await asyncio.sleep(0)  # ping() does not yield while it can write: let the others run

async def hostile(kind, n, push, cap, record):
    # Connect (a few tries: a busy gateway may refuse or time out), never read a byte,
    # push until the cap or the end; record[n] says how far it got.
    state = record[n]
    while True:
        state["tries"] += 1
        try:
            ws = await connect(URL, host=IP, port=PORT, proxy=None, compression=None,
                               ping_interval=None, open_timeout=10, max_queue=1,
                               additional_headers={"X-Request-ID": f"{NAME}-{kind}-{n}"})
            break
        except InvalidStatus as e:
            failure = f"refused {e.response.status_code}"
        except Exception as e:
            failure = f"failed {type(e).__name__}"
        if state["tries"] >= TRIES or time.monotonic() - started > PLACE_WITHIN - 5:
            state["outcome"] = failure
            return
        await asyncio.sleep(0.5 * state["tries"])  # backoff before the next try
    ws.transport.pause_reading()
    conns.append(ws)
    state["outcome"] = "connected"
    await go.wait()
    state["outcome"], state["since"] = "pushing", time.monotonic()
    try:
        while state["pushed"] < cap:
            state["since"] = time.monotonic()
            await push(ws)
            state["pushed"] += 1
        state["outcome"] = "never held back"
    except ConnectionClosed:
        state["outcome"] = "closed while pushing"

def connected(record):
    # Connected, or given up.
    return all(r["outcome"] != "connecting" for r in record.values())

def in_place(record, now):
    # Pushed once or held back already, or ended.
    return all(r["outcome"] != "pushing" or r["pushed"] or now - r["since"] >= HELD
               for r in record.values())

async def until(condition, limit, every=0.1):
    # condition() or limit s from now, polling
    deadline = time.monotonic() + limit
    while not condition() and time.monotonic() < deadline:
        await asyncio.sleep(every)

def tally(record, now):
    outcomes = Counter("held back" if r["outcome"] == "pushing" and now - r["since"] >= HELD
                       else r["outcome"] for r in record.values())
    return {"outcomes": dict(outcomes), "pushed": [r["pushed"] for r in record.values()],
            "tries": sum(r["tries"] for r in record.values())}

async def aborted(n, gate):
    async with gate:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(IP, PORT), 5)
        writer.write(request("/ws", AUTHORITY, new_key(), {"X-Request-ID": f"{NAME}-aborted-{n}"}))
        await writer.drain()
        if n % 3 == 0:
            writer.transport.abort()
            return "sent, then RST"
        if n % 3 == 1:
            writer.close()
            return "sent, then FIN"
        writer.write_eof()  # still reading; dropped at the end
        sockets.append(writer)
        return "sent, then SHUT_WR"

async def unfinished(n, gate):
    # No request at all, or half of one; returns when the peer hung up, in s.
    async with gate:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(IP, PORT), 5)
    opened = time.monotonic()
    sockets.append(writer)
    if n % 2:
        whole = request("/ws", AUTHORITY, new_key(), {"X-Request-ID": f"{NAME}-unfinished-{n}"})
        writer.write(whole[: len(whole) // 2])
    try:
        while await reader.read(4096):
            pass
    except OSError:
        pass  # reset: hung up on all the same
    return time.monotonic() - opened

def outcomes(results):
    return dict(Counter(r if isinstance(r, str) else f"failed {type(r).__name__}"
                        for r in results))

async def main():
    global go
    go = asyncio.Event()
    loop = asyncio.get_running_loop()
    slow, pings = ({n: {"outcome": "connecting", "pushed": 0, "tries": 0} for n in range(count)}
                   for count in (SLOW, PINGERS))
    tasks = [loop.create_task(hostile("slow", n, lambda ws: ws.send(PAYLOAD), PUSH_CAP, slow))
             for n in range(SLOW)]
    tasks += [loop.create_task(hostile("ping", n, flood, PINGS, pings))
              for n in range(PINGERS)]
    # First every connection, while the gateway is calm; then the attack, on the word.
    await until(lambda: connected(slow) and connected(pings), PLACE_WITHIN)
    now = time.monotonic()
    out(step="connected", name=NAME, t=now - started, slow=tally(slow, now),
        ping=tally(pings, now))
    await until(lambda: os.path.exists("/tmp/go"), LIFETIME, 0.05)
    go.set()
    attack = time.monotonic()
    gate, aborting = asyncio.Semaphore(100), asyncio.Semaphore(20)
    unfinished_tasks = [loop.create_task(unfinished(n, gate)) for n in range(UNFINISHED)]
    aborts = [loop.create_task(aborted(n, aborting)) for n in range(ABORTED)]
    await until(lambda: all(t.done() for t in aborts) and in_place(slow, time.monotonic())
                and in_place(pings, time.monotonic()), PLACE_WITHIN)
    now = time.monotonic()
    out(step="attacking", name=NAME, t=now - attack, slow=tally(slow, now), ping=tally(pings, now),
        aborted=outcomes([t.exception() or t.result() if t.done() else "in flight"
                          for t in aborts]),
        unfinished=outcomes(
            [t.exception() or "opened" if t.done() else "opened" for t in unfinished_tasks]))
    await until(lambda: os.path.exists("/tmp/stop"), LIFETIME - (time.monotonic() - started), 0.05)
    now = time.monotonic()
    dropped = [t.result() for t in unfinished_tasks
               if t.done() and not t.cancelled() and not t.exception()]
    for ws in conns:
        ws.transport.abort()
    for writer in sockets:
        writer.transport.abort()
    for t in [*unfinished_tasks, *aborts, *tasks]:
        t.cancel()
    out(step="done", t=now - started, stopped_by_lifetime=not os.path.exists("/tmp/stop"),
        slow=tally(slow, now), ping=tally(pings, now),
        unfinished_dropped=sorted(round(s, 2) for s in dropped))

asyncio.run(main())
"""


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


def _start_helpers(stack: GatewayStack) -> list[helper_containers.Helper]:
    """The attackers: EDGE_ADDRESSES through NGINX, one straight at the server."""
    code = inspect.getsource(handshake) + ATTACK
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
                helper_containers.python,
                stack,
                network,
                code,
                name,
                {k: str(v) for k, v in {**common, **env, "NAME": name}.items()},
                image,
            )
            for name, network, env in plans
        ]
    helpers = [f.result() for f in futures if f.exception() is None]
    if len(helpers) < len(futures):
        for helper in helpers:
            helper.remove()
        raise next(f.exception() for f in futures if f.exception() is not None)
    return helpers


def _results(helpers: list[helper_containers.Helper], step: str) -> list[dict[str, Any]]:
    """The PROBE line of ``step`` of every helper that printed it so far."""
    found = []
    for helper in helpers:
        found += [r for r in helper.results() if r.get("step") == step]
    return found


def _round_trips(fleet: Fleet, start: float, end: float) -> list[tuple[float, float]]:
    """(seconds from send to echo, seconds after ``start`` it was sent) of the healthy
    messages sent between ``start`` and ``end``, slowest last."""
    return sorted(
        (m.settled_at - m.sent_at, m.sent_at - start)
        for c in fleet.clients
        for m in c.ledger.messages.values()
        if m.outcome is Outcome.ECHOED and start <= m.sent_at <= end and m.settled_at
    )


def _budget(metrics: dict[str, float], started: list[dict[str, Any]]) -> tuple[float | None, str]:
    """The server's memory budget in bytes and where it was read; None if it states none."""
    for key, value in metrics.items():
        if "memory_budget" in key:
            return value, key
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
            for key, value in (await ctx.metrics()).items():
                if key.startswith("ws_memory"):
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


async def run(ctx: Context) -> None:
    stack = ctx.stack
    before = await ctx.blocking(lambda: {s.role: _state(s) for s in (stack.server, stack.nginx)})
    limit = (await ctx.blocking(stack.server.inspect))["HostConfig"]["Memory"]
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
    attack_start = attack_hold = attack_end = let_go = 0.0
    dropped_by = time.monotonic() + heartbeat
    try:
        ctx.step(f"{HEALTHY} healthy clients echo through NGINX from the host")
        fleet.start()
        await ctx.expect(lambda: fleet.all_echoing(3), f"all {HEALTHY} healthy clients echo", 15)

        ctx.step(
            f"attackers connect from {EDGE_ADDRESSES} addresses on the edge network and one on"
            f" the backend network: {EDGE_ADDRESSES * SLOW_PER_ADDRESS} slow readers and"
            f" {FLOODERS} ping flooders, sending nothing yet"
        )
        helpers = await ctx.blocking(_start_helpers, stack)
        what = "every attacker has connected (or given up)"
        _report_connected(ctx, await _reported(ctx, helpers, "connected", what, PLACE_WITHIN + 10))
        dropped_by = time.monotonic() + heartbeat  # every attacker gone by then

        ctx.step(
            f"all at once: the slow readers send {MESSAGE // MiB} MiB messages and never read,"
            f" the flooders ping and never read, {ABORTED} aborted and {UNFINISHED:,}"
            " unfinished handshakes (half through NGINX, half straight at the server)"
        )
        attack_start = time.time()
        await _touch(ctx, helpers, "/tmp/go")
        what = "the attack is on (each slow reader and flooder pushed, or is held back already)"
        _report_attack(ctx, await _reported(ctx, helpers, "attacking", what, PLACE_WITHIN + 10))

        ctx.step(f"holding the attack for {HOLD:g} s while the healthy clients echo")
        attack_hold = time.time()
        await ctx.holds_for(
            lambda: fleet.connected == HEALTHY,
            f"all {HEALTHY} healthy clients stay connected under the attack",
            HOLD,
        )
        attack_end = time.time()
        ctx.step("the attackers drop everything")
        let_go = time.time()
        await _touch(ctx, helpers, "/tmp/stop")
        done = await _reported(ctx, helpers, "done", "every attacker has let go", 15)
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
    finally:
        memory.stop()
        watching.set()
        await watcher
        for helper in helpers:
            await ctx.blocking(helper.remove)

    after = await ctx.blocking(lambda: {s.role: _state(s) for s in (stack.server, stack.nginx)})
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
    trips = _round_trips(fleet, attack_start, attack_end)
    if trips:
        ctx.figure(
            "healthy round trip during the attack",
            f"p50 {1000 * trips[len(trips) // 2][0]:.0f} ms,"
            f" p99 {1000 * trips[int(len(trips) * 0.99)][0]:.0f} ms,"
            f" max {1000 * trips[-1][0]:.0f} ms ({len(trips)} messages)",
        )
        slow = sorted(at for took, at in trips if took > SLOW_ECHO)
        if slow:
            ctx.figure(
                f"healthy echoes slower than {1000 * SLOW_ECHO:.0f} ms",
                f"{len(slow)}, sent {slow[0]:.1f}-{slow[-1]:.1f} s after the attack began",
            )
    server_up = after["server"]["status"] == "running"
    if server_up:
        await _after_attack(ctx, stack, let_go, dropped_by)
    else:
        ctx.check("after the attack the gateway serves again", False, "the server is not running")
    ctx.step("stopping the healthy clients")
    await fleet.stop()
    failed = sorted(m.settled_at - attack_start for m in fleet.failed_messages() if m.settled_at)
    if failed:
        ctx.note(
            f"healthy messages failed {failed[0]:.1f}-{failed[-1]:.1f} s after the attack began"
            f" (the hold ran {attack_hold - attack_start:.1f}-{attack_end - attack_start:.1f} s)"
        )
    account(ctx, fleet, failures_expected=False)
    ctx.check(
        "every healthy client kept its one connection (no reconnect, no refused handshake)",
        all(len(c.sessions) == 1 for c in fleet.clients) and not fleet.handshake_failures(),
        f"{len(fleet.sessions())} sessions, {len(fleet.handshake_failures())} failed handshakes",
    )


async def _reported(
    ctx: Context, helpers: list[helper_containers.Helper], step: str, what: str, within: float
) -> list[dict[str, Any]]:
    """Wait until every helper printed ``step`` (a check); what they printed for it."""
    await ctx.expect(
        lambda: ctx.blocking(lambda: len(_results(helpers, step)) == len(helpers)),
        what,
        within,
        poll=0.5,
    )
    return await ctx.blocking(_results, helpers, step)


async def _touch(ctx: Context, helpers: list[helper_containers.Helper], path: str) -> None:
    """Create ``path`` in every helper at once: the word they wait for."""
    await asyncio.gather(*(ctx.blocking(h.exec, ["touch", path]) for h in helpers))


def _report_connected(ctx: Context, connected: list[dict[str, Any]]) -> None:
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


def _report_attack(ctx: Context, attacking: list[dict[str, Any]]) -> None:
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
    counted = {
        k: v
        for k, v in metrics.items()
        if v
        and (
            k.startswith(("ws_errors_total", "ws_connections_rejected_total", "ws_memory"))
            or k.startswith("ws_closes_total{code=1013")
        )
    }
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
        " clients lose no message (p99 round trip printed), and afterwards the gauge is back"
        " to the healthy count, /readyz is 200 and a new client is served at once."
    ),
    run=run,
    stacks={"main": OPTIONS},
    deadline=90,
)
