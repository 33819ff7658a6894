"""Echo through NGINX and straight to the server, on the private network.

"direct" runs the same exchange (stack/echo_exchange.py) in a helper container on the
backend network: the server publishes no port, and the test process may not reach its
bridge address. Every echoed byte comes back here and is compared here.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from stack import echo_exchange, helper_containers
from stack.gateway import SERVER_PORT

MIB = 1024 * 1024
Exchange = Callable[..., dict[str, Any]]


@pytest.fixture(scope="module")
def backend_peer(stack) -> Iterator[helper_containers.Peer]:
    peer = helper_containers.backend_peer(stack, "echo-peer")
    try:
        yield peer
    finally:
        peer.remove()


@pytest.fixture(params=["nginx", "direct"])
def echo(request: pytest.FixtureRequest, stack) -> Exchange:
    """An echo exchange through NGINX, or straight to the server from the backend network."""
    if request.param == "nginx":
        return functools.partial(echo_exchange.exchange, stack.url)
    peer = request.getfixturevalue("backend_peer")
    return functools.partial(peer.exchange, f"ws://server:{SERVER_PORT}/ws")


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
def test_echo_is_identical_in_content_and_frame_type(echo: Exchange, message: str | bytes) -> None:
    """Every message comes back byte for byte, text as text and binary as binary."""
    (echoed,) = echo([message])["echoed"]
    assert type(echoed) is type(message)
    assert echoed == message


def test_exactly_one_mebibyte_is_echoed(echo: Exchange) -> None:
    """A message of exactly 1 MiB is within the limit and comes back intact."""
    message = os.urandom(MIB)
    assert echo([message], max_size=2 * MIB, timeout=30)["echoed"] == [message]


def test_one_byte_over_a_mebibyte_closes_with_1009(echo: Exchange) -> None:
    """1 MiB + 1 byte closes that connection with 1009 (message too big)."""
    result = echo([os.urandom(MIB + 1)], max_size=2 * MIB, timeout=30)
    assert result["echoed"] == []
    assert result["close_code"] == 1009


def test_many_messages_on_one_connection_come_back_in_order(echo: Exchange) -> None:
    """A persistent connection echoes a sequence in order, every byte checked."""
    messages = [os.urandom(n) if n % 2 else f"message {n}" * n for n in range(200)]
    assert echo(messages)["echoed"] == messages
