"""The application's handler (WS_HANDLER) behind the gateway: its connection counts, logs
and rate-limits the messages the handler receives and sends, as the echo does its own."""

from __future__ import annotations

import logging
from typing import Any

from websockets.frames import CloseCode

from .connection import RATE_LIMIT_REASON, GatewayConnection, logger
from .logs import preview


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

    async def converse(self) -> None:
        """Run the application's handler; once it returns, close as ``serve()`` does, with
        1000 (at once if it closed already)."""
        assert self.gateway.handler is not None
        try:
            await self.gateway.handler(self)
        finally:
            self.handler_running = False
        await self.close_discarding(CloseCode.NORMAL_CLOSURE, "")

    async def recv(self, decode: bool | None = None) -> Any:  # type: ignore[override]
        message = await super().recv(decode)
        if self.drop_reason is not None or not self.handler_running:
            return message  # read by the gateway while it closes: not the handler's
        self.count(message, received=True)
        rate = self.gateway.config.max_messages_per_second
        if rate:
            now = self.loop.time()
            self.tokens = min(max(rate, 1.0), self.tokens + (now - self.refilled) * rate)
            self.refilled = now
            if self.tokens < 1.0:
                self.drop_reason = "rate_limited"
                await self.close_discarding(CloseCode.POLICY_VIOLATION, RATE_LIMIT_REASON)
                return await super().recv(decode)  # raises ConnectionClosedError (1008)
            self.tokens -= 1.0
        return message

    async def send(self, message: Any, text: bool | None = None) -> None:  # type: ignore[override]
        await super().send(message, text=text)
        if isinstance(message, str | bytes | bytearray | memoryview):
            self.count(message, received=False, text=text)

    def count(self, message: Any, *, received: bool, text: bool | None = None) -> None:
        """Count (and log, with WS_LOG_MESSAGES) one message the handler received or sent."""
        m = self.gateway.metrics
        is_text = type(message) is str if text is None else text
        size = len(message.encode()) if type(message) is str else len(message)
        counts = m.text if is_text else m.binary
        if received:
            m.observe_size(size)
            counts.msgs_in += 1
            counts.bytes_in += size
            self.msgs_in += 1
            self.bytes_in += size
            seq = self.msgs_in
        else:
            counts.msgs_out += 1
            counts.bytes_out += size
            self.msgs_out += 1
            self.bytes_out += size
            seq = self.msgs_out
        if self.gateway.config.log_messages and logger.isEnabledFor(logging.INFO):
            self.gateway.log_message(
                "message_received" if received else "message_sent",
                self.conn_id,
                seq,
                "text" if is_text else "binary",
                size,
                preview(message if type(message) in (str, bytes) else bytes(message)),
            )
