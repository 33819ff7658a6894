"""One-off containers on a stack's own networks, for what the host cannot do itself.

* a client with an address of its own (the host reaches NGINX from one address only, so a
  second client IP for the per-IP limits has to be a container on the edge network);
* a placeholder holding an address on a network (so the next container gets another).

Probes run the server image (python3 and websockets are in it) as its unprivileged user
and carry the stack's label: ``GatewayStack.down()`` removes them with the rest.
"""

from __future__ import annotations

import json
from contextlib import suppress
from typing import Any

import docker.errors
from testcontainers.core.network import Network

from stack import images
from stack.docker_client import client
from stack.gateway import GatewayStack
from stack.waits import until

# Lines a probe script prints with this prefix are its results (JSON).
RESULT = "PROBE "


class Probe:
    """A started one-off container."""

    def __init__(self, container: Any) -> None:
        self.container = container

    @property
    def name(self) -> str:
        return self.container.name

    def logs(self) -> str:
        return self.container.logs(stdout=True, stderr=True).decode(errors="replace")

    def results(self) -> list[dict[str, Any]]:
        """The JSON objects the script printed on ``PROBE {...}`` lines so far."""
        out = []
        for line in self.logs().splitlines():
            if line.startswith(RESULT):
                out.append(json.loads(line[len(RESULT) :]))
        return out

    def ip(self, network: Network) -> str:
        self.container.reload()
        return self.container.attrs["NetworkSettings"]["Networks"][network.name]["IPAddress"]

    def exec(self, command: list[str]) -> tuple[int, str]:
        code, out = self.container.exec_run(command)
        return code, out.decode(errors="replace")

    def wait(self, timeout: float = 60) -> int:
        """Wait until the script ends; return its exit code."""
        until(self._status, f"probe {self.name} exits", timeout, accept=lambda s: s == "exited")
        return self.container.attrs["State"]["ExitCode"]

    def _status(self) -> str:
        self.container.reload()
        return self.container.status

    def remove(self) -> None:
        with suppress(docker.errors.NotFound):
            self.container.remove(force=True)


def python(
    stack: GatewayStack, network: Network, code: str, name: str, env: dict[str, str] | None = None
) -> Probe:
    """Run ``python3 -c code`` in a container on ``network`` (of ``stack``); don't wait."""
    container = client().containers.run(
        images.ensure(images.SERVER),
        command=["python3", "-u", "-c", code],
        name=f"{stack.name}-{name}",
        network=network.name,
        labels=dict(stack.labels),
        environment=env or {},
        detach=True,
    )
    return Probe(container)


def placeholder(stack: GatewayStack, network: Network, name: str = "placeholder") -> Probe:
    """A container that only holds an address on ``network`` until removed."""
    return python(stack, network, "import time; time.sleep(600)", name)
