"""The host-side check of a published port: a live /healthz passes, a refused port is named."""

from __future__ import annotations

import asyncio
import socket

import pytest

from server.app import Gateway
from stack import published

pytestmark = pytest.mark.unit


async def test_a_live_port_passes_and_a_dead_one_is_named(gateway: Gateway):
    """/healthz answering 200 is alive; a port nobody listens on reports the refusal."""
    assert await asyncio.to_thread(published.check, "127.0.0.1", gateway.port) is None
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        dead = probe.getsockname()[1]  # bound, not listening: connections are refused
        problem = await asyncio.to_thread(published.check, "127.0.0.1", dead)
    assert problem is not None and problem.startswith("ConnectionRefusedError")
