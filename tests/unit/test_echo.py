"""The echo itself: every message back at once, unmodified, with its frame type."""

from __future__ import annotations

import asyncio
import gc
import os
import random
import socket
import threading
import weakref

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosedError

from server.app import Gateway

from .conftest import LogEvents
from .helpers import (
    MIB,
    OP_BINARY,
    OP_CONT,
    OP_TEXT,
    RawClient,
    running_gateway,
    units,
    wait_until,
)

pytestmark = pytest.mark.unit


async def echo(ws, message):
    await ws.send(message)
    async with asyncio.timeout(units(5)):
        return await ws.recv()


def assert_same(sent, received):
    assert type(received) is type(sent)
    assert received == sent


@pytest.mark.parametrize(
    "message",
    [
        "hello",
        b"\x00\x01\x02\xff",
        "",
        b"",
        "näïve ☃ 𝄞 \u2028 \x00",
        bytes(range(256)),
    ],
    ids=["text", "binary", "empty-text", "empty-binary", "unicode", "all-bytes"],
)
@pytest.mark.parametrize("path", ["/ws", "/"])
async def test_echo_keeps_payload_and_frame_type(gateway: Gateway, message, path):
    """Text comes back as text and binary as binary, byte for byte, empty ones included."""
    url = gateway.url.removesuffix("/ws") + path
    async with connect(url) as ws:
        assert_same(message, await echo(ws, message))


async def test_exactly_max_size_is_echoed(gateway: Gateway):
    """A 1 MiB binary message and a 1 MiB (UTF-8 bytes) text message are echoed whole."""
    binary = os.urandom(MIB)
    text = "é" * (MIB // 2)  # 2 bytes each: exactly 1 MiB encoded
    assert len(text.encode()) == MIB
    async with connect(gateway.url, max_size=None) as ws:
        assert_same(binary, await echo(ws, binary))
        assert_same(text, await echo(ws, text))


@pytest.mark.parametrize("kind", ["binary", "text"])
async def test_one_byte_over_max_size_closes_with_1009(
    gateway: Gateway, log_events: LogEvents, kind
):
    """1 MiB + 1 byte closes that connection with 1009, logged once as a warning."""
    message = b"x" * (MIB + 1) if kind == "binary" else "x" * (MIB + 1)
    async with connect(gateway.url, max_size=None) as bystander, connect(gateway.url) as ws:
        await ws.send(message)
        with pytest.raises(ConnectionClosedError) as raised:
            await ws.recv()
        assert raised.value.rcvd is not None and raised.value.rcvd.code == 1009
        assert_same("still here", await echo(bystander, "still here"))
    await wait_until(
        lambda: log_events("connection_closed") and len(log_events("connection_closed")) == 2
    )
    closed = log_events.one("connection_closed", code=1009)
    assert closed["level"] == "WARNING"
    assert closed["closed_by"] == "server"
    assert "PayloadTooBig" in closed["error"]
    assert gateway.metrics.closes[1009] == 1
    assert gateway.metrics.errors["message_too_big"] == 1


async def test_fragmented_message_is_reassembled_and_echoed_whole(gateway: Gateway):
    """A message sent in fragments is echoed as one message of the same type."""
    async with connect(gateway.url) as ws:
        await ws.send(["frag", "ment", "ed ☃"])
        assert_same("fragmented ☃", await ws.recv())
        await ws.send([b"\x00" * 10, b"\x01" * 20])
        assert_same(b"\x00" * 10 + b"\x01" * 20, await ws.recv())


async def test_fragmented_frames_come_back_as_one_unfragmented_frame(gateway: Gateway):
    """On the wire: three fragments in, one final frame with the first opcode out."""
    raw = await RawClient.connect(gateway.port)
    try:
        await raw.send_frame(OP_TEXT, b"ab", fin=False, mask_key=b"\x01\x02\x03\x04")
        await raw.send_frame(OP_CONT, b"cd", fin=False, mask_key=b"\x05\x06\x07\x08")
        await raw.send_frame(OP_CONT, b"ef", fin=True)
        assert await raw.read_frame() == (True, OP_TEXT, b"abcdef")
        await raw.send_frame(OP_BINARY, b"\xff", fin=False)
        await raw.send_frame(OP_CONT, b"\xfe", fin=True)
        assert await raw.read_frame() == (True, OP_BINARY, b"\xff\xfe")
    finally:
        await raw.close()


async def test_limit_applies_to_the_reassembled_message(gateway: Gateway):
    """Fragments of 512 KiB each: two are echoed as 1 MiB, one byte more is 1009."""
    half = b"\x07" * (MIB // 2)
    async with connect(gateway.url, max_size=None) as ws:
        await ws.send([half, half])
        assert_same(half + half, await ws.recv())
        await ws.send([half, half, b"!"])
        with pytest.raises(ConnectionClosedError) as raised:
            await ws.recv()
        assert raised.value.rcvd is not None and raised.value.rcvd.code == 1009


async def test_hundred_concurrent_clients_get_every_byte_back(gateway: Gateway):
    """100 clients at once, each with its own mixed messages; every byte is checked."""
    rng = random.Random(1234)
    plans = [
        [
            (
                rng.randbytes(rng.randrange(0, 8192))
                if rng.random() < 0.5
                else "".join(
                    chr(rng.choice([rng.randrange(32, 127), rng.randrange(160, 0x2FFF)]))
                    for _ in range(rng.randrange(0, 2048))
                )
            )
            for _ in range(20)
        ]
        for _ in range(100)
    ]

    async def client(messages):
        async with connect(gateway.url) as ws:
            for message in messages:
                assert_same(message, await echo(ws, message))
        return len(messages)

    async with asyncio.timeout(units(30)):
        counts = await asyncio.gather(*(client(plan) for plan in plans))
    assert sum(counts) == 2000
    m = gateway.metrics
    assert m.text.msgs_in + m.binary.msgs_in == 2000 == m.text.msgs_out + m.binary.msgs_out
    assert m.connections_total == 100
    sent_bytes = sum(len(x.encode()) if isinstance(x, str) else len(x) for p in plans for x in p)
    assert m.text.bytes_in + m.binary.bytes_in == sent_bytes


async def test_a_burst_of_connections_waits_in_the_listen_queue(gateway: Gateway):
    """While the event loop is busy, 300 new connections complete their TCP handshake in
    the kernel's listen queue (LISTEN_BACKLOG) and are accepted once it runs again. With
    asyncio's default backlog of 100 the rest had their SYNs dropped: each connect waited
    for a retransmission 1 s later (a ramp through NGINX lost a quarter of its handshakes
    to that)."""
    loop = asyncio.get_running_loop()
    queued = threading.Event()

    def connect_all() -> list[socket.socket]:
        sockets: list[socket.socket] = []
        try:
            for _ in range(300):  # each within less than a SYN retransmission
                sockets.append(socket.create_connection(("127.0.0.1", gateway.port), 0.5))
        finally:
            queued.set()
        return sockets

    connecting = loop.run_in_executor(None, connect_all)
    assert queued.wait(units(10))  # blocks the loop: nothing is accepted meanwhile
    sockets = await connecting
    try:
        await wait_until(lambda: len(gateway.sockets) == 300, what="all 300 accepted")
    finally:
        for sock in sockets:
            sock.close()


async def test_pipelined_messages_are_echoed_in_order(gateway: Gateway):
    """Many messages sent before reading any come back complete and in order."""
    messages = [f"msg {i}" if i % 2 else i.to_bytes(4, "big") for i in range(500)]
    async with connect(gateway.url) as ws:
        for message in messages:
            await ws.send(message)
        async with asyncio.timeout(units(10)):
            received = [await ws.recv() for _ in messages]
    for sent, got in zip(messages, received, strict=True):
        assert_same(sent, got)


async def test_compression_negotiated_and_limit_applies_to_decompressed_size():
    """With WS_COMPRESSION=on, deflate is negotiated and 1 MiB + 1 inflated bytes is 1009."""
    async with (
        running_gateway(WS_COMPRESSION="on") as gateway,
        connect(gateway.url, compression="deflate", max_size=None) as ws,
    ):
        assert ws.protocol.extensions, "permessage-deflate was not negotiated"
        text = "compress me " * 1000
        assert_same(text, await echo(ws, text))
        exact = b"\x00" * MIB
        assert_same(exact, await echo(ws, exact))
        await ws.send(b"\x00" * (MIB + 1))  # a few KiB on the wire
        with pytest.raises(ConnectionClosedError) as raised:
            await ws.recv()
        assert raised.value.rcvd is not None and raised.value.rcvd.code == 1009


async def test_compression_off_by_default(gateway: Gateway):
    """By default the server declines permessage-deflate (see the CPU measurements)."""
    async with connect(gateway.url, compression="deflate") as ws:
        assert not ws.protocol.extensions
        assert_same("plain", await echo(ws, "plain"))


async def test_a_closed_connection_is_freed_without_the_garbage_collector(gateway: Gateway):
    """Once closed (by the client or by the server), nothing of a connection waits for a
    full collection: with the collector off, every server-side connection object is freed
    by its reference count as soon as its handler ends."""
    gc.disable()
    try:
        clients = [await connect(gateway.url) for _ in range(20)]
        await wait_until(lambda: len(gateway.connections) == 20)
        refs = [weakref.ref(c) for c in gateway.connections]
        for ws in clients:
            assert await echo(ws, "freed") == "freed"
        for ws in clients[:10]:
            await ws.close()
        await wait_until(lambda: len(gateway.connections) == 10)
        for connection in list(gateway.connections):
            connection.drop("test", 1001, "the server ends it")
        del connection  # the loop's variable, not the server, would keep the last one
        for ws in clients[10:]:
            await ws.wait_closed()
        await wait_until(lambda: not gateway.connections and not gateway.sockets)
        await wait_until(lambda: all(ref() is None for ref in refs), what="connections freed")
    finally:
        gc.enable()
