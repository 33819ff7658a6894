"""docker-compose.yaml itself: `docker compose up --wait` starts both, and ws://.../ws echoes."""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from websockets.sync.client import connect

from stack import compose_file, docker_host, images
from stack.compose_file import COMPOSE_FILE
from stack.ports import free_port

pytestmark = pytest.mark.e2e


@pytest.fixture
def compose_project(gateway_images: dict[str, str]) -> Iterator[tuple[str, int, dict[str, str]]]:
    """A compose project with a unique name on a free loopback port; always taken down."""
    name = f"wsgw-compose-{uuid.uuid4().hex[:8]}"
    port = free_port()
    env = {
        **os.environ,
        **images.env_for_compose(),
        "GATEWAY_BIND": docker_host.publish_address(),
        "SERVER_NAMES": docker_host.server_names(),
        "GATEWAY_PORT": str(port),
        # The classic builder: this Docker Engine may have no BuildKit/buildx.
        "DOCKER_BUILDKIT": "0",
    }
    try:
        yield name, port, env
    finally:
        compose_file.down(name, env)


def test_compose_up_starts_both_and_echoes_through_nginx(compose_project) -> None:
    """`docker compose up --build --wait` brings both services up healthy; the echo works."""
    name, port, env = compose_project
    base = ["docker", "compose", "-f", str(COMPOSE_FILE), "-p", name]
    up = subprocess.run(
        [*base, "up", "--build", "--wait", "--wait-timeout", "120"],
        env=env,
        capture_output=True,
        text=True,
        cwd=Path(COMPOSE_FILE).parent,
    )
    assert up.returncode == 0, up.stdout + up.stderr
    message = "through compose ✓"
    with connect(f"ws://{docker_host.address()}:{port}/ws", open_timeout=10) as ws:
        ws.send(message)
        assert ws.recv(timeout=10) == message
        ws.send(b"\x00\xff binary")
        assert ws.recv(timeout=10) == b"\x00\xff binary"
    ps = subprocess.run(
        [*base, "ps", "--format", "{{.Service}} {{.Health}}"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert sorted(ps.stdout.split("\n")[:2]) == ["nginx healthy", "server healthy"], ps.stdout
