"""python -m stack swarm: up, echo through NGINX over several replicas, down.

Holds a machine-wide lock (one swarm per host), always tears down, and leaves the swarm
when `up` created it, also when the test fails: the host ends in the swarm state it
started in. In a test run the swarm is the run's (conftest.py): made before any stack
starts, left after the last.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pytest
from websockets.sync.client import connect

from stack import swarm
from stack.waits import until

# Swarm init and leave rewire Docker's networking, and stacks beside them answered 502: the
# marker makes the run a swarm before any stack starts (conftest.py).
pytestmark = pytest.mark.swarm

REPLICAS = 3
CONNECTIONS = 9


@pytest.fixture
def swarm_url(gateway_images: dict[str, str]) -> Iterator[str]:
    """The stack deployed on a swarm; removed (and the swarm left if we made it) after."""
    with swarm.deployed(REPLICAS) as url:
        yield url


def test_swarm_up_echoes_through_nginx_over_several_replicas(swarm_url: str) -> None:
    """Every replica gets healthy, echoes are intact, least_conn spreads connections."""
    until(
        lambda: sum(swarm.health(c) == "healthy" for c in swarm.containers("server")),
        f"{REPLICAS} healthy server replicas",
        120,
        accept=lambda healthy: healthy == REPLICAS,
    )
    with contextlib.ExitStack() as open_:
        for i in range(CONNECTIONS):
            ws = open_.enter_context(connect(swarm_url, open_timeout=5, proxy=None))
            ws.send(f"hello {i} ✓")
            assert ws.recv(timeout=5) == f"hello {i} ✓"
        gauges = [swarm.active_connections(c) for c in swarm.containers("server")]
        assert sum(gauges) == CONNECTIONS, gauges
        assert sum(g > 0 for g in gauges) >= 2, f"one replica took them all: {gauges}"
    # Between nodes the overlays carry clear WebSocket frames: both are encrypted (IPsec).
    for network in ("edge", "backend"):
        options = swarm.docker(
            "network", "inspect", "--format", "{{json .Options}}", f"{swarm.STACK}_{network}"
        )
        assert '"encrypted":"true"' in options.replace(" ", ""), (network, options)
