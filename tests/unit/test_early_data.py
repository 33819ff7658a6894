"""Bytes sent after a handshake request but before its answer (NGINX bypassed).

A client should wait for the answer; one that pipelines requests, or sends frames before the
101, gets its first request answered and the rest handled in order, never an ERROR line
from inside the library (websockets 17.4 asserted ``not self.eof_sent``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import pytest

from server.app import Gateway
from server.http import EARLY_DATA_LIMIT, request_end
from stack.wire import frames, handshake

from .conftest import LogEvents
from .helpers import units, wait_until

pytestmark = pytest.mark.unit


def healthz(port: int) -> bytes:
    return f"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode()


def upgrade(port: int) -> bytes:
    return handshake.request("/ws", f"127.0.0.1:{port}", handshake.new_key())


async def exchange(port: int, data: bytes, *, pieces: int = 1) -> bytes:
    """Send ``data`` (in ``pieces`` writes), then everything the server sends until it closes."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        step = -(-len(data) // pieces)
        for start in range(0, len(data), step):
            writer.write(data[start : start + step])
            await writer.drain()
        async with asyncio.timeout(units(5)):
            return await reader.read()
    finally:
        writer.close()


def no_errors(caplog: pytest.LogCaptureFixture) -> None:
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert not errors, errors


@pytest.mark.parametrize("pieces", [1, 3], ids=["one-write", "split"])
async def test_two_pipelined_requests_get_the_first_answered_then_close(
    gateway: Gateway, log_events: LogEvents, pieces: int
):
    """Two /healthz in one go: 200 with Connection: close for the first, then EOF; no ERROR."""
    answer = await exchange(gateway.port, healthz(gateway.port) * 2, pieces=pieces)
    assert answer.startswith(b"HTTP/1.1 200 OK\r\n"), answer
    assert b"Connection: close\r\n" in answer
    assert answer.count(b"HTTP/1.1 ") == 1
    no_errors(log_events.caplog)


async def test_a_request_pipelined_after_an_upgrade_is_a_protocol_error_of_the_client(
    gateway: Gateway, log_events: LogEvents
):
    """An HTTP request after the upgrade is read as a frame once the 101 is out: 1002."""
    answer = await exchange(gateway.port, upgrade(gateway.port) + healthz(gateway.port))
    head, _, rest = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 101 ")
    frame, _ = frames.decode(rest)
    assert frame.opcode == frames.OP_CLOSE
    assert frames.parse_close(frame.payload)[0] == 1002
    no_errors(log_events.caplog)


async def test_frames_sent_before_the_101_are_echoed_in_order(gateway: Gateway):
    """A client that does not wait for the 101 loses nothing: its early frames come back."""
    early = b"".join(frames.encode(frames.OP_TEXT, f"early-{i}".encode()) for i in range(3))
    reader, writer = await asyncio.open_connection("127.0.0.1", gateway.port)
    try:
        writer.write(upgrade(gateway.port) + early)
        async with asyncio.timeout(units(5)):
            head = await reader.readuntil(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 101 ")
            received, echoes = b"", []
            while len(echoes) < 3:
                received += await reader.read(4096)
                while (decoded := frames.decode(received)) is not None:
                    frame, used = decoded
                    echoes.append(frame.payload)
                    received = received[used:]
        assert echoes == [b"early-0", b"early-1", b"early-2"]
    finally:
        writer.close()


async def test_a_client_that_floods_before_its_answer_is_dropped(
    gateway: Gateway, log_events: LogEvents
):
    """More than EARLY_DATA_LIMIT bytes before the answer: the connection is dropped."""
    flood = upgrade(gateway.port) + b"x" * (EARLY_DATA_LIMIT + 1)
    reader, writer = await asyncio.open_connection("127.0.0.1", gateway.port)
    try:
        writer.write(flood)
        async with asyncio.timeout(units(5)):  # closed (reset or EOF) within the deadline
            with contextlib.suppress(ConnectionResetError):
                while await reader.read(65536):
                    pass
    finally:
        writer.close()
    await wait_until(lambda: not gateway.sockets, what="the socket to be gone")
    no_errors(log_events.caplog)


@pytest.mark.parametrize(
    ("buffered", "data", "end"),
    [
        (b"", b"GET / HTTP/1.1\r\n\r\n", 18),
        (b"", b"GET / HTTP/1.1\r\n\r\nGET", 18),
        # The parser consumed the last header line: only the blank line is left to come.
        (b"", b"\r\nrest", 2),
        (b"\r", b"\nrest", 1),
        (b"Host: x\r", b"\n\r\nrest", 3),
        (b"", b"GET / HTTP/1.1\r\nHost: x\r\n", -1),
        (b"Host: x", b"\r\nUser-Agent: y\r\n", -1),
    ],
)
def test_request_end_finds_the_blank_line_across_reads(buffered: bytes, data: bytes, end: int):
    """The blank line that ends a request header is found even when it spans two reads."""
    assert request_end(buffered, data) == end
