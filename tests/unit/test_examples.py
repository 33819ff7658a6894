"""examples/broadcast_room: the room relays each message to every member, alone under
websockets' serve() and unchanged behind the gateway."""

from __future__ import annotations

import asyncio

import pytest
from websockets.asyncio.client import connect
from websockets.asyncio.server import serve

from examples.broadcast_room import room

from .helpers import running_gateway, units, wait_until

pytestmark = pytest.mark.unit

ROOM_HANDLER = "examples.broadcast_room.room:handler"


async def chat(url: str) -> None:
    """Three members: each message reaches all of them, the sender included, in order,
    with its frame type; one who leaves stops receiving and the others go on."""
    async with connect(url) as alice, connect(url) as bob, connect(url) as carol:
        await wait_until(lambda: len(room.ROOM) == 3, what="three members in the room")
        await alice.send("hello from alice")
        await bob.send(b"\x00binary from bob")
        async with asyncio.timeout(units(5)):
            for member in (alice, bob, carol):
                assert await member.recv() == "hello from alice"
                assert await member.recv() == b"\x00binary from bob"
        await carol.close()
        await wait_until(lambda: len(room.ROOM) == 2, what="carol to leave the room")
        await bob.send("still two")
        async with asyncio.timeout(units(5)):
            assert [await alice.recv(), await bob.recv()] == ["still two", "still two"]
    await wait_until(lambda: not room.ROOM, what="an empty room")


async def test_room_alone_under_serve():
    """The handler as written for websockets' serve(), with nothing of the gateway."""
    async with serve(room.handler, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        await chat(f"ws://127.0.0.1:{port}/")


async def test_room_behind_the_gateway():
    """The same handler, unchanged, as WS_HANDLER of the gateway."""
    async with running_gateway(WS_HANDLER=ROOM_HANDLER) as gw:
        await chat(gw.url)
        assert gw.metrics.text.msgs_in == 2 and gw.metrics.binary.msgs_in == 1
