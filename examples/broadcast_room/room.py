"""A broadcast room: each message a client sends goes to every client in the room, the
sender included, with its frame type.

Written for ``websockets.asyncio.server.serve`` and nothing else, so it runs unchanged
alone or behind the gateway:

    python examples/broadcast_room/room.py                 # alone: ws://localhost:8765
    WS_HANDLER=examples.broadcast_room.room:handler .venv/bin/python -m server

The room is one process's: with WS_WORKERS above 1 each worker has its own room, so
clients on different workers do not hear each other (share state through a broker then).
"""

from __future__ import annotations

import asyncio

from websockets.asyncio.server import ServerConnection, broadcast, serve

ROOM: set[ServerConnection] = set()


async def handler(websocket: ServerConnection) -> None:
    """Join the room, relay each message to everyone in it, leave when the connection ends."""
    ROOM.add(websocket)
    try:
        async for message in websocket:
            # broadcast() writes to each member without waiting for slow ones: behind the
            # gateway, one that stops reading is bounded by WS_MEMORY_BUDGET and the heartbeat.
            broadcast(ROOM, message)
    finally:
        ROOM.discard(websocket)


async def main() -> None:  # pragma: no cover - the standalone way to run it
    async with serve(handler, "localhost", 8765) as server:
        await server.serve_forever()


if __name__ == "__main__":  # pragma: no cover
    asyncio.run(main())
