"""The load generator: several client processes, each an asyncio loop of lean WebSockets.

The bench drives a :class:`ClientPool` from its own process. Each client process (spawned,
uvloop when available) holds a share of the connections and runs one command at a time:

    open        open more connections (round-robin over the given targets)
    throughput  keep ``inflight`` messages in flight on every connection; count echoes
    latency     send at a fixed total rate; return every round trip of the window
    sample      one echo on some of the open connections, every byte checked
    mark        remember each connection's heartbeat count
    status      open connections, pings answered (in all; connections silent or lost since
                the mark), errors
    close       close every connection (closing handshake, then abort what is left)

Every phase is bounded in time: its start is a wall-clock instant shared by all processes,
its warm-up and measured window are fixed, and the drain after it has a deadline. Each
process measures its own CPU time over the measured window (``time.process_time``), so the
load generator's cost is reported beside each figure.
"""

from __future__ import annotations

import array
import asyncio
import multiprocessing
import multiprocessing.connection
import random
import resource
import time
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass
from typing import Any

from stack.bench.leanclient import OPEN, Stats, WsClient, connect
from stack.waits import ConditionTimeout, until, until_async
from stack.wire.handshake import HandshakeError

# counters shared with the parent for the progress display: messages, bytes, open, pings
COUNTERS = 4


@dataclass(frozen=True)
class Target:
    """Where to connect: an address and port, and the Host header NGINX expects."""

    host: str
    port: int
    host_header: str = "localhost"
    path: str = "/ws"


def split(total: int, parts: int) -> list[int]:
    """``total`` as ``parts`` near-equal shares."""
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


def raise_fd_limit() -> int:
    """Raise this process's open-file limit to its hard limit; return the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        target = hard if hard != resource.RLIM_INFINITY else 1_048_576
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = target
    return soft


def payload(size: int, text: bool, seed: int = 0) -> bytes | str:
    """A deterministic message of ``size`` bytes (text: ASCII letters)."""
    rng = random.Random(seed)
    if text:
        return "".join(rng.choices("abcdefghijklmnopqrstuvwxyz0123456789", k=size))
    return rng.randbytes(size)


# ---- the client process ------------------------------------------------------------------


class _Worker:
    def __init__(self, conn: multiprocessing.connection.Connection, index: int, counters) -> None:
        self.conn = conn
        self.index = index
        self.counters = counters
        self.stats = Stats()
        self.clients: list[WsClient] = []
        self.commands: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.pings_at_mark: dict[WsClient, int] = {}  # each client's pings when marked

    async def serve(self) -> None:
        loop = asyncio.get_running_loop()
        loop.add_reader(self.conn.fileno(), self._read_command)
        ticker = loop.create_task(self._tick())
        try:
            while True:
                command = await self.commands.get()
                op = command.pop("op")
                if op == "exit":
                    await self._close(within=2.0)
                    self.conn.send({"ok": True})
                    return
                try:
                    result = await getattr(self, f"_{op}")(**command)
                except Exception as exc:  # reported to the parent, which fails the phase
                    result = {"error": f"{type(exc).__name__}: {exc}"}
                self.conn.send(result)
        finally:
            ticker.cancel()
            loop.remove_reader(self.conn.fileno())

    def _read_command(self) -> None:
        try:
            self.commands.put_nowait(self.conn.recv())
        except EOFError:  # the parent is gone: stop
            self.commands.put_nowait({"op": "exit"})

    async def _tick(self) -> None:
        counters, stats = self.counters, self.stats
        while True:
            counters[0] = stats.messages
            counters[1] = stats.bytes
            counters[2] = stats.open
            counters[3] = stats.pings
            await asyncio.sleep(0.25)

    def _open_clients(self) -> list[WsClient]:
        self.clients = [c for c in self.clients if c.state == OPEN]
        return self.clients

    async def _wait_start(self, start_at: float) -> None:
        delay = start_at - time.time()
        if delay > 0:
            await asyncio.sleep(delay)

    async def _drain(self, clients: list[WsClient], within: float) -> int:
        """Wait until every echo in flight is back; return how many never came."""
        with suppress(ConditionTimeout):
            await until_async(
                lambda: all(c.outstanding <= 0 or c.state != OPEN for c in clients),
                "echoes in flight back",
                within,
                interval=0.02,
            )
        return sum(max(0, c.outstanding) for c in clients)

    # ---- commands --------------------------------------------------------------------------
    async def _open(
        self,
        targets: list[tuple[str, int, str]],
        count: int,
        concurrency: int = 100,
        within: float = 10.0,
        first: int = 0,
    ) -> dict[str, Any]:
        errors: dict[str, int] = {}
        opened: list[WsClient] = []
        message = payload(16, False, seed=self.index)
        numbers = iter(range(count))

        async def opener() -> None:
            # ``concurrency`` of these take the next number until none is left: no task and
            # no semaphore per connection, which on 2 cores is CPU the gateway needs.
            for i in numbers:
                host, port, host_header = targets[(first + i) % len(targets)]
                try:
                    client = await connect(
                        host, port, self.stats, host_header=host_header, within=within
                    )
                except HandshakeError as exc:
                    kind = f"HTTP {exc.status}" if exc.status else "closed before 101"
                    errors[kind] = errors.get(kind, 0) + 1
                    continue
                except (OSError, TimeoutError) as exc:
                    kind = type(exc).__name__
                    if isinstance(exc, OSError) and exc.errno:
                        kind = f"{kind} errno {exc.errno}"
                    errors[kind] = errors.get(kind, 0) + 1
                    continue
                client.set_message(message)
                opened.append(client)

        started, cpu = time.monotonic(), time.process_time()
        await asyncio.gather(*(opener() for _ in range(min(concurrency, count))))
        self.clients.extend(opened)
        return {
            "seconds": time.monotonic() - started,
            "cpu_seconds": time.process_time() - cpu,
            "opened": len(opened),
            "failed": count - len(opened),
            "errors": errors,
            "open": len(self._open_clients()),
        }

    async def _throughput(
        self,
        size: int,
        text: bool,
        inflight: int,
        start_at: float,
        warmup: float,
        duration: float,
        drain: float = 5.0,
    ) -> dict[str, Any]:
        clients = self._open_clients()
        message = payload(size, text, seed=self.index)
        for c in clients:
            c.set_message(message)
            c.outstanding = 0
        stats = self.stats
        mismatches0 = stats.mismatches
        await self._wait_start(start_at)
        for c in clients:
            c.start_pipeline(inflight)
        await asyncio.sleep(max(0.0, start_at + warmup - time.time()))
        m0, b0, cpu0, t0 = stats.messages, stats.bytes, time.process_time(), time.monotonic()
        await asyncio.sleep(max(0.0, start_at + warmup + duration - time.time()))
        m1, b1, cpu1, t1 = stats.messages, stats.bytes, time.process_time(), time.monotonic()
        for c in clients:
            c.stop_pipeline()
        lost = await self._drain(clients, drain)
        return {
            "messages": m1 - m0,
            "bytes": b1 - b0,
            "seconds": t1 - t0,
            "cpu_seconds": cpu1 - cpu0,
            "connections": len(clients),
            "mismatches": stats.mismatches - mismatches0,
            "lost": lost,
            "closed": sum(1 for c in clients if c.state != OPEN),
            "errors": dict(stats.errors),
        }

    async def _latency(
        self,
        size: int,
        text: bool,
        rate: float,
        start_at: float,
        warmup: float,
        duration: float,
        drain: float = 5.0,
    ) -> dict[str, Any]:
        clients = self._open_clients()
        if not clients or rate <= 0:
            return {"samples": b"", "sent": 0, "cpu_seconds": 0.0, "seconds": duration}
        message = payload(size, text, seed=self.index)
        samples: list[float] = []
        clock = time.perf_counter
        for c in clients:
            c.set_message(message)
            c.outstanding = 0
            c.rtts = samples
            c.clock = clock
            c.sent_at.clear()
        mismatches0 = self.stats.mismatches
        await self._wait_start(start_at)
        interval = 1.0 / rate
        begin = clock()
        measure_from = begin + warmup
        end = measure_from + duration
        cut = None
        sent_cut = 0
        cpu0 = t0 = 0.0
        late = 0.0  # how far behind schedule the sender fell at worst (client saturation)
        sent = 0
        n = len(clients)
        next_at = begin
        try:
            while True:
                now = clock()
                if cut is None and now >= measure_from:
                    cut, sent_cut = len(samples), sent
                    cpu0, t0 = time.process_time(), time.monotonic()
                if now >= end:
                    break
                if now - next_at > late and cut is not None:
                    late = now - next_at
                while next_at <= now:
                    clients[sent % n].send_timed(now)
                    sent += 1
                    next_at += interval
                # Timers tick in milliseconds: sleep at least one, then send what fell due
                # (the round trip counts from the real send time, not the schedule).
                await asyncio.sleep(max(0.001, next_at - clock()))
            cpu1, t1 = time.process_time(), time.monotonic()
            lost = await self._drain(clients, drain)
        finally:
            for c in clients:
                c.rtts = None
        window = samples[cut or 0 :]
        return {
            "samples": array.array("d", window).tobytes(),
            "sent": sent - (sent_cut if cut is not None else 0),
            "seconds": t1 - t0,
            "cpu_seconds": cpu1 - cpu0,
            "lost": lost,
            "mismatches": self.stats.mismatches - mismatches0,
            "max_send_lag": late,
            "errors": dict(self.stats.errors),
        }

    async def _sample(self, count: int, size: int = 64, within: float = 10.0) -> dict[str, Any]:
        clients = self._open_clients()
        if not clients or count <= 0:
            return {"ok": 0, "failed": 0}
        step = max(1, len(clients) // count)
        chosen = clients[::step][:count]
        rng = random.Random(self.index)
        waits = []
        for c in chosen:
            c.set_message(rng.randbytes(size))
            waits.append(c.echo_once())
        done, pending = await asyncio.wait(waits, timeout=within)
        ok = sum(1 for w in done if w.result())
        for w in pending:
            w.cancel()
        return {"ok": ok, "failed": len(chosen) - ok}

    async def _mark(self) -> dict[str, Any]:
        """Remember every open client's heartbeat count (``status`` then counts the silent)."""
        self.pings_at_mark = {c: c.pings for c in self._open_clients()}
        return {"marked": len(self.pings_at_mark)}

    async def _status(self) -> dict[str, Any]:
        marked = self.pings_at_mark
        return {
            "open": len(self._open_clients()),
            # marked and still open, but no heartbeat answered since the mark
            "unpinged": sum(1 for c in self.clients if c in marked and c.pings == marked[c]),
            # marked and closed since
            "lost": sum(1 for c in marked if c.state != OPEN),
            "pings": self.stats.pings,
            "errors": dict(self.stats.errors),
            "mismatches": self.stats.mismatches,
        }

    async def _close(self, within: float = 10.0) -> dict[str, Any]:
        clients = self.clients
        for c in clients:
            c.close()
        if clients:
            await asyncio.wait([c.closed for c in clients], timeout=within)
        aborted = 0
        for c in clients:
            if not c.closed.done() and c.transport is not None:
                c.transport.abort()
                aborted += 1
        self.clients = []
        return {"closed": len(clients), "aborted": aborted}


def _worker_main(conn, index: int, counters) -> None:  # runs in a spawned process
    raise_fd_limit()
    factory: Callable[[], asyncio.AbstractEventLoop] | None = None
    try:
        import uvloop

        factory = uvloop.new_event_loop
    except ImportError:  # pragma: no cover - uvloop is in the lock file
        pass
    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(_Worker(conn, index, counters).serve())


# ---- the parent's handle -------------------------------------------------------------------


class ClientPool:
    """``processes`` client processes; ``call`` sends one command to each and gathers."""

    def __init__(self, processes: int) -> None:
        context = multiprocessing.get_context("spawn")
        self.processes = processes
        self.pipes: list[multiprocessing.connection.Connection] = []
        self.counters = []
        self.procs = []
        for index in range(processes):
            parent, child = context.Pipe()
            counters = context.RawArray("d", COUNTERS)
            proc = context.Process(
                target=_worker_main,
                args=(child, index, counters),
                name=f"bench-client-{index}",
                daemon=True,
            )
            proc.start()
            child.close()
            self.pipes.append(parent)
            self.counters.append(counters)
            self.procs.append(proc)

    def __enter__(self) -> ClientPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()

    def total(self, index: int) -> float:
        """Sum of one shared counter over all processes (0 messages, 1 bytes, 2 open, 3 pings)."""
        return sum(c[index] for c in self.counters)

    def call(
        self,
        commands: list[dict[str, Any]] | dict[str, Any],
        timeout: float,
        tick: Callable[[], None] | None = None,
    ) -> list[dict[str, Any]]:
        """Send a command to every process (one each, or the same), wait for all answers."""
        if isinstance(commands, dict):
            commands = [dict(commands) for _ in self.pipes]
        for pipe, command in zip(self.pipes, commands, strict=True):
            pipe.send(command)
        results: list[dict[str, Any] | None] = [None] * len(self.pipes)

        def answered() -> bool:
            pending = [p for p, r in zip(self.pipes, results, strict=True) if r is None]
            for pipe in multiprocessing.connection.wait(pending, timeout=0.1):
                results[self.pipes.index(pipe)] = pipe.recv()  # type: ignore[arg-type]
            for proc in self.procs:
                if not proc.is_alive():
                    raise RuntimeError(f"{proc.name} died (exit code {proc.exitcode})")
            if tick is not None:
                tick()
            return all(r is not None for r in results)

        until(answered, f"client processes answer {commands[0]['op']!r}", timeout, errors=())
        errors = [r["error"] for r in results if r and "error" in r]
        if errors:
            raise RuntimeError(f"client process failed: {errors[0]}")
        return results  # type: ignore[return-value]

    def shutdown(self) -> None:
        for pipe, proc in zip(self.pipes, self.procs, strict=True):
            if proc.is_alive():
                with suppress(OSError):  # BrokenPipeError: the process is gone already
                    pipe.send({"op": "exit"})
        for proc in self.procs:
            proc.join(timeout=15)
            if proc.is_alive():
                proc.terminate()
                proc.join(timeout=5)
        for pipe in self.pipes:
            pipe.close()


def error_counts(*answers: list[dict[str, Any]]) -> dict[str, int]:
    """The ``errors`` of client processes' answers (one or more ``call``s), summed by kind."""
    errors: dict[str, int] = {}
    for answer in answers:
        for r in answer:
            for kind, n in r["errors"].items():
                errors[kind] = errors.get(kind, 0) + n
    return errors
