"""The bare ``websockets`` echo, run as a program in a container of the server image.

stack/bench/baseline.py starts it; ``BASELINE_LOOP=uvloop`` runs it on uvloop, anything
else on asyncio's default loop. Library defaults throughout.
"""

import asyncio
import os

from websockets.asyncio.server import serve


async def echo(ws):
    async for message in ws:
        await ws.send(message)


async def main():
    async with serve(echo, "0.0.0.0", 3000) as server:
        await server.serve_forever()


if os.environ.get("BASELINE_LOOP") == "uvloop":
    import uvloop

    uvloop.run(main())
else:
    asyncio.run(main())
