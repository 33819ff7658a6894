"""Clients that misbehave on purpose cannot leak a slot, hold shutdown or grow memory freely."""

from __future__ import annotations

import asyncio
import signal
import socket
import struct

import pytest
from websockets.asyncio.client import connect

from stack.wire.handshake import new_key, request

from .helpers import (
    MIB,
    OP_BINARY,
    ZERO_KEY,
    RawClient,
    ServerProcess,
    encode,
    http_request,
    metric,
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


async def test_memory_budget_closes_the_largest_holders_with_1013():
    """Over WS_MEMORY_BUDGET, the readers that stopped reading and hold the most are dropped
    with 1013 until the process is back under it; a client that reads goes on."""
    budget = 80 * MIB
    server = await ServerProcess.start(WS_MEMORY_BUDGET="80MiB", WS_PING_INTERVAL="0")
    message = encode(OP_BINARY, b"\x00" * MIB, mask_key=ZERO_KEY)
    raws = []
    try:
        for _ in range(40):  # never reading: about 3 MiB each stays in the process
            raw = await RawClient.connect(server.port)
            for _ in range(8):
                raw.writer.write(message)
            raws.append(raw)

        async def shed() -> bool:
            return bool(server.events("memory_budget_exceeded"))

        await wait_until(shed, units(20), "a holder closed for the memory budget")
        async with connect(f"ws://127.0.0.1:{server.port}/ws") as healthy:
            await healthy.send(b"still served")
            assert await healthy.recv() == b"still served"

        async def under_budget() -> bool:
            _, _, body = await http_request(server.port, "/metrics")
            return 0 < metric(body.decode(), "ws_memory_used_bytes") <= budget

        await wait_until(under_budget, units(10), "the process back under its budget")
    finally:
        for raw in raws:
            raw.abort()
        await server.kill()
    exceeded = server.events("memory_budget_exceeded")[0]
    # Shedding starts at 90% of the budget, so that what comes in meanwhile stays under it.
    assert exceeded["budget_bytes"] == budget and exceeded["used_bytes"] > 0.9 * budget
    shed = [
        e for e in server.events("connection_closed") if e.get("drop_reason") == "memory_budget"
    ]
    assert shed and all(e["code"] == 1013 and e["closed_by"] == "server" for e in shed)
