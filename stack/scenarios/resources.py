"""9. Resource limits: 2,000 connections and slow readers within the compose memory limits."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from contextlib import suppress

from websockets.asyncio.client import ClientConnection, connect

from stack.gateway import StackOptions
from stack.scenarios.base import Context, Scenario

CONNECTIONS = 2000
BATCH = 200  # handshakes in flight at once
SLOW_READERS = 5
CHUNK = 256 * 2**10  # what a slow reader sends per message
PUSH_CAP = 256 * 2**20  # a slow reader gives up pushing after this much (it never should)
MiB = 2**20

PING_INTERVAL = 5  # WS_PING_INTERVAL; WS_PING_TIMEOUT is the same
OPTIONS = StackOptions(
    # A slow reader that vanishes leaves its server connection blocked on a full write
    # buffer (nobody reads on the other side any more); the server's heartbeat is what
    # frees it, after ping interval + timeout. 5 + 5 s instead of 20 + 20 s keeps the
    # scenario short. The server keeps its compose limits.
    server_env={"WS_PING_INTERVAL": str(PING_INTERVAL), "WS_PING_TIMEOUT": str(PING_INTERVAL)},
    # One process opens every connection: lift NGINX's per-address limits for this stack
    # (scenario 8 proves them).
    nginx_env={
        "WS_RATE_LIMIT": "100000r/s",
        "WS_RATE_BURST": "100000",
        "WS_CONN_LIMIT_PER_IP": "65535",
    },
)


SAMPLE_PERIOD = 0.25  # seconds between docker stats samples (each takes about 1 s anyway)
MAX_SAMPLES = 2_000


class StatsSampler:
    """Samples `docker stats` of one container in a thread; keeps the peak."""

    def __init__(self, service) -> None:
        self.service = service
        self.samples: list[dict[str, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        # Bounded: at most MAX_SAMPLES, one per SAMPLE_PERIOD at the fastest, until stopped.
        while not self._stop.is_set() and len(self.samples) < MAX_SAMPLES:
            with suppress(Exception):  # a sample lost to a busy daemon is no failure
                self.samples.append(self.service.stats())
            self._stop.wait(SAMPLE_PERIOD)

    @property
    def peak(self) -> float:
        return max((s["memory_bytes"] for s in self.samples), default=0)

    @property
    def limit(self) -> float:
        return self.samples[-1]["memory_limit_bytes"] if self.samples else 0


async def _open(url: str, n: int) -> ClientConnection | BaseException:
    try:
        return await connect(
            url,
            proxy=None,
            compression=None,
            ping_interval=None,
            open_timeout=30,
            close_timeout=2,
            additional_headers={"X-Request-ID": f"load-{n}"},
        )
    except Exception as e:
        return e


async def _echo(ws: ClientConnection, n: int) -> bool:
    text = f"conn {n} alive"
    await ws.send(text)
    return await asyncio.wait_for(ws.recv(), 30) == text


async def _push(url: str, n: int) -> tuple[int, str]:
    """A client that sends and never reads: how far does it get before it is held back?"""
    ws = await connect(
        url,
        proxy=None,
        compression=None,
        ping_interval=None,
        open_timeout=10,
        max_queue=1,
        additional_headers={"X-Request-ID": f"slow-{n}"},
    )
    sent = 0
    chunk = os.urandom(CHUNK)
    try:
        while sent < PUSH_CAP:
            try:
                await asyncio.wait_for(ws.send(chunk), 2)
            except TimeoutError:
                return sent, "held back (a send waited 2 s)"
            sent += CHUNK
        return sent, "never held back"
    finally:
        ws.transport.abort()


async def run(ctx: Context) -> None:
    stack = ctx.stack
    server_stats, nginx_stats = StatsSampler(stack.server), StatsSampler(stack.nginx)
    idle = await ctx.blocking(stack.server.stats)
    ctx.figure("server memory idle", idle["memory_bytes"] / MiB, "MiB")
    server_stats.start()
    nginx_stats.start()
    conns: list[ClientConnection] = []
    try:
        await _open_connections(ctx, conns, idle)
        await _slow_readers(ctx)
    finally:
        server_stats.stop()
        nginx_stats.stop()
        ctx.step(f"closing the {len(conns)} connections")
        for ws in conns:
            ws.transport.abort()
    await _check_within_limits(ctx, server_stats, nginx_stats)
    await _check_all_gone(ctx)


async def _open_connections(
    ctx: Context, conns: list[ClientConnection], idle: dict[str, float]
) -> None:
    """CONNECTIONS WebSockets through NGINX, into ``conns``: all open, all echo; the
    server's memory per connection above ``idle``."""
    ctx.step(f"opening {CONNECTIONS} WebSockets through NGINX, {BATCH} at a time")
    started = time.monotonic()
    failures: list[BaseException] = []
    for first in range(0, CONNECTIONS, BATCH):
        batch = await asyncio.gather(
            *(_open(ctx.stack.url, n) for n in range(first, first + BATCH))
        )
        conns += [c for c in batch if isinstance(c, ClientConnection)]
        failures += [c for c in batch if not isinstance(c, ClientConnection)]
    ctx.figure("time to open them", time.monotonic() - started, "s")
    ctx.check(
        f"all {CONNECTIONS} handshakes succeeded",
        len(conns) == CONNECTIONS,
        f"{len(conns)} open, {len(failures)} failed"
        + (f", e.g. {failures[0]!r}" if failures else ""),
    )
    echoes = []
    for first in range(0, len(conns), BATCH):
        echoes += await asyncio.gather(
            *(_echo(ws, first + i) for i, ws in enumerate(conns[first : first + BATCH])),
            return_exceptions=True,
        )
    ctx.check(
        "every connection echoes",
        all(e is True for e in echoes),
        f"{sum(e is True for e in echoes)} of {len(conns)}",
    )
    await ctx.expect(lambda: ctx.gauge_is(len(conns)), f"server gauge = {len(conns)}", 15)
    now = await ctx.blocking(ctx.stack.server.stats)
    ctx.figure(f"server memory with {len(conns)} connections", now["memory_bytes"] / MiB, "MiB")
    if conns:
        ctx.figure(
            "per connection (server)",
            (now["memory_bytes"] - idle["memory_bytes"]) / len(conns) / 2**10,
            "KiB",
        )


async def _slow_readers(ctx: Context) -> None:
    """SLOW_READERS clients send and never read: held back, at a bounded cost."""
    ctx.step(f"{SLOW_READERS} slow readers: send {CHUNK // 2**10} KiB messages, never read")
    before_push = await ctx.blocking(ctx.stack.server.stats)
    pushed = await asyncio.gather(
        *(_push(ctx.stack.url, n) for n in range(SLOW_READERS)), return_exceptions=True
    )
    ok = [p for p in pushed if isinstance(p, tuple)]
    ctx.figure(
        "each slow reader got out before being held back",
        ", ".join(f"{s / MiB:.1f} MiB" for s, _ in ok) or repr(pushed),
    )
    ctx.check(
        "backpressure held every slow reader back (the server stopped reading from it)",
        len(ok) == SLOW_READERS and all(how.startswith("held back") for _, how in ok),
        "; ".join(how for _, how in ok),
    )
    after_push = await ctx.blocking(ctx.stack.server.stats)
    growth = (after_push["memory_bytes"] - before_push["memory_bytes"]) / MiB
    ctx.figure("server memory growth from the slow readers", growth, "MiB")
    if SLOW_READERS:
        each = max(growth / SLOW_READERS, 0.1)
        room = (after_push["memory_limit_bytes"] - after_push["memory_bytes"]) / MiB
        ctx.figure("server memory per slow reader", each, "MiB")
        ctx.note(
            f"at that rate the server's limit would take ~{room / each:.0f} more"
            f" such slow readers ({CHUNK // 2**10} KiB messages)"
        )
    pushed_total = sum(s for s, _ in ok) / MiB
    ctx.check(
        "a slow reader costs the server a bounded amount (< 16 MiB each), not what it"
        " sends (the rest waits in socket buffers along the way, then the client blocks)",
        bool(ok) and growth / SLOW_READERS < 16 and growth < pushed_total / 2,
        f"{growth:.1f} MiB more while they pushed {pushed_total:.0f} MiB",
    )


async def _check_within_limits(
    ctx: Context, server_stats: StatsSampler, nginx_stats: StatsSampler
) -> None:
    """Both containers' memory peaks stayed under their limits; neither was OOM-killed."""
    stack = ctx.stack
    limit = server_stats.limit or 1
    ctx.figure(
        "server memory peak (docker stats)",
        f"{server_stats.peak / MiB:.1f} MiB of {limit / MiB:.0f} MiB"
        f" ({100 * server_stats.peak / limit:.1f} %), {len(server_stats.samples)} samples",
    )
    ctx.figure(
        "NGINX memory peak (docker stats)",
        f"{nginx_stats.peak / MiB:.1f} MiB of {nginx_stats.limit / MiB:.0f} MiB",
    )
    ctx.check(
        "the server stayed within its memory limit", 0 < server_stats.peak < server_stats.limit
    )
    ctx.check("NGINX stayed within its memory limit", 0 < nginx_stats.peak < nginx_stats.limit)
    oom = await ctx.blocking(lambda: (stack.server.oom_killed(), stack.nginx.oom_killed()))
    status = await ctx.blocking(lambda: (stack.server.status, stack.nginx.status))
    ctx.check(
        "no container was OOM-killed, both still run",
        oom == (False, False) and status == ("running", "running"),
        f"OOMKilled server/nginx {oom}, status {status}",
    )


async def _check_all_gone(ctx: Context) -> None:
    """After the clients left, the server holds no connection; how the slow readers' ended."""
    last: list[float] = []

    async def gauge_is_0() -> bool:
        last.append(await ctx.gauge())
        return last[-1] == 0

    await ctx.expect(
        gauge_is_0,
        "after the clients left, the server gauge is 0 (the slow readers' stuck"
        f" connections dropped by the heartbeat within {2 * PING_INTERVAL} s)",
        2 * PING_INTERVAL + 10,
        detail=lambda: f"gauge {last[-1]:g}" if last else "",
    )
    slow = [
        e
        for e in await ctx.server_events(event="connection_closed")
        if str(e.get("request_id", "")).startswith("slow-")
    ]
    ctx.note(
        "the slow readers' server connections ended: "
        + ", ".join(
            f"{e.get('drop_reason') or e.get('closed_by')} after {e.get('duration_s')} s"
            for e in slow
        )
    )


SCENARIO = Scenario(
    name="resources",
    number=9,
    title="2,000 connections and slow readers within the memory limits",
    proves=(
        f"With the compose limits (server 1 GiB, NGINX 768 MiB), {CONNECTIONS:,} WebSockets"
        " through NGINX all open and echo; docker stats shows the server far below its"
        " limit (figures printed); clients that send but never read are held back by"
        " backpressure instead of growing the server's memory; nothing is OOM-killed."
    ),
    run=run,
    stacks={"main": OPTIONS},
    deadline=120,
)
