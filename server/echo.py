"""The echo: every message back to its sender with its frame type, one at a time.

This is the per-message path of the gateway, written for speed: what it reads of the
connection and the gateway is bound to locals once per connection, the counters are
plain attribute additions (no call per message), and an echo with room in the write
buffer is written synchronously.

Backpressure: once the write buffer is over its high-water mark (``write_limit``), the
next echo goes through ``send``, which waits until the peer reads; meanwhile nothing is
received, the receive queue fills to ``max_queue`` frames and the library stops reading
the socket. At most the write limit plus two messages are buffered for sending, plus the
receive queue.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from websockets.asyncio.server import broadcast
from websockets.frames import CloseCode
from websockets.protocol import OPEN

from .connection import RATE_LIMIT_REASON, GatewayConnection, logger
from .logs import MessageLogBudget, preview


class EchoConnection(GatewayConnection):
    """A connection whose messages are echoed (no WS_HANDLER)."""

    __slots__ = ()

    async def converse(self) -> None:
        """Echo each message with its frame type, one at a time (backpressure: above)."""
        self.forget_handshake_headers()
        recv, conns, protocol = self.recv, (self,), self.protocol
        config, m = self.gateway.config, self.gateway.metrics
        text, binary, observe_size = m.text, m.binary, m.observe_size
        log_messages = config.log_messages and logger.isEnabledFor(logging.INFO)
        # Bounded per connection (WS_LOG_MESSAGES_PER_SECOND): one flooder's lines must not
        # push every other connection's lines out of the log buffer and the rotated files.
        log_message = MessageLogBudget(
            self.gateway.log_message, logger, self.conn_id, config.log_messages_per_second
        )
        rate = config.max_messages_per_second
        clock = asyncio.get_running_loop().time
        # The bucket holds one second's worth, and never less than one message, so a rate
        # below 1/s still lets a message through once per 1/rate seconds.
        burst = max(rate, 1.0)
        tokens, last = burst, clock()
        msgs_in = msgs_out = bytes_in = bytes_out = 0
        try:
            while True:
                message = await recv()
                if msgs_in and not self.reads_echoes and not self.transport.get_write_buffer_size():
                    self.reads_echoes = True
                if type(message) is str:
                    is_text, counts = True, text
                    size = len(message) if message.isascii() else len(message.encode())
                else:
                    is_text, counts = False, binary
                    size = len(message)
                counts.msgs_in += 1
                counts.bytes_in += size
                observe_size(size)
                msgs_in += 1
                bytes_in += size
                # The message is held until the next one is received (``message`` keeps it),
                # and its echo's serialized frame as long as the write buffer holds any of
                # it: held_bytes counts it here, not where it was in the receive queue.
                self.inflight = size
                if rate:
                    now = clock()
                    tokens = min(burst, tokens + (now - last) * rate)
                    last = now
                    if tokens < 1.0:
                        self.drop_reason = "rate_limited"
                        await self.close_discarding(CloseCode.POLICY_VIOLATION, RATE_LIMIT_REASON)
                        return
                    tokens -= 1.0
                # One line per message: message_echoed once it is echoed, message_received
                # if it never is (the connection closes first).
                echoed = False
                try:
                    if self.paused or protocol.state is not OPEN:
                        if not await self.echo_held_back(message):
                            continue
                    else:
                        # Room in the write buffer: write now, synchronously. broadcast()
                        # to one connection is send() without its per-message async
                        # context manager, about 1 us less CPU per message.
                        broadcast(conns, message, raise_exceptions=True)
                    echoed = True
                finally:
                    if log_messages:
                        kind = "text" if is_text else "binary"
                        event = "message_echoed" if echoed else "message_received"
                        log_message(event, self.conn_id, msgs_in, kind, size, preview(message))
                counts.msgs_out += 1
                counts.bytes_out += size
                msgs_out += 1
                bytes_out += size
        finally:
            log_message.close()
            self.msgs_in, self.msgs_out = msgs_in, msgs_out
            self.bytes_in, self.bytes_out = bytes_in, bytes_out

    def forget_handshake_headers(self) -> None:
        """What the echo needs from the handshake is on the connection now. Emptied in place:
        the library keeps the request for the connection's life (``request``, and a local of
        its suspended parser), about 2.7 KiB of header strings per idle connection."""
        self.request.headers.clear()  # type: ignore[union-attr]
        self.response.headers.clear()  # type: ignore[union-attr]

    async def echo_held_back(self, message: Any) -> bool:
        """Echo ``message`` past a full write buffer or a closing handshake; False if it is
        not to be echoed at all."""
        if self.gateway.metrics.draining and self.protocol.state is not OPEN:
            # We sent 1001: read on to reach the peer's close frame, echo no more (send
            # would wait for the close, the queue stay full).
            return False
        # Write buffer over its high-water mark: send() writes, then waits until the peer
        # reads; meanwhile nothing more is read from it, and the message is held twice
        # (here and in the write buffer).
        await self.send(message)
        return True
