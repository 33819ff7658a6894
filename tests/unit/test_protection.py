"""Protection against peers that hog: rate limit, slow readers, silent peers."""

from __future__ import annotations

import asyncio
import contextlib
import socket

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosedError

from server.app import Gateway
from server.config import Config
from server.connection import GatewayConnection

from .conftest import LogEvents
from .helpers import (
    FRAME_PAYLOAD,
    OP_PING,
    ZERO_KEY,
    Flood,
    RawClient,
    encode,
    flood_until_closed,
    running_gateway,
    server_connection,
    units,
    wait_until,
)

pytestmark = pytest.mark.unit

WRITE_LIMIT = 32 * 1024  # websockets' default write_limit (high-water mark)
MAX_QUEUE = Config().max_queue  # WS_MAX_QUEUE's default (frames)


def heartbeat_env(interval: float, timeout: float) -> dict[str, str]:
    return {
        "WS_PING_INTERVAL": f"{units(interval):.3f}",
        "WS_PING_TIMEOUT": f"{units(timeout):.3f}",
    }


async def test_rate_limit_closes_with_1008(log_events: LogEvents):
    """Over WS_MAX_MESSAGES_PER_SECOND the connection is closed with 1008."""
    async with running_gateway(WS_MAX_MESSAGES_PER_SECOND="5") as gw, connect(gw.url) as ws:
        echoed, closed_by = await flood_until_closed(ws)
        assert closed_by.rcvd is not None and closed_by.rcvd.code == 1008
        assert 1 <= len(echoed) < 50
        assert echoed == [f"m{i}" for i in range(len(echoed))]
    closed = log_events.one("connection_closed", code=1008)
    assert closed["drop_reason"] == "rate_limited" and closed["level"] == "WARNING"
    assert gw.metrics.errors == {"rate_limited": 1}


async def test_rate_limit_below_one_per_second_admits_one_message_then_closes():
    """A fractional rate (0.5/s) still echoes the first message; the second at once is over."""
    async with (
        running_gateway(WS_MAX_MESSAGES_PER_SECOND="0.5") as gw,
        connect(gw.url) as ws,
    ):
        await ws.send("first")
        async with asyncio.timeout(units(5)):
            assert await ws.recv() == "first"
        await ws.send("second")
        with pytest.raises(ConnectionClosedError) as raised:
            async with asyncio.timeout(units(5)):
                await ws.recv()
        assert raised.value.rcvd is not None and raised.value.rcvd.code == 1008


async def test_rate_limit_lets_a_burst_under_the_limit_through():
    """A burst within the per-second budget is echoed in full."""
    async with running_gateway(WS_MAX_MESSAGES_PER_SECOND="1000") as gw, connect(gw.url) as ws:
        for i in range(100):
            await ws.send(f"m{i}")
        async with asyncio.timeout(units(5)):
            assert [await ws.recv() for _ in range(100)] == [f"m{i}" for i in range(100)]


def buffered_bytes(connection: GatewayConnection) -> tuple[int, int]:
    """(bytes in the server's write buffer, bytes of frames queued but not yet echoed)."""
    queued = sum(len(frame.data) for frame in connection.recv_messages.frames.queue)
    return connection.transport.get_write_buffer_size(), queued


async def test_slow_reader_is_throttled_with_bounded_server_memory():
    """A client that sends but never reads makes the server stop reading, not buffer."""
    async with running_gateway(WS_PING_INTERVAL="0") as gw:
        flood = Flood(await RawClient.connect(gw.port))
        try:
            connection = await wait_until(lambda: gw.connections and server_connection(gw))

            def throttled() -> bool:
                return (
                    connection.paused  # its write buffer is over the high-water mark
                    and not connection.transport.is_reading()  # so it stopped reading
                    and flood.blocked()  # and the backpressure reached the client
                )

            await wait_until(throttled, units(10), "server to stop reading from the flood")
            write_buffer, queued = buffered_bytes(connection)
            # Bounded by the limits, not by how much the client wants to send:
            # (the write limit, plus the message that crossed it, plus the one send() writes
            # before waiting)
            assert write_buffer <= WRITE_LIMIT + 2 * (FRAME_PAYLOAD + 14)
            assert queued <= (MAX_QUEUE + 8) * FRAME_PAYLOAD
            echoed_so_far = gw.metrics.binary.msgs_out
            assert flood.sent > echoed_so_far  # the client is ahead: it is being held back
            # Another client is unaffected.
            async with connect(gw.url) as other:
                await other.send(b"fine")
                async with asyncio.timeout(units(5)):
                    assert await other.recv() == b"fine"
            # Still bounded, still paused.
            assert throttled()
            assert sum(buffered_bytes(connection)) <= WRITE_LIMIT + (MAX_QUEUE + 10) * FRAME_PAYLOAD
        finally:
            await flood.stop()


async def test_silent_peer_is_dropped_by_heartbeat(log_events: LogEvents):
    """A peer that never answers pings is dropped after ping interval + timeout."""
    async with running_gateway(**heartbeat_env(0.2, 0.2)) as gw:
        raw = await RawClient.connect(gw.port)  # never reads, never answers
        try:
            await wait_until(lambda: gw.metrics.connections_active == 1)
            await wait_until(lambda: gw.metrics.connections_active == 0, units(0.4 + 2), "the drop")
        finally:
            await raw.close()
        closed = (await wait_until(lambda: log_events("connection_closed")))[0]
        assert (closed["code"], closed["reason"]) == (1011, "keepalive ping timeout")
        assert closed["drop_reason"] == "heartbeat_timeout" and closed["level"] == "WARNING"
        assert gw.metrics.errors == {"heartbeat_timeout": 1}


async def test_client_with_paused_transport_is_dropped_by_heartbeat():
    """A websockets client that stops processing input is dropped too."""
    async with running_gateway(**heartbeat_env(0.2, 0.2)) as gw:
        async with connect(gw.url, ping_interval=None) as ws:
            await ws.send("hi")
            assert await ws.recv() == "hi"
            ws.transport.pause_reading()
            await wait_until(lambda: gw.metrics.connections_active == 0, units(0.4 + 2), "the drop")
            ws.transport.resume_reading()  # now it can see what happened
            async with asyncio.timeout(units(5)):
                await ws.wait_closed()
            assert ws.close_code == 1011  # the close frame got out before the drop
        assert gw.metrics.closes == {1011: 1}


async def test_flooding_slow_reader_is_dropped_by_heartbeat():
    """A non-reading peer with a full send buffer is still dropped and its memory freed."""
    async with running_gateway(**heartbeat_env(0.3, 0.3)) as gw:
        flood = Flood(await RawClient.connect(gw.port))
        try:
            await wait_until(lambda: gw.metrics.connections_active == 1)
            await wait_until(
                lambda: gw.metrics.connections_active == 0 and not gw.connections,
                units(0.6 + 3),
                "the heartbeat to drop the flood",
            )
        finally:
            await flood.stop()
        assert gw.metrics.errors == {"heartbeat_timeout": 1}


async def test_answering_peer_survives_heartbeats():
    """A peer that answers pings stays connected across several heartbeats."""
    async with running_gateway(**heartbeat_env(0.05, 0.5)) as gw, connect(gw.url) as ws:
        connection = await wait_until(lambda: gw.connections and server_connection(gw))
        await wait_until(lambda: connection.pongs >= 3, units(5), "three answered heartbeats")
        await ws.send("alive")
        assert await ws.recv() == "alive"
        assert gw.metrics.connections_active == 1 and not gw.metrics.errors


async def test_idle_connections_hold_one_task_and_no_headers():
    """What an idle connection keeps is small: the heartbeat is one task for all connections
    (not one each), and the handshake's headers are let go once it is open."""
    async with running_gateway(**heartbeat_env(10, 10)) as gw:
        before = len(asyncio.all_tasks())
        clients = [await connect(gw.url, ping_interval=None) for _ in range(20)]
        try:
            await wait_until(lambda: len(gw.connections) == 20)
            # One handler task per connection, from the library; the gateway adds none.
            assert len(asyncio.all_tasks()) - before == 20
            for connection in gw.connections:
                assert len(connection.request.headers) == 0 == len(connection.response.headers)
        finally:
            for client in clients:
                await client.close()


async def test_heartbeat_can_be_disabled(gateway: Gateway):
    """WS_PING_INTERVAL=0 disables the heartbeat: a silent peer outlives one that pings drop."""
    assert gateway.config.ping_interval == 20
    async with (
        running_gateway(WS_PING_INTERVAL="0", WS_PING_TIMEOUT="0.1") as off,
        running_gateway(**heartbeat_env(0.1, 0.1)) as on,
    ):
        silent_off = await RawClient.connect(off.port)  # never reads, never answers pings
        silent_on = await RawClient.connect(on.port)
        try:
            await wait_until(lambda: off.metrics.connections_active == 1)
            # The control: with pings on, the same silent peer is dropped ...
            await wait_until(lambda: on.metrics.connections_active == 0, units(2), "the drop")
            # ... while with pings off it is still there, and was never pinged.
            assert off.metrics.connections_active == 1
            assert not off.metrics.errors
        finally:
            await silent_off.close()
            await silent_on.close()


async def test_receive_queue_is_bounded_by_ws_max_queue():
    """WS_MAX_QUEUE sets how many received frames a connection may queue before reading stops."""
    async with (
        running_gateway(WS_PING_INTERVAL="0", WS_MAX_QUEUE="2") as gw,
        connect(gw.url) as ws,
    ):
        await ws.send("hi")
        assert await ws.recv() == "hi"
        connection = await wait_until(lambda: gw.connections and server_connection(gw))
        assert connection.recv_messages.high == 2


async def test_ping_flood_from_a_peer_that_never_reads_stops_reading():
    """Pongs obey backpressure: a ping flood that never reads the pongs pauses reading."""
    async with running_gateway(WS_PING_INTERVAL="0") as gw:
        raw = await RawClient.connect(gw.port)
        try:
            connection = await wait_until(lambda: gw.connections and server_connection(gw))
            # A small send buffer makes the write buffer fill within a few hundred pongs.
            sock = connection.transport.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
            ping = encode(OP_PING, b"p" * 125, mask_key=ZERO_KEY)

            async def flood() -> None:
                with contextlib.suppress(ConnectionError):
                    for _ in range(20_000):  # 2.6 MB of pongs if every ping were answered
                        raw.writer.write(ping)
                        await raw.writer.drain()

            pump = asyncio.get_running_loop().create_task(flood())

            def throttled() -> bool:
                return connection.paused and not connection.transport.is_reading()

            await wait_until(throttled, units(10), "server to stop reading from the ping flood")
            await wait_until(
                lambda: pump.done() or raw.writer.transport.get_write_buffer_size() > 0,
                units(5),
                "backpressure to reach the client",
            )
            # Every ping is sent, or the client is held back; either way the server's
            # write buffer is the write limit plus the pongs of one read at most, not the
            # 2.6 MB that answering every ping would take.
            assert connection.transport.get_write_buffer_size() <= WRITE_LIMIT + 256 * 1024
            assert throttled()
            pump.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pump
        finally:
            raw.abort()
