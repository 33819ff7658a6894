"""Clients that misbehave on purpose cannot leak a slot, hold shutdown or grow memory freely."""

from __future__ import annotations

import asyncio
import signal
import socket
import struct

import pytest
from websockets.asyncio.client import connect

from stack.wire.handshake import new_key, request

from .conftest import LogEvents
from .helpers import (
    MIB,
    OP_BINARY,
    ZERO_KEY,
    RawClient,
    ServerProcess,
    encode,
    http_request,
    metric,
    running_gateway,
    units,
    wait_until,
)

pytestmark = pytest.mark.unit

ABORTS = ("close", "reset", "shutdown")


async def aborted_handshake(port: int, how: str) -> None:
    """Send an upgrade request, then leave at once: close, RST, or half-close (SHUT_WR)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request("/ws", f"127.0.0.1:{port}", new_key()))
    await writer.drain()
    sock = writer.get_extra_info("socket")
    if how == "reset":  # SO_LINGER 0: close() sends RST
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    elif how == "shutdown":
        sock.shutdown(socket.SHUT_WR)
        await reader.read()  # the server answers, then closes
    writer.close()


async def active_connections(server: ServerProcess) -> float:
    _, _, body = await http_request(server.port, "/metrics")
    return metric(body.decode(), "ws_connections_active")


@pytest.mark.parametrize("how", ABORTS)
async def test_aborted_handshakes_hold_no_slot(how: str):
    """100 upgrade requests dropped right after sending leave no slot taken.

    Run against ``python -m server`` (uvloop): there the library can call process_response,
    which takes the slot, after connection_lost, which releases it. A client that connects
    after them must be the only one counted.
    """
    server = await ServerProcess.start()
    try:
        await asyncio.gather(*(aborted_handshake(server.port, how) for _ in range(100)))
        async with connect(f"ws://127.0.0.1:{server.port}/ws") as ws:
            await ws.send("counted alone")
            assert await ws.recv() == "counted alone"

            async def only_this_one() -> bool:
                return await active_connections(server) == 1

            await wait_until(only_this_one, what=f"1 slot held after 100 ended by {how}")
    finally:
        await server.kill()


async def test_aborted_handshakes_never_lock_out_later_clients():
    """With WS_MAX_CONNECTIONS=50, 60 aborted handshakes still let the next client in."""
    server = await ServerProcess.start(WS_MAX_CONNECTIONS="50")
    try:
        for _ in range(60):
            await aborted_handshake(server.port, "close")
        url = f"ws://127.0.0.1:{server.port}/ws"
        async with connect(url, open_timeout=units(5)) as ws:
            await ws.send("after the storm")
            assert await ws.recv() == "after the storm"
    finally:
        await server.kill()


async def test_half_finished_handshakes_do_not_hold_shutdown():
    """An idle TCP socket that never sends its request does not delay SIGTERM's exit."""
    server = await ServerProcess.start()
    try:
        _, writer = await asyncio.open_connection("127.0.0.1", server.port)
        loop = asyncio.get_running_loop()
        started = loop.time()
        server.signal(signal.SIGTERM)
        assert await server.wait(units(10)) == 0
        elapsed = loop.time() - started
        writer.close()
    finally:
        await server.kill()
    assert not server.events("shutdown_incomplete")
    assert elapsed < units(2), f"SIGTERM took {elapsed:.1f} s with one idle socket"


async def test_memory_budget_closes_the_largest_holders_with_1013(log_events: LogEvents):
    """Over WS_MEMORY_BUDGET, the connections holding the most are dropped; others go on."""
    async with running_gateway(WS_MEMORY_BUDGET="2MiB", WS_PING_INTERVAL="0") as gw:
        message = encode(OP_BINARY, b"\x00" * MIB, mask_key=ZERO_KEY)
        raws = [await RawClient.connect(gw.port) for _ in range(4)]
        try:
            await wait_until(lambda: len(gw.connections) == 4, what="4 connections open")
            for connection in gw.connections:  # small kernel buffers: the process holds it
                sock = connection.transport.get_extra_info("socket")
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
            for raw in raws:  # never reading: about 1 MiB each left in the write buffer
                for _ in range(4):
                    raw.writer.write(message)
            await wait_until(
                lambda: gw.metrics.errors.get("memory_budget", 0) >= 1,
                units(10),
                "a holder closed for the memory budget",
            )
            async with connect(gw.url) as healthy:
                await healthy.send(b"still served")
                assert await healthy.recv() == b"still served"
            held = sum(c.held_bytes() for c in gw.holding)
            assert held <= gw.config.memory_budget
        finally:
            for raw in raws:
                raw.abort()
    exceeded = log_events("memory_budget_exceeded")
    assert exceeded and exceeded[0]["budget_bytes"] == 2 * MIB
    assert exceeded[0]["held_bytes"] > 2 * MIB
    shed = [e for e in log_events("connection_closed") if e.get("drop_reason") == "memory_budget"]
    assert shed and all(e["code"] == 1013 and e["closed_by"] == "server" for e in shed)
