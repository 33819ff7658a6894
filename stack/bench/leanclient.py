"""A lean RFC 6455 client as an asyncio Protocol: the load generator's side of the wire.

Why not the ``websockets`` client: a load generator built on the library under test spends
as much CPU per message as the server it measures, so on a 2-core machine it would be the
bottleneck of every figure. This client does only what a benchmark needs:

* frames are built once per payload and connection (masked with the connection's own random
  key, as RFC 6455 requires of clients) and then written as prebuilt bytes;
* server frames are parsed in place in one receive buffer; each echoed message is checked
  byte for byte with ``bytearray.startswith`` (a memcmp, no copy). This parser is the hot
  path and stays inline here: ``stack.wire.frames.decode`` copies each payload, which is
  what a load generator must not spend its CPU on;
* pings are answered (the server's heartbeat keeps running during a benchmark), a close
  frame is answered and ends the connection.

Frames are encoded and the handshake checked with ``stack.wire``. Messages are single
frames (what ``websockets`` sends for str/bytes); a fragmented message from the server
counts as a protocol error, never as an echo.
"""

from __future__ import annotations

import asyncio
import os
from collections import deque
from collections.abc import Callable

from stack.wire.frames import OP_BINARY, OP_CLOSE, OP_PING, OP_PONG, OP_TEXT, close_payload, encode
from stack.wire.handshake import HandshakeError, check_response, new_key, request

HANDSHAKE, OPEN, CLOSED = 0, 1, 2


class Stats:
    """Counters shared by every connection of one client process."""

    __slots__ = ("bytes", "errors", "messages", "mismatches", "open", "pings")

    def __init__(self) -> None:
        self.open = 0  # connections open now (counted as they open and close, never summed)
        self.messages = 0
        self.bytes = 0
        self.mismatches = 0
        self.pings = 0
        self.errors: dict[str, int] = {}

    def error(self, kind: str) -> None:
        self.errors[kind] = self.errors.get(kind, 0) + 1


class WsClient(asyncio.Protocol):
    """One client connection. Modes: idle (answer pings), pipelined echo, timed echo.

    Pipelined (``start_pipeline``): ``inflight`` copies of one message are kept in flight;
    each echo that arrives intact is replaced by a new send in the same write.
    Timed (``send_timed``): each send records its time; the echo's arrival gives the round
    trip (echoes come back in order on one connection).
    """

    def __init__(self, stats: Stats, host_header: str, path: str = "/ws") -> None:
        self.stats = stats
        self.host_header = host_header
        self.path = path
        self.mask = os.urandom(4)
        self.key = new_key()
        self.state = HANDSHAKE
        self.buf = bytearray()
        self.transport: asyncio.Transport | None = None
        self.opened: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.closed_by_peer = False
        self.pings = 0  # heartbeats answered
        # What to expect and what to send back (pipelined mode).
        self.expect: bytes = b""
        self.expect_op = OP_BINARY
        self.frame: bytes = b""
        self.sending = False
        self.outstanding = 0
        # Timed mode: send times of messages in flight, and the round trips measured.
        self.sent_at: deque[float] = deque()
        self.rtts: list[float] | None = None
        self.clock: Callable[[], float] | None = None
        # Single echo checks (capacity samples, tests): futures completed in order.
        self.waiters: deque[asyncio.Future[bool]] = deque()

    # ---- asyncio.Protocol ------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.transport.write(
            request(self.path, self.host_header, self.key, {"User-Agent": "wsgw-bench"})
        )

    def connection_lost(self, exc: Exception | None) -> None:
        if self.state == HANDSHAKE and not self.opened.done():
            self.opened.set_exception(HandshakeError(0, f"connection lost: {exc!r}"))
        elif self.state == OPEN and not self.closed_by_peer and (self.sending or self.outstanding):
            self.stats.error("connection lost while echoing")
        self._closed()
        for waiter in self.waiters:
            if not waiter.done():
                waiter.set_result(False)
        if not self.closed.done():
            self.closed.set_result(None)

    def data_received(self, data: bytes) -> None:
        buf = self.buf
        buf += data
        if self.state == HANDSHAKE:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                if len(buf) > 16384:
                    self._fail_handshake(HandshakeError(0, "oversized response"))
                return
            self._handshake_done(bytes(buf[:end]))
            del buf[: end + 4]
            if self.state != OPEN:
                return
        self._parse(buf)

    # ---- handshake -------------------------------------------------------------------------
    def _handshake_done(self, head: bytes) -> None:
        try:
            check_response(head, self.key)
        except HandshakeError as e:
            self._fail_handshake(e)
            return
        self.state = OPEN
        self.stats.open += 1
        self.opened.set_result(None)

    def _fail_handshake(self, error: HandshakeError) -> None:
        self._closed()
        if not self.opened.done():
            self.opened.set_exception(error)
        self.transport.close()

    # ---- frames ----------------------------------------------------------------------------
    def _parse(self, buf: bytearray) -> None:
        pos, end = 0, len(buf)
        done = 0
        now = 0.0
        stats = self.stats
        while end - pos >= 2:
            b0, b1 = buf[pos], buf[pos + 1]
            length = b1 & 0x7F
            if length < 126:
                start = pos + 2
            elif length == 126:
                if end - pos < 4:
                    break
                length = (buf[pos + 2] << 8) | buf[pos + 3]
                start = pos + 4
            else:
                if end - pos < 10:
                    break
                length = int.from_bytes(buf[pos + 2 : pos + 10], "big")
                start = pos + 10
            stop = start + length
            if stop > end:
                break
            opcode = b0 & 0x0F
            if b1 & 0x80 or not b0 & 0x80:
                stats.error("masked or fragmented server frame")
                self._abort()
                return
            if opcode in (OP_BINARY, OP_TEXT):
                if self.rtts is not None:
                    if not now:
                        now = self.clock()
                    self.rtts.append(now - self.sent_at.popleft())
                if self.waiters:
                    waiter = self.waiters.popleft()
                    ok = (
                        opcode == self.expect_op
                        and length == len(self.expect)
                        and (buf.startswith(self.expect, start))
                    )
                    if not waiter.done():
                        waiter.set_result(ok)
                    if not ok:
                        stats.mismatches += 1
                elif (
                    opcode != self.expect_op
                    or length != len(self.expect)
                    or not (buf.startswith(self.expect, start))
                ):
                    stats.mismatches += 1
                done += 1
                stats.bytes += length
            elif opcode == OP_PING:
                stats.pings += 1
                self.pings += 1
                self.transport.write(encode(OP_PONG, bytes(buf[start:stop]), mask_key=self.mask))
            elif opcode == OP_CLOSE:
                self.closed_by_peer = True
                self._answer_close(bytes(buf[start:stop]))
                return
            elif opcode != OP_PONG:
                stats.error(f"unexpected opcode {opcode}")
            pos = stop
        if pos == end:
            buf.clear()
        elif pos:
            del buf[:pos]
        if done:
            stats.messages += done
            self.outstanding -= done
            if self.sending:
                self.transport.write(self.frame * done if done > 1 else self.frame)
                self.outstanding += done

    def _answer_close(self, payload: bytes) -> None:
        if self.state == OPEN:
            self.transport.write(encode(OP_CLOSE, payload[:2], mask_key=self.mask))
        self._closed()
        self.transport.close()

    def _abort(self) -> None:
        self._closed()
        self.transport.abort()

    def _closed(self) -> None:
        """The one way out of OPEN (and out of the handshake, after it failed)."""
        if self.state == OPEN:
            self.stats.open -= 1
        self.state = CLOSED

    # ---- what the load generator calls -----------------------------------------------------
    def set_message(self, payload: bytes | str) -> None:
        """The message to send and expect back (text when ``payload`` is a str)."""
        if isinstance(payload, str):
            self.expect, self.expect_op = payload.encode(), OP_TEXT
        else:
            self.expect, self.expect_op = bytes(payload), OP_BINARY
        self.frame = encode(self.expect_op, self.expect, mask_key=self.mask)

    def start_pipeline(self, inflight: int) -> None:
        self.sending = True
        self.outstanding += inflight
        self.transport.write(self.frame * inflight)

    def stop_pipeline(self) -> None:
        self.sending = False

    def send_timed(self, now: float) -> None:
        self.sent_at.append(now)
        self.outstanding += 1
        self.transport.write(self.frame)

    def echo_once(self) -> asyncio.Future[bool]:
        """Send the message once; the future says whether it came back intact."""
        waiter = asyncio.get_running_loop().create_future()
        if self.state != OPEN:
            waiter.set_result(False)
            return waiter
        self.waiters.append(waiter)
        self.outstanding += 1
        self.transport.write(self.frame)
        return waiter

    def close(self, code: int = 1000) -> None:
        """Start the closing handshake (the server answers and closes TCP)."""
        if self.state == OPEN and self.transport is not None:
            self._closed()
            self.transport.write(encode(OP_CLOSE, close_payload(code), mask_key=self.mask))
        elif self.transport is not None and not self.transport.is_closing():
            self.transport.close()


async def connect(
    host: str,
    port: int,
    stats: Stats,
    *,
    host_header: str = "localhost",
    path: str = "/ws",
    local_addr: tuple[str, int] | None = None,
    within: float = 10.0,
) -> WsClient:
    """Open a WebSocket; raise HandshakeError, OSError or TimeoutError."""
    loop = asyncio.get_running_loop()
    async with asyncio.timeout(within):
        _, client = await loop.create_connection(
            lambda: WsClient(stats, host_header, path), host, port, local_addr=local_addr
        )
        try:
            await client.opened
        except BaseException:
            if client.transport is not None:
                client.transport.abort()
            raise
    return client
