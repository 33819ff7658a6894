"""Where this process reaches the ports containers publish, as testcontainers computes it.

On the Docker host itself that is loopback. In a container that uses the host's Docker
socket (many CI runners) it is the container's default gateway, the Docker host's bridge
address: testcontainers' ``DockerClient().host()`` reads it from ``ip route`` when
``/.dockerenv`` exists. ``TC_HOST`` overrides it; a remote ``DOCKER_HOST`` is reached by
its name. Bridge IPs of other networks are never used: Docker isolates networks from each
other, so a test process in a container cannot reach them.
"""

from __future__ import annotations

import functools
import ipaddress

from testcontainers.core.docker_client import DockerClient

LOOPBACK = {"localhost", "127.0.0.1", "::1"}


@functools.cache
def address() -> str:
    """The host name or IP that reaches published ports from here ("127.0.0.1" locally)."""
    host = DockerClient().host()
    return "127.0.0.1" if host in LOOPBACK else host


def server_names(names: str = "localhost 127.0.0.1") -> str:
    """NGINX's SERVER_NAMES ``names`` plus :func:`address`: the Host header clients send."""
    return " ".join(dict.fromkeys([*names.split(), address()]))


def publish_address() -> str:
    """The Docker host's interface ports are published on: the narrowest that reaches us.

    Loopback on the host itself; the bridge gateway's address from inside a container
    (an address of the Docker host, on a network only local containers are on); every
    interface only for a remote daemon known by name, whose interface we cannot tell.
    """
    host = address()
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return "0.0.0.0"
    return host
