"""A connection of the gateway: what it holds, how it reads (backpressure, the memory
budget, early data), its heartbeat ping, how it is dropped, and its life from 101 to close.

What it does with its messages is a subclass's: the echo (:mod:`server.echo`) or the
application's handler (:mod:`server.handler`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import random
import socket
import sys
import traceback
from collections.abc import Callable
from typing import Any, Protocol

from websockets.asyncio.server import Server, ServerConnection
from websockets.exceptions import ConnectionClosed
from websockets.frames import CloseCode
from websockets.protocol import CLOSED, CONNECTING, OPEN
from websockets.server import ServerProtocol

from .budget import MemoryBudget, connection_sizes
from .config import Config
from .http import EARLY_DATA_LIMIT, request_end
from .logs import log_event
from .metrics import Metrics

# The connection's events, the guards' and the lifecycle's all carry the logger name they
# had when the gateway was one module: log queries select on it (docs/logs.md).
logger = logging.getLogger("server.app")

SHUTDOWN_REASON = "server shutting down"
RATE_LIMIT_REASON = "message rate limit exceeded"
HELD_BY_QUEUE = 1  # GatewayConnection.reading_held: the receive queue is full
HELD_BY_WRITES = 2  # ... the write buffer is over its high-water mark
HELD_BY_MEMORY = 4  # ... the memory budget cannot reserve its next read
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


class Host(Protocol):
    """What a connection needs of the gateway that accepted it (server.app.Gateway)."""

    config: Config
    metrics: Metrics
    budget: MemoryBudget
    # The application's handler (WS_HANDLER), or None for the echo.
    handler: Callable[[Any], Any] | None
    connections: set[GatewayConnection]  # connections whose handler runs
    sockets: set[GatewayConnection]  # every accepted TCP connection until it is lost
    holding: set[GatewayConnection]  # connections that stopped reading
    log_message: Callable[..., None]  # the per-message log line (logs.message_logger)


class GatewayConnection(ServerConnection):
    """A server connection that carries what the gateway logs and counts about it.

    What it does with its messages is :meth:`converse`: the echo (server.echo) or the
    application's handler (server.handler).
    """

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

    def __init__(self, protocol: ServerProtocol, server: Server, *, gateway: Host, **kwargs: Any):
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
        # Its peer has read an echo: the write buffer was empty when its next message came,
        # and has not filled since. Only such a connection may make room for itself by
        # closing stuck ones, and it needs no place among the GROWING strangers.
        self.reads_echoes = False
        # The heartbeat (server.guards.heartbeats): loop times when the next ping is due and
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

    def receiving(self) -> bool:
        """A frame is partly received (websockets' ``Protocol.reader.buffer``) and reading
        it goes on: not held back by this connection's own echoes, which its peer leaves
        unread."""
        return bool(self.protocol.reader.buffer) and not self.reading_held & HELD_BY_WRITES

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
        # Its peer stopped reading (a large kernel receive buffer can make one that never
        # reads look as if it did, for its first echoes): shown again by the next message
        # that finds the write buffer empty.
        self.reads_echoes = False
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

    # Heartbeat (driven by server.guards.heartbeats)

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
        # The receive queue's pause and resume are this connection's own methods: the one
        # reference cycle a connection has. Nothing is read any more, so they can go, and a
        # closed connection is freed by its reference count when its handler ends, not by a
        # later full collection of the garbage collector (which found about 30 objects of
        # every closed connection there).
        self.recv_messages.pause = self.recv_messages.resume = _nothing
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
                self.handshake_failed(TimeoutError("no HTTP request in time"))
            raise
        finally:
            self.release_early_data()
        if self.request is None:
            self.handshake_failed(self.protocol.handshake_exc)

    def log(self, level: int, event: str, /, **fields: Any) -> None:
        """Log ``event`` of this connection: its id and client first, then ``fields``."""
        log_event(logger, level, event, conn=self.conn_id, client=self.client, **fields)

    def handshake_failed(self, exc: BaseException | None) -> None:
        """A TCP connection ended or timed out before sending a valid HTTP request."""
        # An empty or silent connection (a TCP port probe) is routine; garbage is a warning.
        chain = []
        while exc is not None:
            chain.append(exc)
            exc = exc.__cause__
        probe = not chain or isinstance(chain[-1], EOFError | TimeoutError)
        error = "; ".join(f"{type(e).__name__}: {e}" for e in chain) or None
        if not probe:
            self.gateway.metrics.count_rejection("invalid_request")
        self.log(logging.DEBUG if probe else logging.WARNING, "handshake_failed", error=error)

    # Its life as a WebSocket, from the 101 to its close

    async def handle(self) -> None:
        """What the server runs for the connection once it is open (the ``handler`` of
        ``serve``): count and log its opening, :meth:`converse`, count and log its end."""
        gateway, metrics = self.gateway, self.gateway.metrics
        loop = asyncio.get_running_loop()
        self.opened_at = loop.time()
        gateway.connections.add(self)
        metrics.connections_total += 1
        per_client = metrics.client_connections
        per_client[self.client] = per_client.get(self.client, 0) + 1
        self.log(
            logging.INFO,
            "connection_open",
            peer=self.peer,
            path=self.path,
            request_id=self.request_id,
            compression=bool(self.protocol.extensions),
        )
        try:
            if metrics.draining:  # opened while the drain started: close it too
                await self.close_discarding(CloseCode.GOING_AWAY, SHUTDOWN_REASON)
                return
            if gateway.config.ping_interval > 0:
                self.ping_due = self.opened_at + gateway.config.ping_interval
            await self.converse()
        except ConnectionClosed:
            pass
        except Exception as exc:  # a bug: log it once, end this connection, keep serving
            self.drop_reason = "internal_error"
            log_event(
                logger,
                logging.ERROR,
                "connection_error",
                conn=self.conn_id,
                error=describe(exc),
                traceback="".join(traceback.format_exception(exc)).rstrip(),
            )
            await self.close_discarding(CloseCode.INTERNAL_ERROR, "internal error")
        finally:
            if self.protocol.state is not CLOSED:  # only when cancelled: don't leak the socket
                self.transport.abort()
            gateway.connections.discard(self)
            left = per_client[self.client] - 1
            if left:
                per_client[self.client] = left
            else:
                del per_client[self.client]
            self.log_closed(loop.time())

    async def converse(self) -> None:
        """Exchange messages until the connection closes: the echo, or the application's."""
        raise NotImplementedError

    async def close_discarding(self, code: int, reason: str) -> None:
        """Close with ``code`` from the handler, discarding what the peer sent meanwhile.

        Reading the receive queue empty is what lets the peer's close frame in: with more
        than ``max_queue`` frames queued the library has stopped reading the socket. If
        even that stalls (a peer that does not read), abort after ``close_timeout``.
        """
        closing = asyncio.get_running_loop().create_task(self.close(code, reason))
        try:
            async with asyncio.timeout(self.gateway.config.close_timeout + 1.0):
                with contextlib.suppress(ConnectionClosed):
                    while True:
                        await self.recv()
                await closing
        except TimeoutError:
            self.transport.abort()
            closing.cancel()
            await self.wait_closed()

    def log_closed(self, now: float) -> None:
        """Count and log the end of a connection: one line, level by close code."""
        m = self.gateway.metrics
        if self.protocol.state is CLOSED:
            code, reason, closed_by = close_info(self)
        else:  # pragma: no cover - aborted just above; connection_lost not yet run
            code, reason, closed_by = CloseCode.ABNORMAL_CLOSURE, "", "server"
        m.count_close(code)
        normal = code in NORMAL_CLOSE_CODES
        fields: dict[str, Any] = {}
        if not normal:
            cause = self.protocol.parser_exc or self.connection_exc
            if cause is not None:
                fields["error"] = f"{type(cause).__name__}: {cause}"
            if closed_by != "client":
                m.count_error(self.drop_reason or ERROR_KINDS.get(code, "other"))
        if self.drop_reason is not None:
            fields["drop_reason"] = self.drop_reason
        self.log(
            logging.INFO if normal else logging.WARNING,
            "connection_closed",
            code=int(code),
            reason=reason,
            closed_by=closed_by,
            duration_s=round(now - self.opened_at, 3),
            msgs_in=self.msgs_in,
            msgs_out=self.msgs_out,
            bytes_in=self.bytes_in,
            bytes_out=self.bytes_out,
            request_id=self.request_id,
            **fields,
        )


def _nothing() -> None:
    """What the receive queue calls to pause or resume reading once the socket is gone."""


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
