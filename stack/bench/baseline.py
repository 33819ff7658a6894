"""The bare ``websockets`` echo the gateway is compared with: a few lines, nothing else.

It runs in a container of the server image (same Python, same websockets and uvloop, same
CPU and memory limits from docker-compose.yaml) on the stack's backend network, so the
only difference from the gateway is the gateway's own code. Library defaults throughout
(compression is offered, but the load generator does not ask for it; the library's
keepalive pings every 20 s); no logging handler, no metrics.
"""

from __future__ import annotations

from contextlib import suppress
from pathlib import Path

import docker.errors

from stack import compose_file, images
from stack.containers import Service
from stack.docker_client import client
from stack.gateway import GatewayStack

PORT = 3000

# The program itself. Handed over as ``python3 -c`` text, not copied in as a file: the
# container's root filesystem is read-only (the server's compose settings), and Docker
# copies no file into one.
PROGRAM = Path(__file__).with_name("baseline_echo.py")


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
        command=["python3", "-c", PROGRAM.read_text()],
        **compose_file.runtime_kwargs("server"),
    )
