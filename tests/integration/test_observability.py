"""The observability profile: Prometheus scrapes the server and NGINX's exporter, and the
messages a client sends show in ws_messages_total as Prometheus's API answers it."""

from __future__ import annotations

import json
import os
import subprocess
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator

import pytest
from websockets.sync.client import connect

from stack import docker_host, images
from stack.compose_file import COMPOSE_FILE
from stack.ports import free_port
from stack.waits import until

pytestmark = pytest.mark.e2e


@pytest.fixture
def observability_project(gateway_images: dict[str, str]) -> Iterator[tuple[int, int]]:
    """`up --wait` of the profile under a unique project name; always `down -v` after."""
    name = f"wsgw-observe-{uuid.uuid4().hex[:8]}"
    gateway_port, prometheus_port = free_port(), free_port()
    env = {
        **os.environ,
        **images.env_for_compose(observability=True),
        "COMPOSE_PROFILES": "observability",
        "GATEWAY_BIND": docker_host.publish_address(),
        "SERVER_NAMES": docker_host.server_names(),
        "GATEWAY_PORT": str(gateway_port),
        "PROMETHEUS_BIND": docker_host.publish_address(),
        "PROMETHEUS_PORT": str(prometheus_port),
        "PROMETHEUS_SCRAPE_INTERVAL": "1s",
        "DOCKER_BUILDKIT": "0",
    }
    base = ["docker", "compose", "-f", str(COMPOSE_FILE), "-p", name]
    try:
        up = subprocess.run(
            [*base, "up", "--build", "--wait", "--wait-timeout", "180"],
            env=env,
            capture_output=True,
            text=True,
            cwd=COMPOSE_FILE.parent,
        )
        assert up.returncode == 0, up.stdout + up.stderr
        yield gateway_port, prometheus_port
    finally:
        subprocess.run(
            [*base, "down", "-v", "--remove-orphans", "-t", "5"],
            env=env,
            capture_output=True,
            check=False,
        )


def api(port: int, path: str, **params: str) -> dict:
    query = f"?{urllib.parse.urlencode(params)}" if params else ""
    url = f"http://{docker_host.address()}:{port}/api/v1/{path}{query}"
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.load(response)["data"]


def target_health(port: int) -> dict[str, str]:
    """Job -> health of its target, as Prometheus reports them."""
    return {t["labels"]["job"]: t["health"] for t in api(port, "targets")["activeTargets"]}


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
