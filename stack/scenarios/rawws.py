"""WebSocket on a raw TCP socket: send what a well-behaved client library never would.

    conn = await RawWebSocket.open("127.0.0.1", 8080, request_id="bad-utf8")
    await conn.send_frame(frame(OP_TEXT, b"\\xff\\xfe"))       # invalid UTF-8
    code, reason = await conn.read_close(within=5)           # (1007, "...")

Frames follow RFC 6455 section 5.2; client frames are masked unless asked otherwise.
"""

from __future__ import annotations

import asyncio
import base64
import os
import struct

OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA


def frame(
    opcode: int,
    payload: bytes,
    *,
    fin: bool = True,
    rsv: int = 0,
    mask: bool = True,
    mask_key: bytes | None = None,
    length: int | None = None,
) -> bytes:
    """One client frame, masked with ``mask_key`` (random when None) unless ``mask`` is off.

    ``length`` overrides the announced payload length (a lie, on purpose). An all-zero
    key is legal and leaves the payload bytes as they are (cheap for large floods).
    """
    announced = len(payload) if length is None else length
    head = bytearray([(0x80 if fin else 0) | (rsv & 0x7) << 4 | opcode])
    mask_bit = 0x80 if mask else 0
    if announced < 126:
        head.append(mask_bit | announced)
    elif announced < 2**16:
        head.append(mask_bit | 126)
        head += struct.pack("!H", announced)
    else:
        head.append(mask_bit | 127)
        head += struct.pack("!Q", announced)
    if not mask:
        return bytes(head) + payload
    key = os.urandom(4) if mask_key is None else mask_key
    if key != b"\x00\x00\x00\x00":
        payload = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
    return bytes(head) + key + payload


def close_payload(code: int, reason: str = "") -> bytes:
    return struct.pack("!H", code) + reason.encode()


class RawWebSocket:
    """A TCP connection that did the opening handshake by hand."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, response: bytes):
        self.reader = reader
        self.writer = writer
        self.response = response

    @property
    def status(self) -> int:
        return int(self.response.split(b" ", 2)[1])

    @classmethod
    async def open(
        cls,
        host: str,
        port: int,
        *,
        path: str = "/ws",
        host_header: str = "127.0.0.1",
        request_id: str | None = None,
        within: float = 5,
    ) -> RawWebSocket:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), within)
        key = base64.b64encode(os.urandom(16)).decode()
        lines = [
            f"GET {path} HTTP/1.1",
            f"Host: {host_header}",
            "Upgrade: websocket",
            "Connection: Upgrade",
            f"Sec-WebSocket-Key: {key}",
            "Sec-WebSocket-Version: 13",
        ]
        if request_id:
            lines.append(f"X-Request-ID: {request_id}")
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
        await writer.drain()
        response = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), within)
        return cls(reader, writer, response)

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def read_frame(self, within: float) -> tuple[int, bytes]:
        """(opcode, payload) of the next frame from the server (unmasked)."""

        async def read() -> tuple[int, bytes]:
            b0, b1 = await self.reader.readexactly(2)
            length = b1 & 0x7F
            if length == 126:
                (length,) = struct.unpack("!H", await self.reader.readexactly(2))
            elif length == 127:
                (length,) = struct.unpack("!Q", await self.reader.readexactly(8))
            key = await self.reader.readexactly(4) if b1 & 0x80 else b""
            payload = await self.reader.readexactly(length)
            if key:
                payload = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
            return b0 & 0x0F, payload

        return await asyncio.wait_for(read(), within)

    async def read_close(self, within: float) -> tuple[int | None, str]:
        """Read frames until a close frame: its (code, reason); (None, why) if none came."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        try:
            while True:
                opcode, payload = await self.read_frame(max(0.01, deadline - loop.time()))
                if opcode == OP_CLOSE:
                    if len(payload) < 2:
                        return 1005, ""
                    return struct.unpack("!H", payload[:2])[0], payload[2:].decode(errors="replace")
        except asyncio.IncompleteReadError:
            return None, "connection closed without a close frame"
        except (ConnectionError, OSError) as e:
            return None, f"{type(e).__name__}"
        except TimeoutError:
            return None, f"no close frame within {within:g} s"

    async def wait_eof(self, within: float) -> bool:
        """True when the peer closed the TCP connection within ``within``."""
        try:
            while await asyncio.wait_for(self.reader.read(65536), within):
                pass
        except TimeoutError:
            return False
        except (ConnectionError, OSError):
            return True
        return True

    def close(self) -> None:
        self.writer.close()
