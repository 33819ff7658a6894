"""Graceful shutdown: not ready, no new handshakes, 1001 for everyone, done in time."""

from __future__ import annotations

import asyncio

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from server.app import Gateway, run

from .conftest import LogEvents
from .helpers import Flood, RawClient, get_json, make_config, running_gateway, units, wait_until

pytestmark = pytest.mark.unit


async def test_shutdown_closes_open_connections_with_1001(log_events: LogEvents):
    """Every open connection gets 1001 Going Away and the drain returns promptly."""
    async with running_gateway() as gw:
        clients = [await connect(gw.url) for _ in range(3)]
        await clients[0].send("before")
        assert await clients[0].recv() == "before"
        async with asyncio.timeout(units(2)):
            await gw.shutdown()
        for ws in clients:
            async with asyncio.timeout(units(2)):
                await ws.wait_closed()
            assert ws.close_code == 1001
            assert ws.close_reason == "server shutting down"
    closed = log_events("connection_closed")
    assert {(e["code"], e["closed_by"], e["level"]) for e in closed} == {(1001, "server", "INFO")}
    assert log_events.one("server_draining")["connections"] == 3
    assert log_events.one("server_stopped")["aborted"] == 0
    assert gw.metrics.connections_active == 0
    with pytest.raises(OSError):  # the port is closed
        await asyncio.open_connection("127.0.0.1", gw.port)


async def test_draining_answers_503_and_refuses_new_handshakes():
    """While draining, /readyz is 503, /healthz 200, and a new handshake gets 503."""
    async with running_gateway(WS_SHUTDOWN_TIMEOUT=f"{units(2):.3f}") as gw:
        raw = await RawClient.connect(gw.port)  # will not answer the close frame
        try:
            drain = asyncio.get_running_loop().create_task(gw.shutdown())
            await wait_until(lambda: gw.draining)
            assert await get_json(gw.port, "/readyz") == (503, {"status": "draining"})
            status, health = await get_json(gw.port, "/healthz")
            assert status == 200 and health["draining"] is True
            with pytest.raises(InvalidStatus) as raised:
                await connect(gw.url)
            assert raised.value.response.status_code == 503
            assert await raw.read_close() == (1001, "server shutting down")
            async with asyncio.timeout(units(4)):
                await drain
        finally:
            raw.abort()
        assert gw.metrics.rejections == {"draining": 1}


async def test_shutdown_finishes_in_time_with_peers_that_never_read(log_events: LogEvents):
    """Peers that neither read nor answer are aborted: shutdown takes no longer than allowed."""
    async with running_gateway(WS_SHUTDOWN_TIMEOUT=f"{units(1):.3f}", WS_PING_INTERVAL="0") as gw:
        loop = asyncio.get_running_loop()
        # Flooders that never read: the server's send buffers fill, so even the close
        # frame cannot be written and the close handshake can never complete.
        floods = [Flood(await RawClient.connect(gw.port)) for _ in range(3)]
        try:
            await wait_until(
                lambda: len(gw.connections) == 3 and all(c.paused for c in gw.connections),
                what="three stalled connections",
            )
            started = loop.time()
            async with asyncio.timeout(units(1) + units(0.5)):
                await gw.shutdown()
            assert loop.time() - started <= units(1)
        finally:
            for flood in floods:
                await flood.stop()
    assert log_events.one("server_stopped")["aborted"] == 3
    assert {e["drop_reason"] for e in log_events("connection_closed")} == {"shutdown_timeout"}
    assert gw.metrics.connections_active == 0


async def test_shutdown_is_idempotent(gateway: Gateway, log_events: LogEvents):
    """Calling shutdown twice, even concurrently, drains once."""
    await asyncio.gather(gateway.shutdown(), gateway.shutdown())
    await gateway.shutdown()
    assert gateway.draining
    assert len(log_events("server_draining")) == 1
    assert len(log_events("server_stopped")) == 1


async def test_second_forced_stop_aborts_at_once(log_events: LogEvents):
    """A repeated stop request with force (second Ctrl+C) drops what is still open."""
    async with running_gateway(WS_SHUTDOWN_TIMEOUT="30") as gw:
        raw = await RawClient.connect(gw.port)
        try:
            gw.request_stop("SIGINT", force_if_repeated=True)
            drain = asyncio.get_running_loop().create_task(gw.serve_until_stopped())
            await wait_until(lambda: gw.draining)
            gw.request_stop("SIGTERM")  # a repeat without force is ignored
            assert not log_events("stop_forced")
            gw.request_stop("SIGINT", force_if_repeated=True)
            async with asyncio.timeout(units(3)):
                await drain
        finally:
            raw.abort()
    assert log_events.one("stop_forced")["reason"] == "SIGINT"
    assert log_events.one("connection_closed")["drop_reason"] == "shutdown_timeout"


async def test_run_serves_until_the_stop_event(log_events: LogEvents):
    """run(config, stop) serves, and returns after draining once stop is set."""
    stop = asyncio.Event()
    config = make_config()
    task = asyncio.get_running_loop().create_task(run(config, stop))
    started = (await wait_until(lambda: log_events("server_started"), what="run to start"))[0]
    async with connect(started["url"]) as ws:  # it really serves
        await ws.send("served")
        assert await ws.recv() == "served"
    assert not task.done()
    stop.set()
    async with asyncio.timeout(units(3)):
        await task
    assert task.exception() is None


async def test_message_read_during_the_drain_is_logged_as_received(log_events: LogEvents):
    """A message that arrives after the server's 1001 is logged once, as received, not echoed."""
    async with running_gateway(WS_SHUTDOWN_TIMEOUT=f"{units(2):.3f}") as gw:
        raw = await RawClient.connect(gw.port)  # answers the close frame late, after a message
        try:
            drain = asyncio.get_running_loop().create_task(gw.shutdown())
            assert await raw.read_close() == (1001, "server shutting down")
            await raw.send_frame(0x2, b"late\n")
            await wait_until(lambda: log_events("message_received"))
            await raw.send_frame(0x8, b"\x03\xe8")
            async with asyncio.timeout(units(4)):
                await drain
        finally:
            raw.abort()
    received = log_events.one("message_received")
    assert (received["seq"], received["type"], received["preview"]) == (
        1,
        "binary",
        b"late\n".hex(),
    )
    assert not log_events("message_echoed")


async def test_drain_delay_refuses_handshakes_before_it_closes_connections(
    log_events: LogEvents,
):
    """With WS_DRAIN_DELAY, new handshakes and /readyz get 503 at once, while open connections
    keep echoing; only after the delay do they get 1001, and then the port closes. So the
    reconnects that 1001 sets off come after a re-resolving proxy forgot this address."""
    delay = units(2)
    async with running_gateway(
        WS_DRAIN_DELAY=f"{delay:.3f}", WS_SHUTDOWN_TIMEOUT=f"{units(6):.3f}"
    ) as gw:
        client = await connect(gw.url)
        loop = asyncio.get_running_loop()
        started = loop.time()
        drain = loop.create_task(gw.shutdown())
        await wait_until(lambda: gw.draining)
        assert await get_json(gw.port, "/readyz") == (503, {"status": "draining"})
        with pytest.raises(InvalidStatus) as raised:
            await connect(gw.url)
        assert raised.value.response.status_code == 503
        await client.send("still served while draining")
        assert await client.recv() == "still served while draining"
        echoed_at = loop.time() - started
        async with asyncio.timeout(units(4)):
            await client.wait_closed()
        closed_at = loop.time() - started
        assert (client.close_code, client.close_reason) == (1001, "server shutting down")
        assert echoed_at < delay <= closed_at, (echoed_at, closed_at)
        async with asyncio.timeout(units(4)):
            await drain
    assert log_events.one("server_draining")["drain_delay_s"] == pytest.approx(delay)
    assert log_events.one("server_stopped")["aborted"] == 0
    with pytest.raises(OSError):  # closed once the delay is over and connections are closed
        await asyncio.open_connection("127.0.0.1", gw.port)


async def test_forced_stop_cuts_the_drain_delay_short(log_events: LogEvents):
    """A repeated stop with force (second Ctrl+C) during WS_DRAIN_DELAY stops at once."""
    async with running_gateway(WS_DRAIN_DELAY="15", WS_SHUTDOWN_TIMEOUT="30") as gw:
        client = await connect(gw.url)
        gw.request_stop("SIGINT", force_if_repeated=True)
        drain = asyncio.get_running_loop().create_task(gw.serve_until_stopped())
        await wait_until(lambda: gw.draining)
        gw.request_stop("SIGINT", force_if_repeated=True)
        async with asyncio.timeout(units(3)):
            await drain
        async with asyncio.timeout(units(2)):
            await client.wait_closed()
    assert log_events.one("stop_forced")["reason"] == "SIGINT"
    assert log_events.one("connection_closed")["drop_reason"] == "shutdown_timeout"
