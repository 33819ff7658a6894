"""Clients that misbehave on purpose cannot leak a slot, hold shutdown or grow memory freely."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import struct

import pytest
from websockets.asyncio.client import connect

from stack.waits import ConditionTimeout
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


BUDGET = 64 * MIB
SLOW_SENDERS = 40
OFFERED = 16  # 1 MiB messages each slow sender tries to push: 10x the budget in all
# What RSS may exceed the budget by: the allocator's pages that are freed but not yet
# returned, and coverage's tracer when the tests measure coverage.
ALLOWANCE = 16 * MIB


def resident_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        line = next(line for line in status if line.startswith("VmRSS:"))
    return int(line.split()[1]) * 1024


async def slow_sender(port: int, pushed: list[int]) -> RawClient:
    """A client that pushes 1 MiB messages (at most OFFERED) and never reads its echoes."""
    raw = await RawClient.connect(port)
    raw.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    message = encode(OP_BINARY, os.urandom(MIB), mask_key=ZERO_KEY)

    async def push() -> None:
        with contextlib.suppress(ConnectionError):
            for _ in range(OFFERED):
                raw.writer.write(message)
                await raw.writer.drain()
                pushed.append(MIB)

    raw.pump = asyncio.get_running_loop().create_task(push())  # type: ignore[attr-defined]
    return raw


async def test_slow_senders_cannot_grow_the_server_past_its_budget():
    """40 clients push 1 MiB messages and never read (640 MiB offered) against a 64 MiB
    budget: the server stops reading them before it takes more than the budget can reserve,
    so its resident memory stays under budget + allowance; a healthy client echoes all the
    while."""
    server = await ServerProcess.start(
        WS_MEMORY_BUDGET=f"{BUDGET // MIB}MiB", WS_PING_INTERVAL="0", WS_LOG_MESSAGES="false"
    )
    pid = server.process.pid
    peak = resident_bytes(pid)
    senders: list[RawClient] = []
    pushed: list[int] = []
    waiting = 0.0
    try:
        async with connect(f"ws://127.0.0.1:{server.port}/ws", max_size=2 * MIB) as healthy:
            senders = await asyncio.gather(
                *(slow_sender(server.port, pushed) for _ in range(SLOW_SENDERS))
            )
            loop = asyncio.get_running_loop()
            stalled_since, last_pushed, n = loop.time(), 0, 0
            deadline = loop.time() + units(30)
            # Until the senders have pushed nothing more for 2 s (held back), at most 30 s.
            while loop.time() - stalled_since < 2 and loop.time() < deadline:
                n += 1
                text = f"healthy {n}"
                await healthy.send(text)
                assert await asyncio.wait_for(healthy.recv(), units(5)) == text
                peak = max(peak, resident_bytes(pid))
                _, _, body = await http_request(server.port, "/metrics")
                waiting = max(waiting, metric(body.decode(), "ws_memory_waiting_connections"))
                if len(pushed) != last_pushed:
                    stalled_since, last_pushed = loop.time(), len(pushed)
    finally:
        for raw in senders:
            raw.pump.cancel()  # type: ignore[attr-defined]
            raw.abort()
        await server.kill()
    print(
        f"peak RSS {peak / MIB:.0f} MiB (budget {BUDGET // MIB} MiB), {n} healthy echoes,"
        f" slow senders pushed {len(pushed)} MiB of {SLOW_SENDERS * OFFERED},"
        f" up to {waiting:g} waiting for memory"
    )
    assert waiting > 0, "the budget never had to stop a reader: the test proves nothing"
    assert len(pushed) < SLOW_SENDERS * OFFERED, "every slow sender got everything out"
    assert peak <= BUDGET + ALLOWANCE, f"peak RSS {peak / MIB:.0f} MiB"


async def test_a_client_that_reads_its_echoes_gets_room_from_stuck_ones():
    """Slow senders spend the budget; a client that has shown it reads its echoes then
    sends 1 MiB: after waiting a second it gets room, and the largest senders that do not
    read theirs are closed with 1013 to make it."""
    server = await ServerProcess.start(
        WS_MEMORY_BUDGET=f"{BUDGET // MIB}MiB", WS_PING_INTERVAL="0", WS_LOG_MESSAGES="false"
    )
    senders: list[RawClient] = []
    pushed: list[int] = []
    try:
        async with connect(f"ws://127.0.0.1:{server.port}/ws", max_size=2 * MIB) as healthy:
            for n in range(3):
                await healthy.send(f"shown {n}")
                assert await healthy.recv() == f"shown {n}"
            senders = await asyncio.gather(
                *(slow_sender(server.port, pushed) for _ in range(SLOW_SENDERS))
            )

            async def budget_spent() -> bool:
                _, _, body = await http_request(server.port, "/metrics")
                return metric(body.decode(), "ws_memory_waiting_connections") > 0

            await wait_until(budget_spent, units(20), "slow senders waiting for memory")
            large = os.urandom(MIB)
            await healthy.send(large)
            assert await asyncio.wait_for(healthy.recv(), units(15)) == large

        def made_room() -> list[dict]:
            return [e for e in server.events("memory_budget_exceeded") if e["why"] == "starving"]

        def shed() -> list[dict]:
            closed = server.events("connection_closed")
            return [e for e in closed if e.get("drop_reason") == "memory_budget"]

        # Log lines are written up to 50 ms after their event: read them before the kill.
        with contextlib.suppress(ConditionTimeout):  # then the asserts below say what is missing
            await wait_until(lambda: made_room() and shed(), units(5), "the shed's log lines")
    finally:
        for raw in senders:
            raw.pump.cancel()  # type: ignore[attr-defined]
            raw.abort()
        await server.kill()
    assert made_room(), "the large message got through without anyone closed for it"
    assert shed() and all(e["code"] == 1013 for e in shed())
