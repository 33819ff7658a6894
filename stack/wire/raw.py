"""WebSocket on a raw TCP stream: send what a well-behaved client library never would.

    conn = await RawWebSocket.open("127.0.0.1", 8080, request_id="bad-utf8")
    await conn.send(encode(OP_TEXT, b"\\xff\\xfe"))          # invalid UTF-8
    code, reason = await conn.read_close(within=5)           # (1007, "...")

Frames and the handshake come from ``stack.wire.frames`` and ``stack.wire.handshake``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from stack.wire.frames import OP_CLOSE, Frame, encode, parse_close, read_frame
from stack.wire.handshake import check_response, new_key, parse_response, request


class RawWebSocket:
    """A TCP connection that did the opening handshake by hand.

    ``timeout`` (seconds) is the default of every read's ``within``.
    """

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        response: bytes,
        timeout: float = 5,
    ) -> None:
        self.reader = reader
        self.writer = writer
        self.response = response
        self.timeout = timeout

    @property
    def status(self) -> int:
        return parse_response(self.response)[0]

    @property
    def sock(self) -> Any:
        return self.writer.get_extra_info("socket")

    @classmethod
    async def open(
        cls,
        host: str,
        port: int,
        *,
        path: str = "/ws",
        host_header: str = "127.0.0.1",
        headers: Mapping[str, str] | None = None,
        request_id: str | None = None,
        within: float = 5,
        strict: bool = False,
    ) -> RawWebSocket:
        """Connect and send the upgrade request; ``strict``: HandshakeError unless a valid 101.

        Not strict, any answer is kept (``status``, ``response``) for the caller to judge.
        """
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), within)
        key = new_key()
        extra = {**(headers or {}), **({"X-Request-ID": request_id} if request_id else {})}
        try:
            async with asyncio.timeout(within):
                writer.write(request(path, host_header, key, extra))
                await writer.drain()
                response = await reader.readuntil(b"\r\n\r\n")
            if strict:
                check_response(response, key)
        except BaseException:
            writer.close()
            raise
        return cls(reader, writer, response, within)

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def send_frame(self, opcode: int, payload: bytes = b"", **options: Any) -> None:
        """One client frame; ``options`` as ``stack.wire.frames.encode`` takes them."""
        await self.send(encode(opcode, payload, **options))

    async def read_frame(self, within: float | None = None) -> Frame:
        """The next frame from the server (unmasked) within ``within`` seconds."""
        async with asyncio.timeout(self.timeout if within is None else within):
            return await read_frame(self.reader)

    async def read_close(self, within: float | None = None) -> tuple[int | None, str]:
        """Read frames until a close frame: its (code, reason); (None, why) if none came."""
        within = self.timeout if within is None else within
        try:
            async with asyncio.timeout(within):
                while True:
                    frame = await read_frame(self.reader)
                    if frame.opcode == OP_CLOSE:
                        return parse_close(frame.payload)
        except asyncio.IncompleteReadError:
            return None, "connection closed without a close frame"
        except TimeoutError:  # before OSError, of which it is a subclass
            return None, f"no close frame within {within:g} s"
        except OSError as e:
            return None, f"{type(e).__name__}"

    async def wait_eof(self, within: float | None = None) -> bool:
        """True when the peer closed the TCP connection within ``within`` seconds."""
        try:
            async with asyncio.timeout(self.timeout if within is None else within):
                while await self.reader.read(65536):
                    pass
        except TimeoutError:  # before OSError, of which it is a subclass
            return False
        except OSError:
            return True
        return True

    def abort(self) -> None:
        """Drop the TCP connection at once (RST), whatever is still buffered."""
        self.writer.transport.abort()

    async def close(self) -> None:
        """Close the TCP connection (FIN); reset it if it is not gone within ``timeout``."""
        self.writer.close()
        try:
            async with asyncio.timeout(self.timeout):
                await self.writer.wait_closed()
        except TimeoutError:  # the peer reads nothing: what we still buffer would never go
            self.abort()
        except OSError:  # reset by the server first
            pass
