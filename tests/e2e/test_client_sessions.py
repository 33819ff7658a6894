"""Clients through NGINX, as users connect: many at once, each session logged from open to close."""

from __future__ import annotations

import asyncio
import random
import socket
import time
import uuid

from websockets.asyncio.client import connect

from stack import prometheus
from stack.waits import until

CLIENTS = 100
# A message that would be a log line of its own if the server wrote content unescaped.
FORGERY = 'line one\n{"level": "ERROR", "event": "forged"}'


def messages_for(client: int) -> list[str | bytes]:
    """A mix of text and binary messages, different for every client (and the same every call)."""
    return [
        f"client {client} says hello ✓",
        random.Random(client).randbytes(client * 37 % 4096),
        "",
        b"",
        f"{client}" * (client * 11 % 2048),
    ]


async def session(url: str, client: int, request_id: str) -> list[str | bytes]:
    """Connect, echo every message in order, close normally; return what came back."""
    headers = {"X-Request-ID": request_id}
    async with connect(url, additional_headers=headers, open_timeout=30) as ws:
        echoed = []
        for message in messages_for(client):
            await ws.send(message)
            echoed.append(await asyncio.wait_for(ws.recv(), 30))
        return echoed


async def test_a_hundred_concurrent_clients_each_get_their_own_bytes_back(stack) -> None:
    """100 clients at once through NGINX: every message echoed intact, to its own sender."""
    run = uuid.uuid4().hex[:8]
    ids = [f"{run}-{client}" for client in range(CLIENTS)]
    results = await asyncio.gather(
        *(session(stack.url, client, ids[client]) for client in range(CLIENTS))
    )
    for client, echoed in enumerate(results):
        expected = messages_for(client)
        assert [type(m) for m in echoed] == [type(m) for m in expected], client
        assert echoed == expected, client

    def closed_normally() -> list[dict]:
        return [
            e
            for e in stack.server.events()
            if e.get("event") == "connection_closed"
            and str(e.get("request_id", "")).startswith(run)
        ]

    closes = until(
        closed_normally, "100 connection_closed lines", 30, accept=lambda c: len(c) >= CLIENTS
    )
    assert {e["code"] for e in closes} == {1000}
    assert all(e["msgs_in"] == e["msgs_out"] == len(messages_for(0)) for e in closes)


async def test_server_log_shows_each_message_received_and_echoed(stack) -> None:
    """The server logs a session's open, one line per message echoed, and its close."""
    request_id = f"logged-{uuid.uuid4().hex[:8]}"
    async with connect(stack.url, additional_headers={"X-Request-ID": request_id}) as ws:
        await ws.send(FORGERY)
        assert await ws.recv() == FORGERY
        await ws.send(b"\x00\x01")
        assert await ws.recv() == b"\x00\x01"

    def session_events() -> list[dict]:
        events = stack.server.events()
        opened = [
            e
            for e in events
            if e.get("event") == "connection_open" and e.get("request_id") == request_id
        ]
        if not opened:
            return []
        conn = opened[0]["conn"]
        return [e for e in events if e.get("conn") == conn]

    events = until(
        session_events,
        "the session's log lines",
        30,
        accept=lambda es: any(e["event"] == "connection_closed" for e in es),
    )
    kinds = [e["event"] for e in events]
    assert kinds == ["connection_open", "message_echoed", "message_echoed", "connection_closed"]
    echoed = [(e["seq"], e["type"], e["size"]) for e in events if e["event"] == "message_echoed"]
    assert echoed == [(1, "text", len(FORGERY.encode())), (2, "binary", 2)]
    # The newline in the message stayed escaped inside its JSON string: no raw log line
    # starts with the forged object, and no parsed line is the forged event.
    lines = stack.server.logs().splitlines()
    assert not any(line.startswith('{"level": "ERROR"') for line in lines)
    assert not any(e.get("event") == "forged" for e in stack.server.events())
    assert any("forged" in e.get("preview", "") for e in events)


async def test_client_gone_without_a_close_frame_is_logged_as_1006(stack) -> None:
    """A client that drops its TCP connection mid-session is logged once with 1006."""
    request_id = f"abrupt-{uuid.uuid4().hex[:8]}"
    async with connect(stack.url, additional_headers={"X-Request-ID": request_id}) as ws:
        await ws.send("about to vanish")
        assert await ws.recv() == "about to vanish"
        # Tear the TCP connection down without a close frame (RST via SO_LINGER 0).
        sock: socket.socket = ws.transport.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        ws.transport.abort()

    def closes() -> list[dict]:
        return [
            e
            for e in stack.server.events()
            if e.get("event") == "connection_closed" and e.get("request_id") == request_id
        ]

    events = until(closes, "the abrupt close in the server log", 30)
    assert len(events) == 1
    assert events[0]["code"] == 1006


FLOOD = 20_000  # one-byte messages on one connection, as fast as the client sends


async def test_a_flooder_cannot_push_other_sessions_out_of_the_log(stack) -> None:
    """Through NGINX, with the defaults: a flooding session's message lines are bounded and
    summarised, another session's lines all reach the container log, none is dropped."""
    dropped_before = prometheus.parse(stack.server_get("/metrics")[2].decode()).value(
        "ws_log_lines_dropped_total"
    )
    flooder, other = (f"flood-{uuid.uuid4().hex[:8]}", f"calm-{uuid.uuid4().hex[:8]}")
    started = time.monotonic()

    async def flood() -> None:
        headers = {"X-Request-ID": flooder}
        async with connect(stack.url, additional_headers=headers, max_queue=None) as ws:
            for _ in range(FLOOD):
                await ws.send(b"x")
            for _ in range(FLOOD):
                assert await ws.recv() == b"x"

    async def calm() -> None:
        async with connect(stack.url, additional_headers={"X-Request-ID": other}) as ws:
            for i in range(50):
                await ws.send(f"calm {i}")
                assert await ws.recv() == f"calm {i}"

    await asyncio.gather(flood(), calm())
    elapsed = time.monotonic() - started

    def sessions() -> dict[str, list[dict]]:
        events = stack.server.events()
        conns = {
            e["request_id"]: e["conn"]
            for e in events
            if e.get("event") == "connection_open" and e.get("request_id") in (flooder, other)
        }
        return {rid: [e for e in events if e.get("conn") == conn] for rid, conn in conns.items()}

    found = until(
        sessions,
        "both sessions' close lines",
        30,
        accept=lambda s: (
            len(s) == 2
            and all(any(e["event"] == "connection_closed" for e in es) for es in s.values())
        ),
    )
    calm_lines = [e["preview"] for e in found[other] if e["event"] == "message_echoed"]
    assert calm_lines == [f"calm {i}" for i in range(50)]
    flood_lines = [e for e in found[flooder] if e["event"] == "message_echoed"]
    summaries = [e for e in found[flooder] if e["event"] == "message_logs_suppressed"]
    assert len(flood_lines) <= 100 + 100 * elapsed + 1, (len(flood_lines), elapsed)
    assert len(flood_lines) + sum(s["messages"] for s in summaries) == FLOOD
    dropped_after = prometheus.parse(stack.server_get("/metrics")[2].decode()).value(
        "ws_log_lines_dropped_total"
    )
    assert dropped_after == dropped_before
