"""NGINX limits WebSocket handshakes per client IP and answers 429 past the limit."""

from __future__ import annotations

from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from stack.waits import until


def handshake_status(url: str) -> int:
    """101 for an accepted WebSocket handshake, otherwise the HTTP status NGINX answered."""
    try:
        with connect(url, open_timeout=10):
            return 101
    except InvalidStatus as e:
        return e.response.status_code


def test_handshakes_past_the_rate_and_burst_get_429_then_recover(make_stack) -> None:
    """Past rate + burst every handshake gets 429; once a slot frees up, one passes again."""
    # 30 per minute is one slot every 2 s; the stack's own readiness check may have used
    # some of the burst, so the test does not count passes: it drives past the burst.
    stack = make_stack(nginx_env={"WS_RATE_LIMIT": "30r/m", "WS_RATE_BURST": "3"})
    statuses = [handshake_status(stack.url) for _ in range(10)]
    assert set(statuses) <= {101, 429}, statuses  # refused is 429, never 5xx or a reset
    assert statuses[-3:] == [429, 429, 429], statuses
    first_refused = statuses.index(429)
    assert all(status == 429 for status in statuses[first_refused:]), statuses
    until(
        lambda: handshake_status(stack.url),
        "a handshake passes again",
        10,
        accept=lambda status: status == 101,
    )
