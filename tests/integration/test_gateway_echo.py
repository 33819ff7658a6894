"""Echo through NGINX and straight to the server, on the private network."""

from __future__ import annotations

import os

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

MIB = 1024 * 1024


@pytest.fixture(params=["nginx", "direct"])
def url(request: pytest.FixtureRequest, stack) -> str:
    """The WebSocket URL through NGINX, or straight to the server's backend address."""
    return stack.url if request.param == "nginx" else stack.server_url


@pytest.mark.parametrize(
    "message",
    [
        "hello, gateway",
        "",
        "héllo wörld ✓ 日本語 🚀",
        b"",
        bytes(range(256)),
        os.urandom(64 * 1024),
    ],
    ids=["text", "empty-text", "unicode", "empty-binary", "all-byte-values", "binary-64k"],
)
def test_echo_is_identical_in_content_and_frame_type(url: str, message: str | bytes) -> None:
    """Every message comes back byte for byte, text as text and binary as binary."""
    with connect(url, open_timeout=10) as ws:
        ws.send(message)
        echoed = ws.recv(timeout=10)
    assert type(echoed) is type(message)
    assert echoed == message


def test_exactly_one_mebibyte_is_echoed(url: str) -> None:
    """A message of exactly 1 MiB is within the limit and comes back intact."""
    message = os.urandom(MIB)
    with connect(url, open_timeout=10, max_size=2 * MIB) as ws:
        ws.send(message)
        assert ws.recv(timeout=30) == message


def test_one_byte_over_a_mebibyte_closes_with_1009(url: str) -> None:
    """1 MiB + 1 byte closes that connection with 1009 (message too big)."""
    with connect(url, open_timeout=10, max_size=2 * MIB) as ws:
        ws.send(os.urandom(MIB + 1))
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=30)
    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code == 1009


def test_many_messages_on_one_connection_come_back_in_order(url: str) -> None:
    """A persistent connection echoes a sequence in order, every byte checked."""
    messages = [os.urandom(n) if n % 2 else f"message {n}" * n for n in range(200)]
    with connect(url, open_timeout=10) as ws:
        for message in messages:
            ws.send(message)
        echoed = [ws.recv(timeout=10) for _ in messages]
    assert echoed == messages
