"""The WebSocket wire package (stack.wire): frames, masking, close payloads, the handshake."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import pytest

from server.app import Gateway
from stack.bench.leanclient import Stats, connect
from stack.wire.frames import (
    OP_BINARY,
    OP_CLOSE,
    OP_PING,
    OP_TEXT,
    ZERO_KEY,
    Frame,
    ProtocolError,
    apply_mask,
    close_payload,
    decode,
    encode,
    parse_close,
    read_frame,
)
from stack.wire.handshake import HandshakeError, accept_for, check_response
from stack.wire.raw import RawWebSocket

from .helpers import ROOT, RawClient, units

pytestmark = pytest.mark.unit

KEY = b"\x37\xfa\x21\x3d"


@pytest.mark.parametrize(("size", "header"), [(0, 2), (125, 2), (126, 4), (65535, 4), (65536, 10)])
def test_encode_decode_round_trip_at_each_length_boundary(size: int, header: int):
    """A masked frame decodes to what was encoded; the length field grows at 126 and 65536."""
    payload = bytes(i % 251 for i in range(size))
    data = encode(OP_BINARY, payload, mask_key=KEY)
    assert len(data) == header + 4 + size
    assert decode(data) == (Frame(True, OP_BINARY, payload), len(data))
    assert decode(data[:-1] if size else data[:1]) is None  # incomplete


def test_masking_is_the_rfc_example_and_its_own_inverse():
    """RFC 6455 5.7: "Hello" masked with 37 fa 21 3d; masking twice gives the payload back."""
    data = encode(OP_TEXT, b"Hello", mask_key=KEY)
    assert data == bytes.fromhex("818537fa213d7f9f4d5158")
    assert apply_mask(apply_mask(b"Hello", KEY), KEY) == b"Hello"
    assert apply_mask(b"Hello", ZERO_KEY) == b"Hello"
    assert encode(OP_TEXT, b"Hello")[2:6] != encode(OP_TEXT, b"Hello")[2:6]  # random keys


def test_unmasked_fragmented_reserved_and_lying_frames_are_written_as_asked():
    """What a well-behaved client never sends: no mask, no FIN, RSV bits, a wrong length."""
    assert encode(OP_TEXT, b"Hello", mask=False) == bytes.fromhex("810548656c6c6f")
    assert encode(OP_TEXT, b"ab", fin=False, mask=False)[0] == OP_TEXT
    assert encode(OP_TEXT, b"ab", rsv=0b100, mask=False)[0] == 0x80 | 0x40 | OP_TEXT
    assert encode(OP_BINARY, b"ab", mask=False, length=70000)[1:10] == bytes([127]) + (
        70000
    ).to_bytes(8, "big")
    assert decode(encode(OP_TEXT, b"ab", fin=False)) == (Frame(False, OP_TEXT, b"ab"), 8)


def test_close_payloads():
    """A close payload is the code then the UTF-8 reason; an empty one means 1005."""
    assert close_payload(1001, "going away") == b"\x03\xe9going away"
    assert parse_close(close_payload(4000, "app says bye é")) == (4000, "app says bye é")
    assert parse_close(b"") == (1005, "")
    assert decode(encode(OP_CLOSE, close_payload(1000)))[0].payload == b"\x03\xe8"


async def test_read_frame_reads_server_frames_and_refuses_masked_ones():
    """A stream yields its unmasked server frames in order; a masked server frame is refused."""
    reader = asyncio.StreamReader()
    reader.feed_data(encode(OP_PING, b"p", mask=False) + encode(OP_TEXT, b"x" * 300, mask=False))
    reader.feed_data(encode(OP_TEXT, b"masked", mask_key=KEY))
    assert await read_frame(reader) == (True, OP_PING, b"p")
    assert await read_frame(reader) == (True, OP_TEXT, b"x" * 300)
    with pytest.raises(ProtocolError):
        await read_frame(reader)


def test_handshake_answer_is_checked():
    """Only a 101 with the right Sec-WebSocket-Accept passes (RFC 6455 4.2.2 example key)."""
    key = b"dGhlIHNhbXBsZSBub25jZQ=="
    assert accept_for(key) == b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
    good = b"HTTP/1.1 101 Switching Protocols\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
    assert check_response(good + b"\r\n\r\n", key) == 101
    bad = [
        (b"HTTP/1.1 429 Too Many Requests\r\nContent-Length: 0\r\n\r\n", 429),
        (b"HTTP/1.1 101 Switching Protocols\r\nSec-WebSocket-Accept: AAAA\r\n\r\n", 101),
        (b"\x00garbage\r\n\r\n", 0),
    ]
    for head, status in bad:
        with pytest.raises(HandshakeError) as failed:
            check_response(head, key)
        assert failed.value.status == status


async def test_raw_client_refuses_a_bad_handshake_answer_unless_told_to_keep_it(gateway: Gateway):
    """On a path that is not a WebSocket the gateway answers 404: strict raises, lax keeps it."""
    with pytest.raises(HandshakeError) as failed:
        await RawClient.connect(gateway.port, path="/nope")
    assert failed.value.status == 404
    lax = await RawWebSocket.open("127.0.0.1", gateway.port, path="/nope", within=units(5))
    try:
        assert lax.status == 404
    finally:
        await lax.close()


async def test_raw_client_round_trip_through_the_gateway(gateway: Gateway):
    """A frame written by stack.wire comes back echoed, and a close is answered with its code."""
    raw = await RawClient.connect(gateway.port)
    try:
        await raw.send_frame(OP_BINARY, b"\x00\x01" * 40000)
        assert await raw.read_frame() == (True, OP_BINARY, b"\x00\x01" * 40000)
        await raw.send_frame(OP_CLOSE, close_payload(1000, "done"))
        assert await raw.read_close() == (1000, "done")
        assert await raw.wait_eof()
    finally:
        await raw.close()


async def test_lean_bench_client_echoes_and_reports_a_refused_handshake(gateway: Gateway):
    """The bench's client opens through stack.wire's handshake and sees its echo intact."""
    stats = Stats()
    client = await connect("127.0.0.1", gateway.port, stats, within=units(5))
    try:
        client.set_message("héllo")
        async with asyncio.timeout(units(5)):
            assert await client.echo_once()
    finally:
        client.close()
        async with asyncio.timeout(units(5)):
            await client.closed
    with pytest.raises(HandshakeError) as failed:
        await connect("127.0.0.1", gateway.port, stats, path="/nope", within=units(5))
    assert failed.value.status == 404
    assert stats.mismatches == 0 and stats.errors == {}


def test_unit_helpers_import_neither_docker_nor_testcontainers():
    """The unit tests run without Docker: their helpers pull in no Docker client library."""
    probe = (
        "import sys, tests.unit.helpers, stack.echo_client.fleet, stack.bench.leanclient;"
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'docker', 'testcontainers'}))"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert done.stdout.strip() == "[]", done.stderr
