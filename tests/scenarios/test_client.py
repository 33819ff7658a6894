"""The reconnecting client's accounting, against small in-process servers (no Docker).

The scenarios trust the client's ledger to say that nothing was lost; these tests show
that the ledger does catch what it must: corrupted echoes, echoes that never come,
connections that break with messages in flight, and a server that is not there yet.
"""

from __future__ import annotations

import asyncio
import socket

from websockets.asyncio.server import ServerConnection, serve

from stack.wire.client import Outcome, ReconnectingClient


async def echo(ws: ServerConnection) -> None:
    async for message in ws:
        await ws.send(message)


async def corrupt(ws: ServerConnection) -> None:
    async for message in ws:
        await ws.send(message[:-1] + ("?" if message[-1] != "?" else "!"))


async def swallow(ws: ServerConnection) -> None:
    async for _ in ws:
        pass


def url(server) -> str:
    host, port = server.sockets[0].getsockname()[:2]
    return f"ws://{host}:{port}/ws"


async def test_echoes_come_back_intact_and_nothing_stays_pending() -> None:
    async with (
        serve(echo, "127.0.0.1", 0) as server,
        ReconnectingClient(url(server), name="ok", interval=0.005) as client,
    ):
        await client.wait_until(lambda c: c.ledger.echoed >= 50, "50 echoes", 10)
    summary = client.ledger.summary()
    assert summary["echoed"] == summary["sent"] >= 50
    assert summary["pending"] == summary["failed"] == summary["corrupted"] == 0
    assert [s.closed_by for s in client.sessions] == ["client"]


async def test_a_changed_echo_is_corrupted() -> None:
    async with (
        serve(corrupt, "127.0.0.1", 0) as server,
        ReconnectingClient(url(server), name="cor", interval=0.005) as client,
    ):
        await client.wait_until(lambda c: c.ledger.corrupted >= 5, "5 corrupted", 10)
    assert client.ledger.echoed == 0
    assert all(m.outcome is Outcome.CORRUPTED for m in client.ledger.messages.values())


async def test_a_silent_path_fails_in_flight_messages_and_reconnects() -> None:
    async with serve(swallow, "127.0.0.1", 0) as server:
        client = ReconnectingClient(url(server), name="dead", interval=0.01, echo_timeout=0.3)
        client.start()
        try:
            await client.wait_until(lambda c: len(c.sessions) >= 2, "a second connection", 10)
        finally:
            await client.stop(drain_timeout=0.1)
    first = client.sessions[0]
    assert first.note == "no echo within 0.3 s" and first.code == 1006
    failed = [m for m in client.ledger.messages.values() if m.session == 1]
    assert failed and all(
        m.outcome is Outcome.FAILED and "no echo within" in m.reason for m in failed
    )
    assert not any(m.lost_at_stop for m in failed)


async def test_messages_without_echo_on_a_live_connection_are_lost_at_stop() -> None:
    async with serve(swallow, "127.0.0.1", 0) as server:
        client = ReconnectingClient(url(server), name="lost", interval=0.01, echo_timeout=None)
        client.start()
        try:
            await client.wait_until(lambda c: c.ledger.sent >= 4, "4 sent", 10)
        finally:
            await client.stop(drain_timeout=0.2)
    assert client.ledger.pending == 0
    assert client.ledger.lost_at_stop == client.ledger.failed == client.ledger.sent


async def test_retries_with_backoff_until_the_server_is_there() -> None:
    with socket.socket() as s:  # a free port, nothing listening yet
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    client = ReconnectingClient(
        f"ws://127.0.0.1:{port}/ws", name="late", backoff_initial=0.02, backoff_max=0.1
    )
    client.start()
    try:
        await client.wait_until(lambda c: len(c.handshake_failures) >= 3, "3 failed attempts", 10)
        async with serve(echo, "127.0.0.1", port):
            await client.wait_until(lambda c: c.ledger.echoed >= 3, "echoes once it is up", 10)
    finally:
        await client.stop()
    assert all(
        "ConnectionRefusedError" in f.error or "OSError" in f.error
        for f in client.handshake_failures
    )
    assert client.ledger.summary()["echoed"] == client.ledger.sent


async def test_stop_while_nothing_answers_returns_promptly() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    client = ReconnectingClient(f"ws://127.0.0.1:{port}/ws", name="never")
    client.start()
    try:
        await client.wait_until(lambda c: c.attempts >= 1, "an attempt", 5)
    finally:
        await asyncio.wait_for(client.stop(), 3)
    assert client.sessions == [] and client.ledger.sent == 0


async def test_client_gives_up_by_itself_after_max_runtime() -> None:
    """Bounded in time on its own: without stop(), the client ends after max_runtime."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    client = ReconnectingClient(f"ws://127.0.0.1:{port}/ws", name="bounded", max_runtime=0.3)
    client.start()
    try:
        await client.wait_until(lambda c: c._task.done(), "the client ends by itself", 5)
    finally:
        await asyncio.wait_for(client.stop(), 3)
    assert client.attempts >= 1
