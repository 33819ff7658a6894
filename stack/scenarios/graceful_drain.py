"""5. Graceful drain: SIGTERM, readiness 503 first, clients told 1001, exit 0 in time."""

from __future__ import annotations

import threading
import time
from urllib.parse import urlsplit

from stack.echo_client.fleet import Fleet
from stack.gateway import GatewayStack, StackOptions
from stack.scenarios.base import Context, Scenario
from stack.scenarios.common import account, codes, spread
from stack.waits import seconds
from stack.wire.raw import RawWebSocket

CLIENTS = 10
SHUTDOWN_TIMEOUT = 4  # WS_SHUTDOWN_TIMEOUT; the server waits half of it for close frames

OPTIONS = StackOptions(
    server_env={"WS_SHUTDOWN_TIMEOUT": str(SHUTDOWN_TIMEOUT)},
    nginx_env={"WS_RATE_LIMIT": "12000r/m", "WS_RATE_BURST": "1000"},  # retries: not limited
)


class ReadinessWatch:
    """Polls the server's /readyz in a thread and keeps every answer with its time."""

    def __init__(self, stack: GatewayStack) -> None:
        self.stack = stack
        self.samples: list[tuple[float, str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def _poll(self) -> None:
        while not self._stop.is_set():
            try:
                answer = str(self.stack.server_get("/readyz")[0])
            except OSError as e:
                answer = type(e).__name__
            self.samples.append((time.time(), answer))
            self._stop.wait(0.02)  # pacing of the poll loop

    def first(self, answer: str, after: float = 0) -> float | None:
        return next((t for t, a in self.samples if a == answer and t >= after), None)


async def run(ctx: Context) -> None:
    stack = ctx.stack
    nginx = urlsplit(stack.url)
    fleet = Fleet.of(CLIENTS, stack.url, prefix="d", interval=0.1, window=2, echo_timeout=10)
    watch = ReadinessWatch(stack)
    silent = None
    try:
        ctx.step(f"starting {CLIENTS} echoing clients and one that will not answer a close frame")
        fleet.start()
        silent = await RawWebSocket.open(nginx.hostname, nginx.port, request_id="drain-silent")
        ctx.check("the silent client is connected", silent.status == 101, f"status {silent.status}")
        await ctx.expect(
            fleet.all_echoing,
            f"all {CLIENTS} clients echoing",
            20,
        )
        watch.start()
        await ctx.expect(
            lambda: watch.samples and watch.samples[-1][1] == "200",
            "readiness answers 200 before the stop",
            5,
        )
        stop_at = await _stop_server(ctx, fleet, silent)
        watch.stop()
        _check_readiness(ctx, watch, stop_at)
        await _check_drain_log(ctx, fleet, stop_at)
    finally:
        watch.stop()
        ctx.step("stopping the clients")
        await fleet.stop(drain_timeout=1)
        if silent is not None:
            await silent.close()
    account(ctx, fleet)


async def _stop_server(ctx: Context, fleet: Fleet, silent: RawWebSocket) -> float:
    """docker stop on the server: every client gets 1001, the silent one is dropped, the
    container exits 0 in time. When the stop began (epoch s)."""
    ctx.step(f"docker stop on the server (SIGTERM; WS_SHUTDOWN_TIMEOUT={SHUTDOWN_TIMEOUT}s)")
    stop_at = time.time()
    stopping = ctx.background(ctx.stack.server.stop, 15)
    await ctx.expect(
        lambda: all(not c.sessions[0].open for c in fleet.clients),
        "every client's connection was closed",
        SHUTDOWN_TIMEOUT + 2,
    )
    first = [c.sessions[0] for c in fleet.clients]
    ctx.check(
        "every client got 1001 (going away) from the server",
        all(s.code == 1001 and s.closed_by == "server" for s in first),
        codes(first),
    )
    ctx.figure("stop to 1001 at the clients", spread([s.closed_at - stop_at for s in first]))
    code, reason = await silent.read_close(within=SHUTDOWN_TIMEOUT)
    ctx.check("the silent client got 1001 too", code == 1001, f"{code} {reason!r}")

    exit_code = await stopping
    stopped_in = time.time() - stop_at
    ctx.figure("docker stop took", stopped_in, "s")
    ctx.check(
        f"the container exited 0 within its shutdown timeout ({SHUTDOWN_TIMEOUT} s + 1.5 s"
        " for Docker)",
        exit_code == 0 and stopped_in <= SHUTDOWN_TIMEOUT + seconds(1.5),
        f"exit {exit_code} after {stopped_in:.2f} s",
    )
    ctx.check(
        "the silent client was dropped, not waited for forever",
        await silent.wait_eof(2),
        "TCP closed",
    )
    return stop_at


def _check_readiness(ctx: Context, watch: ReadinessWatch, stop_at: float) -> None:
    """/readyz turned 503 after the stop and never answered 200 again."""
    first_503 = watch.first("503", after=stop_at)
    last_200 = max((t for t, a in watch.samples if a == "200"), default=None)
    seen = []
    for _, answer in watch.samples:
        if not seen or seen[-1] != answer:
            seen.append(answer)
    ctx.note(f"readiness answers over time: {' -> '.join(seen)}")
    ctx.check(
        "readiness turned 503 while the server drained",
        first_503 is not None and (last_200 is None or last_200 < first_503),
        f"first 503 {first_503 - stop_at:.2f} s after the stop" if first_503 else "no 503",
    )


async def _check_drain_log(ctx: Context, fleet: Fleet, stop_at: float) -> None:
    """The server's log: not ready before the first 1001; its drain time; what it aborted."""
    events = await ctx.server_events()
    names = [e.get("event") for e in events]
    draining = names.index("server_draining") if "server_draining" in names else None
    first_1001 = next(
        (
            i
            for i, e in enumerate(events)
            if e.get("event") == "connection_closed" and e.get("code") == 1001
        ),
        None,
    )
    ctx.check(
        "the server was not ready before it closed the first connection (log order:"
        " server_draining, then connection_closed 1001)",
        draining is not None and first_1001 is not None and draining < first_1001,
        f"log lines {draining} and {first_1001}",
    )
    stopped = next((e for e in events if e.get("event") == "server_stopped"), {})
    ctx.figure(
        "server's own drain time (server_stopped.duration_s)", stopped.get("duration_s"), "s"
    )
    ctx.note(f"connections the server had to abort at the end: {stopped.get('aborted')}")
    statuses = sorted({str(f.status) for f in fleet.handshake_failures() if f.at >= stop_at})
    ctx.note(f"clients' reconnect attempts meanwhile were answered: {', '.join(statuses)}")


SCENARIO = Scenario(
    name="graceful-drain",
    number=5,
    title="Graceful drain on SIGTERM",
    proves=(
        "On `docker stop` (SIGTERM) the server turns not ready first (/readyz 503, logged"
        " before any close), closes every connection with 1001 going away, drops a client"
        " that does not answer its close frame after the close timeout, and exits 0 within"
        f" WS_SHUTDOWN_TIMEOUT ({SHUTDOWN_TIMEOUT} s here); no message is lost silently."
    ),
    run=run,
    stacks={"main": OPTIONS},
    deadline=60,
)
