"""The reconnecting client's accounting, against small in-process servers (no Docker).

The scenarios trust the client's ledger to say that nothing was lost; these tests show
that the ledger does catch what it must: corrupted echoes, echoes that never come,
connections that break with messages in flight, and a server that is not there yet.
"""

from __future__ import annotations

import asyncio
import socket

from websockets.asyncio.server import ServerConnection, serve

from stack.echo_client.ledger import Outcome
from stack.echo_client.reconnecting import ReconnectingClient


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
    """Without resend, what was in flight when the path died fails with its reason."""
    async with serve(swallow, "127.0.0.1", 0) as server:
        client = ReconnectingClient(
            url(server), name="dead", interval=0.01, echo_timeout=0.3, resend=False
        )
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
    assert client.ledger.resent == 0


async def test_a_message_resent_max_resends_times_without_echo_is_given_up() -> None:
    """Resend is bounded: after 1 + max_resends broken sends a message is failed, reported."""
    async with serve(swallow, "127.0.0.1", 0) as server:
        client = ReconnectingClient(
            url(server), name="hopeless", interval=0.01, echo_timeout=0.2, max_resends=2
        )
        client.start()
        try:
            await client.wait_until(lambda c: c.ledger.failed >= 1, "a message given up", 10)
        finally:
            await client.stop(drain_timeout=0.1)
    first = client.ledger.messages[1]
    assert first.outcome is Outcome.FAILED and first.sends == 3
    assert "sent 3 time(s): no echo within 0.2 s (session 3)" in first.reason
    assert [s.resent > 0 for s in client.sessions[1:3]] == [True, True]


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


class Flaky:
    """An echo server that breaks each of the first ``breaks`` connections mid-stream.

    On each of them it reads ``after`` messages, echoes all but the last (``after - 1``),
    and aborts the TCP connection: the last one is in flight, unechoed, when the client
    sees the drop. With ``replay``, the next connection sends the echo the previous one
    held back after its first echo (that of the resent message): a late duplicate.
    """

    def __init__(self, breaks: int, after: int, *, replay: bool = False) -> None:
        self.breaks = breaks
        self.after = after
        self.replay = replay
        self.held: list[str] = []
        self.received: list[str] = []

    async def __call__(self, ws: ServerConnection) -> None:
        breaking = self.breaks > 0
        self.breaks -= 1
        count = 0
        async for message in ws:
            self.received.append(message)
            count += 1
            if breaking and count == self.after:
                self.held.append(message)
                ws.transport.abort()
                return
            await ws.send(message)
            if self.replay:
                for held in self.held:
                    await ws.send(held)
                self.held.clear()


async def test_messages_in_flight_at_a_drop_are_resent_and_nothing_is_lost() -> None:
    """Three connections aborted mid-stream: every message is echoed intact, none failed."""
    flaky = Flaky(breaks=3, after=10)
    async with (
        serve(flaky, "127.0.0.1", 0) as server,
        ReconnectingClient(
            url(server), name="rs", interval=0.002, window=4, backoff_initial=0.02
        ) as client,
    ):
        await client.wait_until(
            lambda c: len(c.sessions) >= 4 and c.current.echoed >= 10, "4th connection", 10
        )
    summary = client.ledger.summary()
    assert summary["failed"] == summary["pending"] == summary["corrupted"] == 0, summary
    assert summary["stray"] == summary["duplicates"] == 0, summary
    assert summary["echoed"] == summary["sent"], summary
    assert summary["resent"] >= 3 and [s.code for s in client.sessions[:3]] == [1006] * 3
    # Every message the server echoed is one the client sent: the same text, byte for byte.
    texts = {m.text for m in client.ledger.messages.values()}
    assert set(flaky.received) == texts
    # A send into a connection being aborted may never reach the server, so a resent message
    # arrived once or more, never more often than it was sent.
    for message in client.ledger.messages.values():
        assert 1 <= flaky.received.count(message.text) <= message.sends, message


async def test_a_late_duplicate_echo_is_recognised_not_counted_as_new_or_lost() -> None:
    """An echo that comes after its resent message settled counts as a duplicate."""
    flaky = Flaky(breaks=1, after=5, replay=True)
    async with (
        serve(flaky, "127.0.0.1", 0) as server,
        ReconnectingClient(url(server), name="dup", interval=0.005, backoff_initial=0.02) as client,
    ):
        await client.wait_until(
            lambda c: len(c.sessions) >= 2 and c.current.echoed >= 10, "2nd connection", 10
        )
    summary = client.ledger.summary()
    assert summary["duplicates"] == 1 and summary["stray"] == 0, summary
    assert summary["failed"] == 0 and summary["echoed"] == summary["sent"], summary
    (late,) = [m for m in client.ledger.messages.values() if m.duplicates]
    assert late.text == flaky.received[4] and late.sends == 2
