"""WebSocket frames as RFC 6455 section 5.2 lays them out, seen from the client side.

    data = encode(OP_TEXT, b"hi")                     # final, masked with a random key
    frame, used = decode(data)                        # Frame(fin=True, opcode=1, payload=b'hi')
    frame = await read_frame(reader)                  # the next server frame of a stream

``encode`` can also write what a well-behaved client never would (reserved bits or
opcodes, no mask, a lying length): the scenarios and unit tests send those on purpose.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Generator
from typing import NamedTuple

OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA

# Legal, and leaves the payload as it is: cheap for large floods.
ZERO_KEY = b"\x00\x00\x00\x00"


class Frame(NamedTuple):
    fin: bool
    opcode: int
    payload: bytes


class ProtocolError(ValueError):
    """A frame the client side must not accept (a masked server frame)."""


def apply_mask(payload: bytes, key: bytes) -> bytes:
    """``payload`` XOR the repeated 4-byte ``key`` (its own inverse: unmasks too)."""
    n = len(payload)
    if n == 0 or key == ZERO_KEY:
        return bytes(payload)
    repeated = (key * (n // 4 + 1))[:n]
    return (int.from_bytes(payload, "big") ^ int.from_bytes(repeated, "big")).to_bytes(n, "big")


def encode(
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

    ``length`` overrides the announced payload length (a lie, on purpose).
    """
    announced = len(payload) if length is None else length
    head = bytearray([(0x80 if fin else 0) | (rsv & 0x7) << 4 | opcode])
    mask_bit = 0x80 if mask else 0
    if announced < 126:
        head.append(mask_bit | announced)
    elif announced < 2**16:
        head.append(mask_bit | 126)
        head += announced.to_bytes(2, "big")
    else:
        head.append(mask_bit | 127)
        head += announced.to_bytes(8, "big")
    if not mask:
        return bytes(head) + payload
    key = os.urandom(4) if mask_key is None else mask_key
    return bytes(head) + key + apply_mask(payload, key)


def close_payload(code: int, reason: str = "") -> bytes:
    """The payload of a close frame: the code, then the reason in UTF-8."""
    return code.to_bytes(2, "big") + reason.encode()


def parse_close(payload: bytes) -> tuple[int, str]:
    """(code, reason) of a close frame's payload; 1005 (no status) when it is empty."""
    if len(payload) < 2:
        return 1005, ""
    return int.from_bytes(payload[:2], "big"), payload[2:].decode(errors="replace")


def _parse() -> Generator[int, bytes, tuple[Frame, bool]]:
    """Parse one frame: yields how many bytes it needs next, returns (frame, was masked)."""
    b0, b1 = yield 2
    length = b1 & 0x7F
    if length == 126:
        length = int.from_bytes((yield 2), "big")
    elif length == 127:
        length = int.from_bytes((yield 8), "big")
    key = (yield 4) if b1 & 0x80 else b""
    payload = (yield length) if length else b""
    frame = Frame(bool(b0 & 0x80), b0 & 0x0F, apply_mask(payload, key) if key else bytes(payload))
    return frame, bool(key)


def decode(data: bytes) -> tuple[Frame, int] | None:
    """The first frame in ``data`` (unmasked) and how many bytes it took; None if incomplete."""
    parser = _parse()
    pos, need = 0, next(parser)
    try:
        while pos + need <= len(data):
            chunk, pos = data[pos : pos + need], pos + need
            need = parser.send(chunk)
    except StopIteration as done:
        return done.value[0], pos
    return None


async def read_frame(reader: asyncio.StreamReader) -> Frame:
    """The next frame the server sent on ``reader``; raise ProtocolError if it was masked."""
    parser = _parse()
    need = next(parser)
    try:
        while True:
            need = parser.send(await reader.readexactly(need))
    except StopIteration as done:
        frame, masked = done.value
    if masked:
        raise ProtocolError("a server frame must not be masked")
    return frame
