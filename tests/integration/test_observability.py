"""The observability profile: Prometheus scrapes the server and NGINX's exporter, and the
messages a client sends show in ws_messages_total as Prometheus's API answers it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from websockets.sync.client import connect

from stack import docker_host
from stack.observability import api, profile, target_health
from stack.waits import until

pytestmark = pytest.mark.e2e


@pytest.fixture
def observability_project(gateway_images: dict[str, str]) -> Iterator[tuple[int, int]]:
    """`up --wait` of the profile under a unique project name; always `down -v` after."""
    with profile(scrape_interval="1s") as ports:
        yield ports


def messages_in(port: int) -> float:
    result = api(port, "query", query='sum(ws_messages_total{direction="in"})')["result"]
    return float(result[0]["value"][1]) if result else -1.0


def test_prometheus_scrapes_both_targets_and_counts_the_messages_sent(
    observability_project,
) -> None:
    """Both targets are up; 7 messages sent through NGINX show in ws_messages_total."""
    gateway_port, prometheus_port = observability_project
    health = until(
        lambda: target_health(prometheus_port),
        "server and nginx targets up in Prometheus",
        timeout=60,
        accept=lambda h: h.get("server") == "up" and h.get("nginx") == "up",
    )
    assert health["prometheus"] == "up"
    with connect(f"ws://{docker_host.address()}:{gateway_port}/ws", open_timeout=10) as ws:
        for n in range(7):
            ws.send(f"observed {n}")
            assert ws.recv(timeout=10) == f"observed {n}"
    until(
        lambda: messages_in(prometheus_port),
        "7 messages in ws_messages_total from Prometheus's API",
        timeout=60,
        accept=lambda count: count == 7,
    )
    nginx = api(prometheus_port, "query", query="nginx_up")["result"]
    assert [float(r["value"][1]) for r in nginx] == [1.0]
