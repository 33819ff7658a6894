"""Where this process reaches the ports containers publish.

On the Docker host itself or with a remote ``DOCKER_HOST``: testcontainers' ``host()``
(loopback locally, the daemon's name remotely; ``TC_HOST`` overrides). When this process
runs in a container on the host's Docker socket, as CI runners do (``make
test-in-container`` sets ``WSGW_TESTS_IN_CONTAINER=1``), the Docker host is reached at a
gateway address: testcontainers takes the gateway of the started container's network; we
take the gateway of Docker's default ``bridge`` network, one address for every stack and
compose project, known before anything starts, that is the Docker host's own address on a
network only local containers are on (a runner started with ``docker run`` is on it).
Bridge IPs of the containers themselves are never used: Docker isolates networks, so a
process in a container cannot reach them. (``bridge_ip`` mode is not supported.)
"""

from __future__ import annotations

import functools
import ipaddress

from testcontainers.core.docker_client import DockerClient

from stack import harness_config

LOOPBACK = {"localhost", "127.0.0.1", "::1"}


@functools.cache
def address() -> str:
    """The host name or IP that reaches published ports from here ("127.0.0.1" locally).

    The bridge gateway only when asked (``WSGW_TESTS_IN_CONTAINER=1``): a machine that is
    itself a container running its own daemon also has ``/.dockerenv``, and there the
    Docker host is reached on loopback; nothing but loopback is targeted unless asked.
    """
    docker = DockerClient()
    if not harness_config.current().in_container:  # ci/test-in-container.sh sets it
        host = docker.host()
        return "127.0.0.1" if host in LOOPBACK else host
    (config,) = docker.client.networks.get("bridge").attrs["IPAM"]["Config"][:1]
    # Docker gives the bridge the subnet's first address when none is configured.
    return config.get("Gateway") or str(ipaddress.ip_network(config["Subnet"])[1])


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
