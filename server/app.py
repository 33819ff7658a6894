"""The gateway: accept WebSocket connections, echo every message (or hand each connection to
the application's handler, WS_HANDLER), shut down gracefully.

In-process use (tests, embedding)::

    gateway = Gateway(Config.from_env({"WS_PORT": "0", "WS_HOST": "127.0.0.1"}))
    await gateway.start()          # bound; gateway.url is ws://127.0.0.1:<port>/ws
    ...
    await gateway.shutdown()       # drain: 503, wait WS_DRAIN_DELAY, 1001, stop listening

or ``await run(config, stop_event)``, which serves until ``stop_event`` is set, then drains.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import logging
import math
import os
import platform
import random
import socket
import sys
import traceback
from collections.abc import Callable
from typing import Any

import websockets
from websockets.asyncio.server import Server, ServerConnection, broadcast, serve
from websockets.exceptions import ConnectionClosed
from websockets.frames import CloseCode
from websockets.protocol import CLOSED, CONNECTING, OPEN
from websockets.server import ServerProtocol

from . import allocator, memory_usage
from .budget import HEADROOM, MemoryBudget, connection_sizes
from .config import Config, load_handler
from .http import EARLY_DATA_LIMIT, HttpEndpoints, request_end
from .logs import MessageLogBudget, log_event, message_logger, preview
from .metrics import Metrics

logger = logging.getLogger(__name__)

SHUTDOWN_REASON = "server shutting down"
RATE_LIMIT_REASON = "message rate limit exceeded"
HEARTBEAT_REASON = "keepalive ping timeout"
MEMORY_REASON = "server memory budget exceeded"
HELD_BY_QUEUE = 1  # GatewayConnection.reading_held: the receive queue is full
HELD_BY_WRITES = 2  # ... the write buffer is over its high-water mark
HELD_BY_MEMORY = 4  # ... the memory budget cannot reserve its next read
MEMORY_CHECK_INTERVAL = 0.025  # seconds between two looks at the process's memory
SHED_AT = 0.9  # from this share of the budget, close the largest holders ...
SHED_TO = 0.75  # ... until this share of it is left
# A connection that has shown it reads its echoes but has waited this long for the budget to
# reserve its next read makes room: the largest holders that stopped reading theirs are
# closed (1013). One that has not shown it (a slow reader stuck in its first message looks
# the same as a client sending its first large one) waits for room like the rest.
STARVING_AFTER = 1.0
# Close codes of an orderly end: logged at INFO and not counted as errors.
NORMAL_CLOSE_CODES = frozenset({CloseCode.NORMAL_CLOSURE, CloseCode.GOING_AWAY, 1005})
# Error kind (ws_errors_total{kind}) of a close the server or the network caused.
ERROR_KINDS = {
    CloseCode.ABNORMAL_CLOSURE: "abnormal_closure",
    CloseCode.PROTOCOL_ERROR: "protocol_error",
    CloseCode.INVALID_DATA: "invalid_data",
    CloseCode.POLICY_VIOLATION: "policy_violation",
    CloseCode.MESSAGE_TOO_BIG: "message_too_big",
    CloseCode.INTERNAL_ERROR: "internal_error",
}


class GatewayConnection(ServerConnection):
    """A server connection that carries what the gateway logs and counts about it."""

    # Slots: the library's own attributes fill the instance dictionary already, and ours on
    # top would make it grow to the next size (about 1.5 KiB per connection).
    __slots__ = (
        "answered",
        "bytes_in",
        "bytes_out",
        "client",
        "conn_id",
        "drop_reason",
        "early",
        "floor",
        "gateway",
        "granted",
        "has_slot",
        "inflight",
        "lost",
        "msgs_in",
        "msgs_out",
        "opened_at",
        "path",
        "peer",
        "peer_ip",
        "ping_due",
        "ping_payload",
        "pong_due",
        "pongs",
        "read_size",
        "reading_held",
        "reads_echoes",
        "request_id",
        "share",
    )

    def __init__(
        self, protocol: ServerProtocol, server: Server, *, gateway: Gateway, **kwargs: Any
    ):
        super().__init__(protocol, server, **kwargs)
        # A list, not the library's deque: an empty deque allocates a 64-slot block (about
        # 700 bytes) per connection, for waiters that only a peer not reading ever has.
        self.drain_waiters = []  # type: ignore[assignment]
        self.gateway = gateway
        self.conn_id: str = self.id.hex[:8]
        self.peer_ip: str | None = None
        self.peer: str | None = None
        self.client: str | None = None
        self.request_id: str | None = None
        self.path = ""
        self.answered = False  # an HTTP response other than 101 was chosen and logged
        # Bytes after the handshake request, held until it is answered (http.request_end).
        self.early: bytearray | None = None
        self.has_slot = False  # counted in ws_connections_active
        self.lost = False  # connection_lost ran: the TCP connection is gone
        self.inflight = 0  # bytes of the message being echoed (held until the next one)
        # The memory budget (server.budget): set when the socket's buffers are.
        self.floor = self.share = self.read_size = self.granted = 0
        self.drop_reason: str | None = None  # why the server ended it, when not obvious
        self.opened_at = 0.0
        self.pongs = 0  # heartbeats answered
        # Its peer has read an echo: the write buffer was empty when its next message came.
        # Only such a connection may make room for itself by closing stuck ones.
        self.reads_echoes = False
        # The heartbeat (Gateway._heartbeats): loop times when the next ping is due and
        # when the pong to the ping in flight is, and that ping's payload.
        self.ping_due = self.pong_due = math.inf
        self.ping_payload: bytes | None = None
        self.msgs_in = self.msgs_out = self.bytes_in = self.bytes_out = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self.gateway.sockets.add(self)
        peer = transport.get_extra_info("peername")
        if isinstance(peer, tuple) and peer:
            self.peer_ip = str(peer[0])
            self.client = self.peer_ip
            self.peer = f"[{peer[0]}]:{peer[1]}" if ":" in self.peer_ip else f"{peer[0]}:{peer[1]}"
        # Reading stops while the receive queue is full (the library's own backpressure)
        # or the write buffer is: the library answers pings and close frames by writing
        # from data_received, so a peer that floods pings and never reads would otherwise
        # grow the write buffer without bound.
        self.reading_held = 0  # HELD_BY_QUEUE | HELD_BY_WRITES | HELD_BY_MEMORY
        self.recv_messages.pause = self.queue_full
        self.recv_messages.resume = self.queue_drained
        buffer = fix_socket_buffers(transport, self.gateway.config.socket_buffer)
        self.floor, self.share, self.read_size = connection_sizes(buffer)
        self.gateway.budget.accepted(self)

    def data_received(self, data: bytes) -> None:
        if self.protocol.state is CONNECTING or self.early is not None:
            data = self.hold_early_data(data)
        if data:
            super().data_received(data)
        self.gateway.budget.after_read(self, self.loop.time())

    def hold_early_data(self, data: bytes) -> bytes:
        """What of ``data`` the parser may have now; bytes after the handshake request are
        held until the request is answered (a client should wait for it; without NGINX in
        front, one that pipelines requests does not)."""
        if self.early is None and self.request is None:
            end = request_end(self.protocol.reader.buffer, data)
            if end == -1 or end == len(data):
                return data
            self.early = bytearray(data[end:])
            return data[:end]
        if self.early is None:
            self.early = bytearray()
        self.early += data
        if len(self.early) > EARLY_DATA_LIMIT:
            self.drop_reason = "data_before_handshake_answer"
            self.transport.abort()
        return b""

    def release_early_data(self) -> None:
        """Once the request is answered: after a 101 what the client sent early are its
        first frames, fed in order; after any other answer the library closes, and they are
        dropped."""
        early, self.early = self.early, None
        if early and self.protocol.state is OPEN and not self.lost:
            self.data_received(bytes(early))

    def queue_full(self) -> None:
        self.hold_reading(HELD_BY_QUEUE)

    def queue_drained(self) -> None:
        self.release_reading(HELD_BY_QUEUE)

    def hold_reading_for_memory(self) -> None:
        self.hold_reading(HELD_BY_MEMORY)

    def release_reading_for_memory(self) -> None:
        self.release_reading(HELD_BY_MEMORY)

    def hold_reading(self, why: int) -> None:
        if not self.reading_held:
            self.transport.pause_reading()  # type: ignore[attr-defined]
            self.gateway.holding.add(self)
        self.reading_held |= why

    def release_reading(self, why: int) -> None:
        self.reading_held &= ~why
        if not self.reading_held:
            self.gateway.holding.discard(self)
            if not self.transport.is_closing():
                self.transport.resume_reading()  # type: ignore[attr-defined]

    def held_bytes(self) -> int:
        """Bytes this connection holds: write buffer, the message being echoed, receive
        queue, partial frame.

        What was received but not echoed yet counts twice: echoed to a peer that does not
        read, it is held as the message and as its serialized frame, which the transport
        keeps whole until its last byte is written (its write buffer size counts only what
        is left of it). So echoing never takes more than was reserved when it was read.

        Reads websockets internals (``Assembler.frames.queue``, ``Protocol.reader.buffer``),
        checked against websockets 17.4.
        """
        queued = sum(len(frame.data) for frame in self.recv_messages.frames.queue)
        buffer = self.protocol.reader.buffer
        partial = sys.getsizeof(buffer) + len(buffer)  # allocated, and the echo it becomes
        writing = self.transport.get_write_buffer_size()
        if writing:
            writing += self.inflight
        early = 2 * len(self.early) if self.early is not None else 0  # frames, once fed
        return writing + self.inflight + 2 * queued + partial + early

    def pause_writing(self) -> None:
        super().pause_writing()
        self.hold_reading(HELD_BY_WRITES)

    def resume_writing(self) -> None:
        super().resume_writing()
        self.release_reading(HELD_BY_WRITES)

    def take_slot(self) -> None:
        """Count this connection in ``ws_connections_active``; called when it is admitted."""
        # A client that sends its request and leaves at once can be gone before the library
        # asks for the response (seen with uvloop): connection_lost, the only release, has
        # run already, so a slot taken now would never come back.
        if self.lost:
            return
        self.has_slot = True
        self.gateway.metrics.connections_active += 1

    # Heartbeat (driven by Gateway._heartbeats)

    def ping_for_heartbeat(self, now: float) -> None:
        """Send a heartbeat ping; its pong is due ``ping_timeout`` from ``now``.

        The ping is written even behind a full write buffer (a few bytes, once an interval):
        a peer that stopped reading never sees it, so not reading counts as not answering.
        """
        self.ping_due = math.inf
        self.pong_due = now + self.gateway.config.ping_timeout
        self.ping_payload = random.randbytes(4)
        self.protocol.send_ping(self.ping_payload)
        self.send_data()

    def acknowledge_pings(self, data: bytes) -> None:
        super().acknowledge_pings(data)  # pings sent with ping(), if any
        if data == self.ping_payload:
            self.ping_payload = None
            self.pongs += 1
            self.pong_due = math.inf
            self.ping_due = self.loop.time() + self.gateway.config.ping_interval

    def drop(self, drop_reason: str, code: int, reason: str) -> None:
        """End the connection now: a close frame with ``code`` if the socket takes it, then
        abort, without waiting for a close handshake a dead or stuck peer never completes."""
        self.drop_reason = drop_reason
        if self.protocol.state is OPEN:
            self.protocol.fail(code, reason)
            self.send_data()
        self.transport.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        self.lost = True
        self.gateway.sockets.discard(self)
        self.gateway.holding.discard(self)
        # What it holds goes back now, not when the garbage collector breaks its cycles: the
        # partial frame, and the frames a dropped peer sent that will never be echoed.
        self.protocol.reader.buffer.clear()
        if self.drop_reason is not None:
            self.recv_messages.frames.queue.clear()
        self.gateway.budget.lost(self)
        # Every TCP connection ends here exactly once, whatever happened before: the one
        # place where a slot can be released without ever leaking it.
        if self.has_slot:
            self.has_slot = False
            self.gateway.metrics.connections_active -= 1

    async def handshake(self, *args: Any, **kwargs: Any) -> None:
        try:
            await super().handshake(*args, **kwargs)
        except asyncio.CancelledError:
            if self.request is None:
                self.gateway.no_request(self, TimeoutError("no HTTP request in time"))
            raise
        finally:
            self.release_early_data()
        if self.request is None:
            self.gateway.no_request(self, self.protocol.handshake_exc)


def fix_socket_buffers(transport: asyncio.BaseTransport, size: int) -> int:
    """Set the socket's receive and send buffers to ``size`` bytes (at least two segments);
    return what was asked for.

    Fixed sizes take the socket out of TCP autotuning, which here grows a receive buffer to
    32 MiB and a send buffer to 4 MiB, charged to the container's memory. A buffer of less
    than two segments stalls the connection (on loopback, whose segments are 32-64 KiB, a
    1 MiB echo took seconds), so never below that.
    """
    sock = transport.get_extra_info("socket")
    if sock is None:  # pragma: no cover - every TCP transport has one
        return size
    with contextlib.suppress(OSError):
        size = max(size, 2 * sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG))
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, size)
    except OSError:  # pragma: no cover - the peer is already gone
        pass
    return size


def _reserved(connections: list[GatewayConnection]) -> int:
    """What ``connections`` have reserved against the memory budget."""
    return sum(c.floor + c.granted for c in connections)


def describe(exc: BaseException) -> str:
    """``Type: message`` of an exception; of its first cause for an ExceptionGroup."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        first = exc.exceptions[0]
        exc = first.__cause__ or first
    return f"{type(exc).__name__}: {exc}"


def close_info(connection: ServerConnection) -> tuple[int, str, str]:
    """``(code, reason, closed_by)`` of a closed connection, from the server's point of view.

    ``closed_by`` is ``server`` when the server sent the first close frame (its code is the
    verdict: 1001 shutdown, 1002/1007/1009 bad input, 1008 rate limit, 1011 heartbeat),
    ``client`` when the client did, ``network`` when nobody did (1006).
    """
    protocol = connection.protocol
    rcvd, sent = protocol.close_rcvd, protocol.close_sent
    if sent is not None and (rcvd is None or not protocol.close_rcvd_then_sent):
        return sent.code, sent.reason, "server"
    if rcvd is not None:
        return rcvd.code, rcvd.reason, "client"
    return CloseCode.ABNORMAL_CLOSURE, "", "network"


class HandlerConnection(GatewayConnection):
    """The connection an application's handler (WS_HANDLER) gets: a ``ServerConnection``
    whose ``recv`` and ``send`` (and ``async for``, which calls ``recv``) are counted,
    logged and rate-limited as the echo's messages are. ``broadcast()`` and
    ``recv_streaming()`` bypass them: what they move is not counted per message.
    """

    __slots__ = ("handler_running", "refilled", "tokens")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.handler_running = True  # False once it returned or raised: reads are ours
        self.tokens = max(self.gateway.config.max_messages_per_second, 1.0)
        self.refilled = self.loop.time()

    async def recv(self, decode: bool | None = None) -> Any:  # type: ignore[override]
        message = await super().recv(decode)
        if self.drop_reason is not None or not self.handler_running:
            return message  # read by the gateway while it closes: not the handler's
        self.gateway.count_message(self, message, received=True)
        rate = self.gateway.config.max_messages_per_second
        if rate:
            now = self.loop.time()
            self.tokens = min(max(rate, 1.0), self.tokens + (now - self.refilled) * rate)
            self.refilled = now
            if self.tokens < 1.0:
                self.drop_reason = "rate_limited"
                await self.gateway._close(self, CloseCode.POLICY_VIOLATION, RATE_LIMIT_REASON)
                return await super().recv(decode)  # raises ConnectionClosedError (1008)
            self.tokens -= 1.0
        return message

    async def send(self, message: Any, text: bool | None = None) -> None:  # type: ignore[override]
        await super().send(message, text=text)
        if isinstance(message, str | bytes | bytearray | memoryview):
            self.gateway.count_message(self, message, received=False, text=text)


class Gateway:
    """One echo server: a websockets ``Server`` plus metrics, admission and graceful shutdown."""

    def __init__(self, config: Config, *, worker: int = 0) -> None:
        self.config = config
        self.worker = worker
        self.metrics = Metrics(
            max_connections=config.max_connections,
            memory_budget=config.memory_budget,
            worker=worker,
        )
        self.http = HttpEndpoints(config, self.metrics)
        # The application's handler (WS_HANDLER), or None for the echo.
        self.handler = load_handler(config.handler) if config.handler else None
        self.connections: set[GatewayConnection] = set()  # connections whose handler runs
        # Every accepted TCP connection until it is lost, handshake or not: the library's
        # all_connections lists only open WebSockets.
        self.sockets: set[GatewayConnection] = set()
        # Connections that stopped reading (full receive queue or write buffer): the only
        # ones that hold more than a write limit and a few frames for long.
        self.holding: set[GatewayConnection] = set()
        # Reserves what connections read against WS_MEMORY_BUDGET; sized by start(), when
        # the process's own base is known.
        self.budget = MemoryBudget(0)
        self._collect_garbage = False
        self._background: list[asyncio.Task[None]] = []  # memory watch, heartbeats
        self.server: Server | None = None
        self.log_message = message_logger(logger)
        self._address: tuple[Any, ...] | None = None
        self._stop_requested = asyncio.Event()
        self._forced = asyncio.Event()  # a repeated stop with force: no more waiting
        self._shutdown_task: asyncio.Task[None] | None = None

    # Lifecycle

    @property
    def draining(self) -> bool:
        return self.metrics.draining

    async def start(self) -> None:
        """Bind and start accepting connections."""
        config = self.config
        extra: dict[str, Any] = {"reuse_port": True} if config.workers > 1 else {}
        self.server = await serve(
            self._handle,
            config.host,
            config.port,
            process_request=self.http.process_request,
            process_response=self.http.process_response,
            create_connection=functools.partial(  # type: ignore[arg-type]
                GatewayConnection if self.handler is None else HandlerConnection, gateway=self
            ),
            compression="deflate" if config.compression else None,
            max_size=config.max_size,
            max_queue=config.max_queue,
            # The heartbeat is ours (see _heartbeats): the library's keepalive waits on a full
            # write buffer forever, so it would never drop a peer that stopped reading.
            ping_interval=None,
            close_timeout=config.close_timeout,
            open_timeout=config.open_timeout,
            server_header=f"websocket-gateway websockets/{websockets.__version__}",
            **extra,
        )
        self._address = self.server.sockets[0].getsockname()
        freed_buffers = allocator.return_freed_buffers()
        # What the process (the container, for one worker alone in it) uses before any
        # connection is not the connections' to use.
        alone = memory_usage.limited_cgroup() if config.workers == 1 else None
        base = (memory_usage.in_use(alone) or 0) + HEADROOM
        self.budget.limit = config.memory_budget // config.workers - base
        # One per-message logger for all connections (a closure each would cost 0.5 KiB),
        # built now that logging is configured.
        self.log_message = message_logger(logger)
        loop = asyncio.get_running_loop()
        self._background.append(loop.create_task(self._watch_memory()))
        if config.ping_interval > 0:
            self._background.append(loop.create_task(self._heartbeats()))
        log_event(
            logger,
            logging.INFO,
            "server_started",
            url=self.url,
            pid=os.getpid(),
            worker=self.worker,
            event_loop=type(loop).__module__.split(".")[0],
            allocator=freed_buffers,
            memory_pool_bytes=self.budget.limit,
            python=platform.python_version(),
            websockets=websockets.__version__,
            config=config.summary(),
        )

    @property
    def port(self) -> int:
        """The bound TCP port (known after :meth:`start`)."""
        assert self._address is not None, "call start() first"
        return int(self._address[1])

    @property
    def url(self) -> str:
        """``ws://host:port/ws`` of the bound socket (usable by a client)."""
        assert self._address is not None, "call start() first"
        host = str(self._address[0])
        if host in ("0.0.0.0", "::"):
            host = "127.0.0.1" if host == "0.0.0.0" else "::1"
        if ":" in host:
            host = f"[{host}]"
        return f"ws://{host}:{self.port}/ws"

    def request_stop(self, reason: str = "requested", *, force_if_repeated: bool = False) -> None:
        """Ask :meth:`serve_until_stopped` to drain.

        A repeated request is ignored, unless ``force_if_repeated`` (a second Ctrl+C): then
        the connections still open are dropped at once.
        """
        if not self._stop_requested.is_set():
            log_event(logger, logging.INFO, "stop_requested", reason=reason)
            self._stop_requested.set()
        elif force_if_repeated:
            log_event(logger, logging.WARNING, "stop_forced", reason=reason)
            self._forced.set()
            self._abort_all()

    async def serve_until_stopped(self) -> None:
        """Serve until :meth:`request_stop`, then drain and return."""
        await self._stop_requested.wait()
        await self.shutdown()

    async def shutdown(self) -> None:
        """Drain and stop; idempotent; returns within ``shutdown_timeout`` whatever peers do."""
        if self._shutdown_task is None:
            self._stop_requested.set()
            self._shutdown_task = asyncio.get_running_loop().create_task(self._shutdown())
        await asyncio.shield(self._shutdown_task)

    async def _shutdown(self) -> None:
        assert self.server is not None, "call start() first"
        loop = asyncio.get_running_loop()
        started = loop.time()
        budget = self.config.shutdown_timeout
        # The drain delay comes first; the close handshakes share what is left of the budget.
        closing_from = started + self.config.drain_delay
        graceful_deadline = closing_from + (budget - self.config.drain_delay) * 0.6
        hard_deadline = started + budget * 0.9

        # 1. Not ready any more: /readyz answers 503 and new handshakes get 503, while the
        #    port stays open so probes and load balancers can see it.
        self.metrics.draining = True
        log_event(
            logger,
            logging.INFO,
            "server_draining",
            connections=sum(c.protocol.state is OPEN for c in self.connections),
            timeout_s=budget,
            drain_delay_s=self.config.drain_delay,
        )
        # 2. Only refuse, for WS_DRAIN_DELAY: a proxy that re-resolves the server's name
        #    (NGINX's `resolve`) forgets this address meanwhile. Closing connections first
        #    sent their reconnects here while the proxy still listed this address: it tried
        #    the next one after our 503, and when its address list changed in between,
        #    NGINX had "no live upstreams" and answered 502.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout_at(closing_from):
                await self._forced.wait()
        # 3. Close open connections with 1001 Going Away. A peer that has not answered by the
        #    graceful deadline is dropped by step 5, not by the library's own close timeout
        #    a moment earlier or later: which timer fired first depended on the machine.
        open_connections = [c for c in self.connections if c.protocol.state is OPEN]
        for connection in open_connections:
            connection.close_timeout = hard_deadline - loop.time()
        closing = [
            loop.create_task(c.close(CloseCode.GOING_AWAY, SHUTDOWN_REASON))
            for c in open_connections
        ]
        if closing:
            await asyncio.wait(closing, timeout=max(0.0, graceful_deadline - loop.time()))
        # 4. Stop listening; the library closes connections that opened meanwhile. Sockets
        #    that have not sent a request yet would hold the drain for open_timeout: drop
        #    them now, not earlier, so a probe sent during the drain is answered (503).
        for connection in list(self.sockets):
            if connection.request is None:
                connection.transport.abort()
        self.server.close(close_connections=True, code=CloseCode.GOING_AWAY, reason=SHUTDOWN_REASON)
        aborted = 0
        try:
            async with asyncio.timeout_at(graceful_deadline):
                await self.server.wait_closed()
        except TimeoutError:
            # 5. Peers that neither read nor answer: drop them.
            aborted = self._abort_all()
            try:
                async with asyncio.timeout_at(hard_deadline):
                    await self.server.wait_closed()
            except TimeoutError:
                log_event(
                    logger, logging.ERROR, "shutdown_incomplete", connections=len(self.connections)
                )
        for task in closing:
            task.cancel()
        for task in self._background:
            task.cancel()
        log_event(
            logger,
            logging.INFO,
            "server_stopped",
            duration_s=round(loop.time() - started, 3),
            aborted=aborted,
            connections_total=self.metrics.connections_total,
        )

    def _abort_all(self) -> int:
        """Drop every TCP connection now; return how many."""
        connections: set[ServerConnection] = set(self.connections)
        if self.server is not None:
            connections |= self.server.all_connections
        for connection in connections:
            if isinstance(connection, GatewayConnection):
                connection.drop_reason = connection.drop_reason or "shutdown_timeout"
            connection.transport.abort()
        return len(connections)

    # Memory budget

    async def _watch_memory(self) -> None:
        """Every MEMORY_CHECK_INTERVAL: give reservations back and let waiters read again
        (server.budget), and keep two last resorts.

        1. A connection that reads its echoes but has waited STARVING_AFTER for room: the
           largest holders that do not read theirs are closed with 1013 (Try Again Later)
           until it fits.
        2. What the budget cannot see (the allocator keeping freed memory, a library's
           buffers): from SHED_AT of WS_MEMORY_BUDGET in use, as the kernel counts it (the
           container's memory when it has a limit, else this process's resident memory),
           the largest holders that stopped reading are closed until SHED_TO is left.
        """
        cgroup = memory_usage.limited_cgroup()
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(MEMORY_CHECK_INTERVAL)
            self.budget.rebalance()
            held = {c: c.held_bytes() for c in self.holding}
            self.metrics.memory_held = sum(held.values())
            self.metrics.memory_reserved = self.budget.floors + self.budget.granted
            self.metrics.memory_waiting = len(self.budget.waiting)
            if self._collect_garbage:
                # Closed for being over the budget, the dropped connections are gone now:
                # what their cycles (handler frames, exceptions) still hold goes at once
                # rather than at some later collection. Not after a shed for a starving
                # reader: a few connections' leftovers do not pay for a full collection's
                # pause of every connection.
                gc.collect()
                self._collect_garbage = False
            starving = self.budget.starving(loop.time(), STARVING_AFTER)
            if isinstance(starving, GatewayConnection) and not starving.paused:
                short = self.budget.shortfall(starving) - self.budget.free
                self._shed(
                    held, "starving", lambda shed, s=short: _reserved(shed) >= s, spare=starving
                )
            used = memory_usage.in_use(cgroup) or self.metrics.memory_held
            self.metrics.memory_used = used
            if used > self.config.memory_budget * SHED_AT:
                excess = used - self.config.memory_budget * SHED_TO
                self._shed(
                    held,
                    "over_budget",
                    lambda shed, e=excess, h=held: sum(map(h.__getitem__, shed)) >= e,
                    spare=None,
                )

    def _shed(
        self,
        held: dict[GatewayConnection, int],
        why: str,
        enough: Callable[[list[GatewayConnection]], bool],
        *,
        spare: GatewayConnection | None,
    ) -> None:
        """Close the largest holders with 1013 until ``enough(those closed)``.

        To make room for ``spare``, a connection that reads its echoes: only holders that
        do not read theirs (a full write buffer), then the largest of those that have not
        shown they read theirs and wait for memory too. Else any that stopped reading.
        """
        candidates = sorted(held, key=held.__getitem__, reverse=True)
        if spare is not None:
            waiting = self.budget.waiting
            candidates = [c for c in candidates if c.paused] + [
                c for c in candidates if not c.paused and not c.reads_echoes and c in waiting
            ]
        shed: list[GatewayConnection] = []
        for connection in candidates:
            if enough(shed):
                break
            shed.append(connection)
            # Its reservation comes back at connection_lost, once its buffers are freed.
            connection.drop("memory_budget", CloseCode.TRY_AGAIN_LATER, MEMORY_REASON)
        for connection in shed:
            del held[connection]
        if shed:
            self._collect_garbage = why == "over_budget"
            log_event(
                logger,
                logging.WARNING,
                "memory_budget_exceeded",
                why=why,
                used_bytes=self.metrics.memory_used,
                held_bytes=self.metrics.memory_held,
                reserved_bytes=self.metrics.memory_reserved,
                budget_bytes=self.config.memory_budget,
                closed=len(shed),
                conns=[c.conn_id for c in shed],
            )

    # Heartbeat

    async def _heartbeats(self) -> None:
        """Ping each open connection ``ping_interval`` after its last pong (or its opening);
        drop it if no pong comes within ``ping_timeout``.

        One task looks at every connection a few times per interval or timeout, whichever is
        shorter, instead of a task (and its timer and frames) per connection: about 1 KiB
        less per idle connection. Pings and drops come up to a quarter of that late.
        """
        config = self.config
        tick = min(config.ping_interval, config.ping_timeout) / 4
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(tick)
            now = loop.time()
            for ws in tuple(self.connections):
                if now >= ws.pong_due:
                    ws.pong_due = math.inf
                    ws.drop("heartbeat_timeout", CloseCode.INTERNAL_ERROR, HEARTBEAT_REASON)
                elif now >= ws.ping_due and ws.protocol.state is OPEN:
                    ws.ping_for_heartbeat(now)

    # Called by GatewayConnection

    def count_message(
        self, ws: GatewayConnection, message: Any, *, received: bool, text: bool | None = None
    ) -> None:
        """Count (and log, with WS_LOG_MESSAGES) one message an application's handler
        received or sent through ``ws``."""
        m = self.metrics
        is_text = type(message) is str if text is None else text
        size = len(message.encode()) if type(message) is str else len(message)
        if received:
            m.observe_size(size)
            ws.msgs_in += 1
            ws.bytes_in += size
            seq = ws.msgs_in
            if is_text:
                m.text_in += 1
                m.text_bytes_in += size
            else:
                m.binary_in += 1
                m.binary_bytes_in += size
        else:
            ws.msgs_out += 1
            ws.bytes_out += size
            seq = ws.msgs_out
            if is_text:
                m.text_out += 1
                m.text_bytes_out += size
            else:
                m.binary_out += 1
                m.binary_bytes_out += size
        if self.config.log_messages and logger.isEnabledFor(logging.INFO):
            self.log_message(
                "message_received" if received else "message_sent",
                ws.conn_id,
                seq,
                "text" if is_text else "binary",
                size,
                preview(message if type(message) in (str, bytes) else bytes(message)),
            )

    def no_request(self, connection: GatewayConnection, exc: BaseException | None) -> None:
        """A TCP connection ended or timed out before sending a valid HTTP request."""
        # An empty or silent connection (a TCP port probe) is routine; garbage is a warning.
        chain = []
        while exc is not None:
            chain.append(exc)
            exc = exc.__cause__
        probe = not chain or isinstance(chain[-1], EOFError | TimeoutError)
        error = "; ".join(f"{type(e).__name__}: {e}" for e in chain) or None
        if not probe:
            self.metrics.count_rejection("invalid_request")
        log_event(
            logger,
            logging.DEBUG if probe else logging.WARNING,
            "handshake_failed",
            conn=connection.conn_id,
            client=connection.client,
            error=error,
        )

    # Per connection

    async def _handle(self, ws: GatewayConnection) -> None:  # type: ignore[override]
        loop = asyncio.get_running_loop()
        ws.opened_at = loop.time()
        self.connections.add(ws)
        self.metrics.connections_total += 1
        per_client = self.metrics.client_connections
        per_client[ws.client] = per_client.get(ws.client, 0) + 1
        log_event(
            logger,
            logging.INFO,
            "connection_open",
            conn=ws.conn_id,
            client=ws.client,
            peer=ws.peer,
            path=ws.path,
            request_id=ws.request_id,
            compression=bool(ws.protocol.extensions),
        )
        # What the echo needs from the handshake is on ws now. Emptied in place: the
        # library keeps the request for the connection's life (ws.request, and a local of
        # its suspended parser), about 2.7 KiB of header strings per idle connection. An
        # application's handler gets them as the library gives them.
        if self.handler is None:
            ws.request.headers.clear()  # type: ignore[union-attr]
            ws.response.headers.clear()  # type: ignore[union-attr]
        try:
            if self.draining:  # opened while the drain started: close it too
                await self._close(ws, CloseCode.GOING_AWAY, SHUTDOWN_REASON)
                return
            if self.config.ping_interval > 0:
                ws.ping_due = ws.opened_at + self.config.ping_interval
            if self.handler is None:
                await self._echo(ws)
            else:
                assert isinstance(ws, HandlerConnection)
                try:
                    await self.handler(ws)
                finally:
                    ws.handler_running = False
                # Returned: close as serve() does, with 1000 (at once if it closed already).
                await self._close(ws, CloseCode.NORMAL_CLOSURE, "")
        except ConnectionClosed:
            pass
        except Exception as exc:  # a bug: log it once, end this connection, keep serving
            ws.drop_reason = "internal_error"
            log_event(
                logger,
                logging.ERROR,
                "connection_error",
                conn=ws.conn_id,
                error=describe(exc),
                traceback="".join(traceback.format_exception(exc)).rstrip(),
            )
            await self._close(ws, CloseCode.INTERNAL_ERROR, "internal error")
        finally:
            if ws.protocol.state is not CLOSED:  # only when cancelled: don't leak the socket
                ws.transport.abort()
            self.connections.discard(ws)
            left = per_client[ws.client] - 1
            if left:
                per_client[ws.client] = left
            else:
                del per_client[ws.client]
            self._closed(ws, loop.time())

    async def _echo(self, ws: GatewayConnection) -> None:
        """Echo each message with its frame type, one at a time.

        Backpressure: once the write buffer is over its high-water mark (``write_limit``),
        the next echo goes through ``send``, which waits until the peer reads; meanwhile
        nothing is received, the receive queue fills to ``max_queue`` frames and the
        library stops reading the socket. At most the write limit plus two messages are
        buffered for sending, plus the receive queue.
        """
        recv = ws.recv
        send = ws.send
        conns = (ws,)
        protocol = ws.protocol
        m = self.metrics
        observe_size = m.observe_size
        log_messages = self.config.log_messages and logger.isEnabledFor(logging.INFO)
        # Bounded per connection (WS_LOG_MESSAGES_PER_SECOND): one flooder's lines must not
        # push every other connection's lines out of the log buffer and the rotated files.
        log_message = MessageLogBudget(
            self.log_message, logger, ws.conn_id, self.config.log_messages_per_second
        )
        rate = self.config.max_messages_per_second
        clock = asyncio.get_running_loop().time
        # The bucket holds one second's worth, and never less than one message, so a rate
        # below 1/s still lets a message through once per 1/rate seconds.
        burst = max(rate, 1.0)
        tokens, last = burst, clock()
        msgs_in = msgs_out = bytes_in = bytes_out = 0
        try:
            while True:
                message = await recv()
                if msgs_in and not ws.reads_echoes and not ws.transport.get_write_buffer_size():
                    ws.reads_echoes = True
                if type(message) is str:
                    is_text = True
                    size = len(message) if message.isascii() else len(message.encode())
                    m.text_in += 1
                    m.text_bytes_in += size
                else:
                    is_text = False
                    size = len(message)
                    m.binary_in += 1
                    m.binary_bytes_in += size
                observe_size(size)
                msgs_in += 1
                bytes_in += size
                # The message is held until the next one is received (``message`` keeps it),
                # and its echo's serialized frame as long as the write buffer holds any of
                # it: held_bytes counts it here, not where it was in the receive queue.
                ws.inflight = size
                if rate:
                    now = clock()
                    tokens = min(burst, tokens + (now - last) * rate)
                    last = now
                    if tokens < 1.0:
                        ws.drop_reason = "rate_limited"
                        await self._close(ws, CloseCode.POLICY_VIOLATION, RATE_LIMIT_REASON)
                        return
                    tokens -= 1.0
                # One line per message: message_echoed once it is echoed, message_received
                # if it never is (the connection closes first).
                echoed = False
                try:
                    if ws.paused or protocol.state is not OPEN:
                        if m.draining and protocol.state is not OPEN:
                            # We sent 1001: read on to reach the peer's close frame, echo
                            # no more (send would wait for the close, the queue stay full).
                            continue
                        # Write buffer over its high-water mark: send() writes, then waits
                        # until the peer reads; meanwhile nothing more is read from it,
                        # and the message is held twice (here and in the write buffer).
                        await send(message)
                    else:
                        # Room in the write buffer: write now, synchronously. broadcast()
                        # to one connection is send() without its per-message async
                        # context manager, about 1 us less CPU per message.
                        broadcast(conns, message, raise_exceptions=True)
                    echoed = True
                finally:
                    if log_messages:
                        log_message(
                            "message_echoed" if echoed else "message_received",
                            ws.conn_id,
                            msgs_in,
                            "text" if is_text else "binary",
                            size,
                            preview(message),
                        )
                if is_text:
                    m.text_out += 1
                    m.text_bytes_out += size
                else:
                    m.binary_out += 1
                    m.binary_bytes_out += size
                msgs_out += 1
                bytes_out += size
        finally:
            log_message.close()
            ws.msgs_in, ws.msgs_out, ws.bytes_in, ws.bytes_out = (
                msgs_in,
                msgs_out,
                bytes_in,
                bytes_out,
            )

    async def _close(self, ws: GatewayConnection, code: int, reason: str) -> None:
        """Close with ``code`` from the handler, discarding what the peer sent meanwhile.

        Reading the receive queue empty is what lets the peer's close frame in: with more
        than ``max_queue`` frames queued the library has stopped reading the socket. If
        even that stalls (a peer that does not read), abort after ``close_timeout``.
        """
        closing = asyncio.get_running_loop().create_task(ws.close(code, reason))
        try:
            async with asyncio.timeout(self.config.close_timeout + 1.0):
                with contextlib.suppress(ConnectionClosed):
                    while True:
                        await ws.recv()
                await closing
        except TimeoutError:
            ws.transport.abort()
            closing.cancel()
            await ws.wait_closed()

    def _closed(self, ws: GatewayConnection, now: float) -> None:
        """Count and log the end of a connection: one line, level by close code."""
        m = self.metrics
        if ws.protocol.state is CLOSED:
            code, reason, closed_by = close_info(ws)
        else:  # pragma: no cover - aborted just above; connection_lost not yet run
            code, reason, closed_by = CloseCode.ABNORMAL_CLOSURE, "", "server"
        m.count_close(code)
        normal = code in NORMAL_CLOSE_CODES
        fields: dict[str, Any] = {}
        if not normal:
            cause = ws.protocol.parser_exc or ws.connection_exc
            if cause is not None:
                fields["error"] = f"{type(cause).__name__}: {cause}"
            if closed_by != "client":
                m.count_error(ws.drop_reason or ERROR_KINDS.get(code, "other"))
        if ws.drop_reason is not None:
            fields["drop_reason"] = ws.drop_reason
        log_event(
            logger,
            logging.INFO if normal else logging.WARNING,
            "connection_closed",
            conn=ws.conn_id,
            client=ws.client,
            code=int(code),
            reason=reason,
            closed_by=closed_by,
            duration_s=round(now - ws.opened_at, 3),
            msgs_in=ws.msgs_in,
            msgs_out=ws.msgs_out,
            bytes_in=ws.bytes_in,
            bytes_out=ws.bytes_out,
            request_id=ws.request_id,
            **fields,
        )


async def run(config: Config, stop: asyncio.Event, *, worker: int = 0) -> None:
    """Serve ``config`` until ``stop`` is set, then drain and return."""
    gateway = Gateway(config, worker=worker)
    await gateway.start()
    relay = asyncio.get_running_loop().create_task(stop.wait())
    relay.add_done_callback(lambda task: task.cancelled() or gateway.request_stop("stop event"))
    try:
        await gateway.serve_until_stopped()
    finally:
        relay.cancel()
