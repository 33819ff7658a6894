"""One-off containers on a stack's own networks, for what the host cannot do itself.

* a client with an address of its own (the host reaches NGINX from one address only, so a
  second client IP for the per-IP limits has to be a container on the edge network);
* a placeholder holding an address on a network (so the next container gets another);
* a peer on the backend network, for what only the backend may reach (the server itself:
  the test process reaches containers only through published ports and ``docker exec``).

They run the server image (python3 and websockets are in it) as its unprivileged user,
start through :meth:`stack.containers.Service.start` like every container of the stack,
and carry the stack's label: ``GatewayStack.down()`` removes them with the rest.
"""

from __future__ import annotations

import io
import json
import sys
import tarfile
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

from testcontainers.core.network import Network

from stack import echo_exchange, images
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


class Peer(Helper):
    """A helper that stays up; :meth:`exchange` runs an echo exchange from inside it."""

    def exchange(
        self,
        url: str,
        messages: list[str | bytes],
        max_size: int = echo_exchange.DEFAULT_MAX_SIZE,
        timeout: float = 10,
    ) -> dict[str, Any]:
        """:func:`stack.echo_exchange.exchange` run in this container; same result."""
        spec = {
            "url": url,
            "messages": [echo_exchange.encode(m) for m in messages],
            "max_size": max_size,
            "timeout": timeout,
        }
        script = Path(echo_exchange.__file__).read_bytes()
        # Through the Docker API, not a bind mount: works wherever the daemon is.
        self.docker.put_archive(
            "/tmp", _tar({"echo_exchange.py": script, "spec.json": json.dumps(spec).encode()})
        )
        code, out = self.exec(["python3", "/tmp/echo_exchange.py", "/tmp/spec.json"])
        assert code == 0, f"echo exchange in {self.name} failed: {out[-2000:]}"
        result = json.loads(out.strip().splitlines()[-1])
        result["echoed"] = [echo_exchange.decode(m) for m in result["echoed"]]
        return result


def _tar(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


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
    return _start(stack, network, name, image, env=env, command=["python3", "-u", "-c", code])


# Where :func:`program` copies a program and the modules it imports.
PROGRAM_DIR = "/tmp/program"


def program(
    stack: GatewayStack,
    network: Network,
    path: Path,
    name: str,
    env: dict[str, str] | None = None,
    image: str | None = None,
    modules: Sequence[ModuleType] = (),
    **limits: Any,
) -> Helper:
    """Run the Python program ``path`` in a container on ``network`` (of ``stack``); don't wait.

    The program and the ``modules`` of this repository it imports (their packages'
    ``__init__.py`` too) are copied into PROGRAM_DIR before it starts, as echo_exchange.py
    is: files a linter reads, not code in strings. ``image`` as for :func:`python`;
    ``limits`` are docker-py ``containers.create`` keywords (``cpu_shares``, ...).
    """
    files = {f"{PROGRAM_DIR}/{path.name}": path}
    for module in modules:
        parts = module.__name__.split(".")
        for depth in range(1, len(parts)):
            package = sys.modules[".".join(parts[:depth])]
            files[f"{PROGRAM_DIR}/{'/'.join(parts[:depth])}/__init__.py"] = Path(package.__file__)
        files[f"{PROGRAM_DIR}/{'/'.join(parts)}.py"] = Path(module.__file__)
    command = ["python3", "-u", f"{PROGRAM_DIR}/{path.name}"]
    return _start(stack, network, name, image, env=env, command=command, files=files, **limits)


def _start(
    stack: GatewayStack, network: Network, name: str, image: str | None, **options: Any
) -> Helper:
    """A helper of ``stack`` named ``name``; ``options`` as for :meth:`Service.start`."""
    image = image or images.ensure(images.SERVER)
    full_name = f"{stack.name}-{name}"
    return Helper.start(name, image, full_name, network, labels=stack.labels, **options)


def backend_peer(stack: GatewayStack, name: str = "peer") -> Peer:
    """A :class:`Peer` on ``stack``'s backend network, up until removed."""
    return Peer.start(
        name,
        images.ensure(images.SERVER),
        f"{stack.name}-{name}",
        stack.backend,
        labels=stack.labels,
        command=["python3", "-c", "import signal; signal.pause()"],
    )


def placeholder(stack: GatewayStack, network: Network, name: str = "placeholder") -> Helper:
    """A container that only holds an address on ``network`` until removed."""
    return python(stack, network, "import time; time.sleep(600)", name)
