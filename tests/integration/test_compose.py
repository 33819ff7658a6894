"""docker-compose.yaml itself: `docker compose up --wait` starts both, and ws://.../ws echoes;
with docker-compose.host-network.yaml too."""

from __future__ import annotations

import ipaddress
import socket
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from websockets.sync.client import connect

from stack import compose_file, docker_host, images
from stack.compose_file import COMPOSE_FILE, HOST_NETWORK_FILE
from stack.containers import parse_json_lines
from stack.docker_client import client
from stack.harness_config import subprocess_env
from stack.ports import free_port
from stack.waits import until

pytestmark = pytest.mark.e2e


@pytest.fixture
def compose_project(gateway_images: dict[str, str]) -> Iterator[tuple[str, int, dict[str, str]]]:
    """A compose project with a unique name on a free loopback port; always taken down."""
    name = f"wsgw-compose-{uuid.uuid4().hex[:8]}"
    port = free_port()
    env = {
        **subprocess_env(),
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


def compose_up(base: list[str], env: dict[str, str]) -> None:
    """``docker compose ... up --build --wait``: every service healthy, or the test fails."""
    up = subprocess.run(
        [*base, "up", "--build", "--wait", "--wait-timeout", "120"],
        env=env,
        capture_output=True,
        text=True,
        cwd=Path(COMPOSE_FILE).parent,
    )
    assert up.returncode == 0, up.stdout + up.stderr


def test_compose_up_starts_both_and_echoes_through_nginx(compose_project) -> None:
    """`docker compose up --build --wait` brings both services up healthy; the echo works."""
    name, port, env = compose_project
    base = ["docker", "compose", "-f", str(COMPOSE_FILE), "-p", name]
    compose_up(base, env)
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


def free_subnet() -> str:
    """A /24 in 10.254.0.0/16 that overlaps no Docker network on this engine.

    Outside Docker's default address pools (172.17-31.0.0/16, 192.168.0.0/16), so stacks
    that other test workers start meanwhile are not given an overlapping one.
    """
    taken = [
        ipaddress.ip_network(config["Subnet"])
        for network in client().networks.list()
        for config in (network.attrs.get("IPAM") or {}).get("Config") or []
        if "Subnet" in config
    ]
    for third in range(254, 0, -1):
        subnet = ipaddress.ip_network(f"10.254.{third}.0/24")
        if not any(subnet.overlaps(other) for other in taken):
            return str(subnet)
    raise AssertionError("no free 10.254.x.0/24 subnet on this engine")


def own_address(peer: str) -> str:
    """This process's address as ``peer`` sees it (the source address of a route to it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.connect((peer, 9))
        return str(probe.getsockname()[0])


def listening(container) -> set[tuple[str, int]]:
    """(address, port) of every listening TCP socket in ``container``'s network namespace,
    read from the kernel's own tables (/proc/net/tcp, tcp6), not from NGINX's config."""
    result = container.exec_run(["cat", "/proc/net/tcp", "/proc/net/tcp6"])
    assert result.exit_code == 0, result.output
    found = set()
    for line in result.output.decode().splitlines():
        fields = line.split()
        if len(fields) < 4 or fields[3] != "0A":  # 0A: TCP_LISTEN (the header line too)
            continue
        address, port = fields[1].split(":")
        raw = bytes.fromhex(address)
        # Each 32-bit word is in host (little-endian) order.
        raw = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
        found.add((str(ipaddress.ip_address(raw)), int(port, 16)))
    return found


def test_host_network_override_echoes_without_docker_proxy(compose_project) -> None:
    """docker-compose.host-network.yaml: NGINX listens on the host's port itself, so clients
    reach it without docker-proxy, and it sees their own address (through docker-proxy,
    every client is the bridge's gateway)."""
    name, port, env = compose_project
    subnet = free_subnet()
    env = {**env, "BACKEND_SUBNET": subnet, "SERVER_ADDRESS": subnet.replace(".0/24", ".10")}
    files = ["-f", str(COMPOSE_FILE), "-f", str(HOST_NETWORK_FILE)]
    base = ["docker", "compose", *files, "-p", name]
    compose_up(base, env)
    nginx = client().containers.get(f"{name}-nginx-1")
    assert nginx.attrs["HostConfig"]["NetworkMode"] == "host"
    assert nginx.attrs["NetworkSettings"]["Ports"] in ({}, None)  # nothing for docker-proxy
    host = docker_host.address()
    payload = bytes(range(256)) * 4
    with connect(f"ws://{host}:{port}/ws", open_timeout=10) as ws:
        ws.send(payload)
        assert ws.recv(timeout=10) == payload
    server = client().containers.get(f"{name}-server-1")

    def opened() -> list[dict]:
        events = parse_json_lines(server.logs().decode())
        return [e for e in events if e.get("event") == "connection_open"]

    # Log lines reach `docker logs` a moment later (written together, up to 50 ms apart).
    assert [e["client"] for e in until(opened, "connection_open in the server log", 10)] == [
        own_address(host)
    ]
    # On the host's network every address is the host's: NGINX listens where GATEWAY_BIND
    # says, and its status listener on loopback only.
    sockets = listening(nginx)
    assert {address for address, p in sockets if p == port} == {env["GATEWAY_BIND"]}, sockets
    assert {address for address, p in sockets if p == 8081} == {"127.0.0.1"}, sockets


def non_loopback_address() -> str:
    """An IPv4 address of this machine other than loopback: the Docker host's, when this
    process reaches it by one; else this host's own, its main interface's before bridges."""
    reached = docker_host.address()
    if not ipaddress.ip_address(reached).is_loopback:
        return reached
    listing = subprocess.run(
        ["ip", "-4", "-o", "addr", "show", "scope", "global"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    found = [(line.split()[1], line.split()[3].split("/")[0]) for line in listing.splitlines()]
    bridges = ("docker", "br-", "veth")
    ranked = sorted(found, key=lambda item: item[0].startswith(bridges))
    assert ranked, f"this host has no IPv4 address but loopback:\n{listing}"
    return ranked[0][1]


def test_compose_defaults_answer_clients_on_the_hosts_own_address(compose_project) -> None:
    """With the compose file's defaults (no SERVER_NAMES), a client that uses the host's
    non-loopback address (so Host is that address, as on a LAN) gets its echo."""
    name, port, env = compose_project
    address = non_loopback_address()
    env = {**env, "GATEWAY_BIND": address}
    del env["SERVER_NAMES"]
    base = ["docker", "compose", "-f", str(COMPOSE_FILE), "-p", name]
    compose_up(base, env)
    with connect(f"ws://{address}:{port}/ws", open_timeout=10) as ws:
        ws.send("from the LAN ✓")
        assert ws.recv(timeout=10) == "from the LAN ✓"


def test_compose_with_the_room_override_serves_the_room(compose_project) -> None:
    """`-f examples/broadcast_room/compose.yaml` mounts the example and names it in
    WS_HANDLER: a message from one client reaches both."""
    name, port, env = compose_project
    override = Path(COMPOSE_FILE).parent / "examples" / "broadcast_room" / "compose.yaml"
    base = ["docker", "compose", "-f", str(COMPOSE_FILE), "-f", str(override), "-p", name]
    compose_up(base, env)
    url = f"ws://{docker_host.address()}:{port}/ws"
    with connect(url, open_timeout=10) as alice, connect(url, open_timeout=10) as bob:
        bob.send("bob joined")
        assert bob.recv(timeout=10) == "bob joined"
        assert alice.recv(timeout=10) == "bob joined"
