"""One-off containers on a stack's own networks, for what the host cannot do itself.

* a client with an address of its own (the host reaches NGINX from one address only, so a
  second client IP for the per-IP limits has to be a container on the edge network);
* a placeholder holding an address on a network (so the next container gets another).

They run the server image (python3 and websockets are in it) as its unprivileged user,
start through :meth:`stack.containers.Service.start` like every container of the stack,
and carry the stack's label: ``GatewayStack.down()`` removes them with the rest.
(Not to be confused with stack/bench/usage.py, which reads figures from the kernel.)
"""

from __future__ import annotations

import json
from typing import Any

from testcontainers.core.network import Network

from stack import images
from stack.containers import Service
from stack.gateway import GatewayStack

# Lines a helper's script prints with this prefix are its results (JSON).
RESULT = "PROBE "


class Helper(Service):
    """A started one-off container running a Python script."""

    def results(self) -> list[dict[str, Any]]:
        """The JSON objects the script printed on ``PROBE {...}`` lines so far."""
        return [
            json.loads(line[len(RESULT) :])
            for line in self.logs().splitlines()
            if line.startswith(RESULT)
        ]


def python(
    stack: GatewayStack,
    network: Network,
    code: str,
    name: str,
    env: dict[str, str] | None = None,
    image: str | None = None,
) -> Helper:
    """Run ``python3 -c code`` in a container on ``network`` (of ``stack``); don't wait.

    ``image``: the server image's tag when the caller has it (``images.ensure`` hashes the
    build context, about 1.5 s; starting several helpers, resolve it once).
    """
    return Helper.start(
        name,
        image or images.ensure(images.SERVER),
        f"{stack.name}-{name}",
        network,
        env=env,
        labels=stack.labels,
        command=["python3", "-u", "-c", code],
    )


def placeholder(stack: GatewayStack, network: Network, name: str = "placeholder") -> Helper:
    """A container that only holds an address on ``network`` until removed."""
    return python(stack, network, "import time; time.sleep(600)", name)
