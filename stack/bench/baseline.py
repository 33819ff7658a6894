"""The bare ``websockets`` echo the gateway is compared with: a few lines, nothing else.

It runs in a container of the server image (same Python, same websockets and uvloop, same
CPU and memory limits from docker-compose.yaml) on the stack's backend network, so the
only difference from the gateway is the gateway's own code. Library defaults throughout
(compression is offered, but the load generator does not ask for it; the library's
keepalive pings every 20 s); no logging handler, no metrics.
"""

from __future__ import annotations

from contextlib import suppress

import docker.errors

from stack import compose_file, images
from stack.containers import Service
from stack.docker_client import client
from stack.gateway import GatewayStack

PORT = 3000

# BASELINE_LOOP=asyncio (the default loop) or uvloop.
SOURCE = """\
import asyncio, os
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
"""


def start(stack: GatewayStack, loop: str = "asyncio") -> Service:
    """Start the baseline next to ``stack``'s server, with the server's compose limits.

    It carries the stack's label, so ``stack.down()`` removes it with the rest.
    """
    name = f"{stack.name}-baseline-{loop}"
    with suppress(docker.errors.NotFound):  # left by an interrupted run of the same stack
        client().containers.get(name).remove(force=True)
    return Service.start(
        "baseline",
        images.ensure(images.SERVER),
        name,
        stack.backend,
        env={"BASELINE_LOOP": loop, "PYTHONUNBUFFERED": "1"},
        labels=stack.labels,
        command=["python3", "-c", SOURCE],
        **compose_file.runtime_kwargs("server"),
    )
