"""500 concurrent WebSockets through NGINX, each echoing text and binary of 0 to 64 KiB.

Every connection is open at the same time, sends its whole message list pipelined (the
echoes must come back complete, in order, with their frame type) and closes with 1000.
No timing is asserted: speed is the benchmark's business (python -m stack bench); this
test fails only on a failed handshake, a lost, altered or reordered byte, or an abnormal
close. Every wait is bounded, so a stuck stack fails the test instead of hanging CI.

NGINX's per-client-IP limits, chosen deliberately: all 500 connections come from one
address (the host's, as Docker relays the published port), so the defaults
(WS_RATE_LIMIT=100r/m with WS_RATE_BURST=20, WS_CONN_LIMIT_PER_IP=100) would refuse most
handshakes with 429 and fake a failure. The test raises only what this load needs: a
burst of 1,000 handshakes (all 500 at once pass with `nodelay`, with room for the stack's
readiness probes) and 1,000 open WebSockets per IP. The rate itself stays at its default,
so the limiter is still on; a test below reads NGINX's rendered configuration to prove
that these are the limits in force, and the echo test checks NGINX refused no handshake.
"""

from __future__ import annotations

import asyncio
import random
import re
from collections import Counter

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidStatus

from stack.waits import seconds

CONNECTIONS = 500
MESSAGES_PER_CONNECTION = 6
MAX_SIZE = 64 * 1024
# Boundaries of the frame length encoding (7-bit, 16-bit, 64-bit) and of the range.
EDGE_SIZES = (0, 1, 125, 126, 127, 65535, MAX_SIZE)
NGINX_ENV = {"WS_RATE_BURST": "1000", "WS_CONN_LIMIT_PER_IP": "1000"}
# Multi-byte UTF-8 characters: text sizes are counted in bytes, as on the wire.
WIDE_CHARS = "é€😀ж"


def text_of_size(rng: random.Random, size: int) -> str:
    """A str whose UTF-8 encoding is exactly ``size`` bytes, mixing 1- to 4-byte characters."""
    parts: list[str] = []
    left = size
    while left >= 4:
        ch = rng.choice(WIDE_CHARS) if rng.random() < 0.3 else chr(rng.randrange(32, 127))
        parts.append(ch)
        left -= len(ch.encode())
    parts.append("x" * left)
    text = "".join(parts)
    assert len(text.encode()) == size
    return text


def message_plan(index: int) -> list[str | bytes]:
    """Connection ``index``'s messages: text and binary, sizes 0..64 KiB, edges included."""
    rng = random.Random(index)
    sizes = [EDGE_SIZES[index % len(EDGE_SIZES)]]
    while len(sizes) < MESSAGES_PER_CONNECTION:
        # Log-uniform: as many small messages as large ones, up to 64 KiB.
        sizes.append(min(MAX_SIZE, int(2 ** rng.uniform(0, 16.01))))
    plan: list[str | bytes] = []
    for n, size in enumerate(sizes):
        if (index + n) % 2:
            plan.append(text_of_size(rng, size))
        else:
            plan.append(rng.randbytes(size))
    return plan


def describe(exc: BaseException) -> str:
    if isinstance(exc, InvalidStatus):
        return f"HTTP {exc.response.status_code}"
    return f"{type(exc).__name__}: {exc}"


async def open_connection(url: str) -> ClientConnection | BaseException:
    try:
        return await connect(url, open_timeout=seconds(30), max_size=2 * MAX_SIZE)
    except (OSError, TimeoutError, InvalidStatus) as exc:
        return exc


async def echo_all(ws: ClientConnection, plan: list[str | bytes]) -> list[str]:
    """Send the plan pipelined while reading the echoes; return what went wrong (nothing)."""

    async def send_all() -> None:
        for message in plan:
            await ws.send(message)

    sender = asyncio.create_task(send_all())
    problems = []
    try:
        for i, sent in enumerate(plan):
            received = await ws.recv()
            if type(received) is not type(sent):
                problems.append(
                    f"message {i}: sent {type(sent).__name__}, got {type(received).__name__}"
                )
            elif received != sent:
                problems.append(f"message {i}: {len(sent)} sent, {len(received)} came back altered")
        await sender
    finally:
        sender.cancel()
    await ws.close()
    if ws.close_code != 1000:
        problems.append(f"closed with {ws.close_code} {ws.close_reason!r}")
    return problems


async def test_500_concurrent_connections_echo_every_byte_through_nginx(make_stack) -> None:
    stack = make_stack(nginx_env=NGINX_ENV)
    assert_limits_in_force(stack)
    plans = [message_plan(i) for i in range(CONNECTIONS)]
    async with asyncio.timeout(seconds(150)):
        opened = await asyncio.gather(*(open_connection(stack.url) for _ in range(CONNECTIONS)))
        failed = Counter(describe(c) for c in opened if isinstance(c, BaseException))
        connections = [c for c in opened if not isinstance(c, BaseException)]
        try:
            assert not failed, f"handshakes failed of {CONNECTIONS}: {dict(failed)}"
            results = await asyncio.gather(
                *(echo_all(ws, plan) for ws, plan in zip(connections, plans, strict=True)),
                return_exceptions=True,
            )
        finally:
            await asyncio.gather(*(ws.close() for ws in connections), return_exceptions=True)
    errors = [
        f"connection {i}: {r!r}" for i, r in enumerate(results) if isinstance(r, BaseException)
    ]
    problems = [
        f"connection {i}: {p}" for i, r in enumerate(results) if isinstance(r, list) for p in r
    ]
    assert not errors, f"{len(errors)} connections failed: {errors[:5]}"
    assert not problems, f"{len(problems)} echoes wrong: {problems[:5]}"
    # Every size class and both frame types really went through.
    sent = [m for plan in plans for m in plan]
    assert {len(m) if isinstance(m, bytes) else len(m.encode()) for m in sent} >= set(EDGE_SIZES)
    assert any(isinstance(m, str) and len(m.encode()) > 60000 for m in sent)
    assert any(isinstance(m, bytes) and len(m) == MAX_SIZE for m in sent)
    # NGINX refused nothing: its log has no 429 (rate or per-IP cap) and no 5xx for /ws.
    log = stack.nginx.logs()
    refused = re.findall(r'"status":(429|5\d\d)\b', log)
    assert not refused, f"NGINX answered {len(refused)} requests with {sorted(set(refused))}"


def assert_limits_in_force(stack) -> None:
    """The per-IP limits NGINX runs with are the ones stated above, not switched off."""
    code, rendered = stack.nginx.exec(["cat", "/tmp/nginx/snippets/gateway-locations.conf"])
    assert code == 0, rendered
    assert "limit_req zone=ws_handshake burst=1000 nodelay;" in rendered
    assert "limit_conn ws_conn 1000;" in rendered
    code, zones = stack.nginx.exec(["cat", "/tmp/nginx/conf.d/40-rate-limits.conf"])
    assert code == 0, zones
    assert "rate=100r/m;" in zones  # the default rate: the limiter stays on
