"""Only NGINX reaches the server: a container on any other network cannot connect to it.

Each probe is a short-lived container of the server image (it has python3) that tries a TCP
connection to the server's backend address and to the name ``server``, and prints what
happened as JSON. The positive control runs the same probe on the backend network, so a
negative result means "isolated", not "the probe is broken".
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from contextlib import suppress

import docker.errors
import pytest
from testcontainers.core.network import Network

from stack.containers import Service
from stack.gateway import SERVER_PORT
from stack.waits import seconds

# Runs inside the probe container: argv = connect timeout (s), then host:port targets.
PROBE = r"""
import json, socket, sys, time
timeout = float(sys.argv[1])
results = {}
for target in sys.argv[2:]:
    host, port = target.rsplit(":", 1)
    started = time.monotonic()
    try:
        with socket.create_connection((host, int(port)), timeout=timeout):
            outcome = "connected"
    except OSError as e:
        outcome = f"{type(e).__name__}: {e}"
    results[target] = {"outcome": outcome, "seconds": round(time.monotonic() - started, 2)}
print(json.dumps(results), flush=True)
"""
CONNECT_TIMEOUT = 3  # units: long enough for a reachable server, short enough to fail fast
DEADLINE = 30  # units: for the whole probe container, DNS failures included


def probe(stack, image: str, network: Network, targets: list[str]) -> dict[str, dict]:
    """Run the probe on ``network`` against ``targets``; return its results per target."""
    container = Service.start(
        "isolation-probe",
        image,
        f"{stack.name}-isolation-{uuid.uuid4().hex[:6]}",
        network,
        labels=stack.labels,
        command=["python3", "-c", PROBE, str(seconds(CONNECT_TIMEOUT)), *targets],
        read_only=True,
        cap_drop=["ALL"],
        security_opt=["no-new-privileges:true"],
        mem_limit="64m",
        pids_limit=32,
    )
    try:
        code = container.wait_exit(DEADLINE)
        logs = container.logs()
        assert code == 0, f"probe failed on {network.name}:\n{logs}"
        return json.loads(logs.strip().splitlines()[-1])
    finally:
        container.remove()


@pytest.fixture
def other_network(stack) -> Iterator[Network]:
    """A user-defined bridge network of this test's own, with nothing of the stack on it."""
    network = Network(docker_network_kw={"driver": "bridge", "labels": dict(stack.labels)})
    network.name = f"{stack.name}-outsider-{uuid.uuid4().hex[:6]}"
    network.create()
    try:
        yield network
    finally:
        with suppress(docker.errors.NotFound, docker.errors.APIError):
            network.remove()


def targets(stack) -> list[str]:
    return [f"{stack.server_ip}:{SERVER_PORT}", f"server:{SERVER_PORT}"]


def assert_unreachable(results: dict[str, dict]) -> None:
    for target, result in results.items():
        assert result["outcome"] != "connected", f"{target} is reachable: {result}"
        assert result["seconds"] <= seconds(DEADLINE), result


def test_server_unreachable_from_another_network(stack, gateway_images, other_network) -> None:
    """A container on a network of its own can neither connect to the server's address nor
    resolve its name."""
    results = probe(stack, gateway_images["server"], other_network, targets(stack))
    assert_unreachable(results)
    assert "gaierror" in results[f"server:{SERVER_PORT}"]["outcome"]


def test_server_unreachable_from_the_edge_network(stack, gateway_images) -> None:
    """A container on NGINX's published (edge) network cannot reach the server either."""
    results = probe(stack, gateway_images["server"], stack.edge, targets(stack))
    assert_unreachable(results)
    assert "gaierror" in results[f"server:{SERVER_PORT}"]["outcome"]


def test_server_reachable_from_the_backend_network(stack, gateway_images) -> None:
    """Positive control: the same probe on the backend network connects, by address and name."""
    results = probe(stack, gateway_images["server"], stack.backend, targets(stack))
    for target, result in results.items():
        assert result["outcome"] == "connected", f"{target}: {result}"
