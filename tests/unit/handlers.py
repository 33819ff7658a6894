"""Application handlers for the gateway's WS_HANDLER tests, written for
``websockets.asyncio.server.serve`` and nothing else."""

from __future__ import annotations

import asyncio
import json
import os

from websockets.asyncio.server import ServerConnection

NOT_A_HANDLER = 42


async def shout(websocket: ServerConnection) -> None:
    """Answer each message in upper case; first say what the handshake carried."""
    request = websocket.request
    assert request is not None
    await websocket.send(
        json.dumps(
            {
                "path": request.path,
                "x-test": request.headers.get("X-Test"),
                "pid": os.getpid(),
            }
        )
    )
    async for message in websocket:
        await websocket.send(message.upper() if isinstance(message, str) else message[::-1])


async def fail_on_boom(websocket: ServerConnection) -> None:
    """Echo, but raise on the message ``boom``: a bug in the application."""
    async for message in websocket:
        if message == "boom":
            raise RuntimeError("the handler broke on purpose")
        await websocket.send(message)


async def one_answer(websocket: ServerConnection) -> None:
    """Answer one message, then return without closing."""
    await websocket.send(f"only {await websocket.recv()}")


async def never_reads(websocket: ServerConnection) -> None:
    """Hold the connection without reading anything until it closes."""
    await websocket.wait_closed()


def sync_handler(websocket: ServerConnection) -> None:
    """Not a coroutine function: refused at start."""


async def legacy_handler(websocket: ServerConnection, path: str) -> None:
    """The legacy (websocket, path) signature: refused at start."""


class Room:
    """A callable object with an async __call__ is a handler too."""

    async def __call__(self, websocket: ServerConnection) -> None:
        async for message in websocket:
            await websocket.send(message)


room = Room()


async def outlives_its_connection(websocket: ServerConnection) -> None:
    """Keep running after the connection closes (cleanup that hangs): a drain must not wait."""
    await websocket.wait_closed()
    await asyncio.Event().wait()


async def fragments(websocket: ServerConnection) -> None:
    """Answer each message as a fragmented one: its two halves, sent as an iterable."""
    async for message in websocket:
        half = len(message) // 2
        await websocket.send([message[:half], message[half:]])


async def first_only(websocket: ServerConnection) -> None:
    """Answer the first message and return, leaving what else the client sent unread."""
    await websocket.send(await websocket.recv())
