"""A private copy of the gateway: server and NGINX on their own networks, as in compose.

    with GatewayStack.up("wsgw-demo") as stack:
        stack.url                  # ws://127.0.0.1:<port>/ws, through NGINX
        stack.server_get("/readyz")  # (200, headers, body), asked inside the server
        stack.server.restart()       # the records (stack.server_ip, stack.url) follow

The test process reaches NGINX only through its published port, at the address
testcontainers computes (stack/docker_host.py: loopback on the Docker host, the bridge
gateway from inside a container), and the server only through ``docker exec`` or helper
containers on the backend network (stack/helper_containers.py): never by bridge IPs, which
Docker's network isolation hides from a test process that runs in a container.

Addresses are records of the services, read once after each start, restart or network
change: reading them costs no Docker call (clients in the event loop may read them).

Everything a stack creates carries the label ``io.websocket-gateway.stack=<name>`` and is
removed by ``down()``, which ``with`` calls even when the body fails.
"""

from __future__ import annotations

import uuid
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path

import docker.errors
from testcontainers.core.config import testcontainers_config
from testcontainers.core.network import Network
from websockets.sync.client import connect

from stack import compose_file, docker_host, images
from stack.containers import Service
from stack.docker_client import client, image_exists
from stack.ports import free_port
from stack.waits import http_ok, until

LABEL = "io.websocket-gateway.stack"
NGINX_PORT = 8080
NGINX_TLS_PORT = 8443
SERVER_PORT = 3000


def _switch_off_ryuk_without_its_image() -> None:
    """Ryuk reaps leftovers, but its image cannot be pulled everywhere; our teardown suffices."""
    if testcontainers_config.ryuk_disabled:
        return
    ryuk = testcontainers_config.ryuk_image
    if not image_exists(ryuk):
        try:
            client().images.pull(ryuk)
        except docker.errors.APIError:
            testcontainers_config.ryuk_disabled = True


@dataclass
class StackOptions:
    """What a stack may change from the compose defaults."""

    server_env: dict[str, str] = field(default_factory=dict)
    nginx_env: dict[str, str] = field(default_factory=dict)
    tls_dir: Path | None = None  # holds tls.crt and tls.key: NGINX then serves wss:// too
    # {host path: container path} mounted read-only into the server (a WS_HANDLER's module).
    server_volumes: dict[str, str] = field(default_factory=dict)
    # An image to run as the server instead of the one built from server/ (one built FROM
    # it, with an application's handler: images.ensure_on_server).
    server_image: str | None = None


class GatewayStack:
    """Server and NGINX started from the current code, on networks of their own."""

    def __init__(self, name: str, options: StackOptions | None = None) -> None:
        self.name = name
        self.options = options or StackOptions()
        self.labels = {LABEL: name}
        self.edge = self._network("edge", internal=False)
        self.backend = self._network("backend", internal=True)
        self.server: Service | None = None
        self.nginx: Service | None = None
        self._images: dict[str, str] = {}
        self._server_generation = 0

    @classmethod
    def unique_name(cls, prefix: str = "wsgw") -> str:
        return f"{prefix}-{uuid.uuid4().hex[:8]}"

    @classmethod
    def up(cls, name: str | None = None, options: StackOptions | None = None) -> GatewayStack:
        """Build what changed, start both containers, wait until an echo goes through."""
        stack = cls(name or cls.unique_name(), options)
        try:
            stack.start()
        except BaseException:
            stack.down()
            raise
        return stack

    def __enter__(self) -> GatewayStack:
        return self

    def __exit__(self, *exc: object) -> None:
        self.down()

    # ---- lifecycle -------------------------------------------------------------------------
    def start(self) -> None:
        _switch_off_ryuk_without_its_image()
        self._images = images.ensure_all()
        self.edge.create()
        self.backend.create()
        self.server = self._start_server()
        self.nginx = self._start_nginx()
        self.wait_ready()

    def down(self) -> None:
        """Remove the containers and networks of this stack; safe to call twice."""
        for service in (self.nginx, self.server):
            if service is not None:
                service.remove()
        # Containers started outside our handles (a replaced server) carry the label too.
        for container in client().containers.list(
            all=True, filters={"label": f"{LABEL}={self.name}"}
        ):
            with suppress(docker.errors.NotFound):
                container.remove(force=True, v=True)
        for network in (self.edge, self.backend):
            with suppress(docker.errors.NotFound, AssertionError):
                network.remove()

    def wait_ready(self, timeout: float = 60) -> None:
        """Wait until the server is ready and an echo goes through NGINX."""
        self.wait_server_ready(timeout)
        http_ok(f"{self.http}/healthz", f"{self.name}: nginx healthy", timeout)
        until(
            lambda: self.echo_once(self.url),
            f"{self.name}: echo through nginx",
            timeout,
            errors=(OSError, TimeoutError, Exception),
        )

    @staticmethod
    def echo_once(url: str, payload: str = "stack-ready") -> bool:
        with connect(url, open_timeout=3, close_timeout=1) as ws:
            ws.send(payload)
            return ws.recv(timeout=3) == payload

    def wait_server_ready(self, timeout: float = 60) -> None:
        """Wait until the server's /readyz answers 200 (asked inside its container)."""
        until(
            lambda: self.server_get("/readyz")[0],
            f"{self.name}: server ready",
            timeout,
            accept=lambda status: status == 200,
        )

    def server_get(self, path: str) -> tuple[int, dict[str, str], bytes]:
        """GET ``path`` on the server, from inside its container: (status, headers, body).

        The server publishes no port; this works wherever the Docker API does, also while
        the server is cut off the backend network. OSError when it does not answer.
        """
        return self.server.http_get(SERVER_PORT, path)

    # ---- addresses (read from the services' records: no Docker call) ---------------------------
    @property
    def host(self) -> str:
        """Where NGINX's published ports are reached from here (stack/docker_host.py)."""
        return docker_host.address()

    @property
    def port(self) -> int:
        """Host port of NGINX's 8080 (the same across NGINX restarts)."""
        return self.nginx.host_port(NGINX_PORT)

    @property
    def url(self) -> str:
        return f"ws://{self.host}:{self.port}/ws"

    @property
    def http(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def tls_url(self) -> str:
        return f"wss://{self.host}:{self.nginx.host_port(NGINX_TLS_PORT)}/ws"

    @property
    def server_ip(self) -> str:
        """The server's address on the backend network (KeyError while cut off it).

        A record for reports and for containers on that network; the test process itself
        cannot count on reaching it.
        """
        return self.server.ip(self.backend)

    # ---- parts -----------------------------------------------------------------------------
    def _network(self, role: str, internal: bool) -> Network:
        network = Network(docker_network_kw={"internal": internal, "labels": dict(self.labels)})
        network.name = f"{self.name}-{role}"
        return network

    def _start_server(self) -> Service:
        self._server_generation += 1
        suffix = "" if self._server_generation == 1 else f"-{self._server_generation}"
        env = {**compose_file.environment("server"), **self.options.server_env}
        return Service.start(
            "server",
            self.options.server_image or self._images["server"],
            f"{self.name}-server{suffix}",
            self.backend,
            ["server"],
            env,
            self.labels,
            volumes=self.options.server_volumes,
            **compose_file.runtime_kwargs("server"),
        )

    def _start_nginx(self) -> Service:
        env = {
            **compose_file.environment("nginx"),
            # Reached by the test stack's own name too, from probes on its networks, and by
            # the Docker host's address when the tests run in a container.
            "SERVER_NAMES": docker_host.server_names("localhost 127.0.0.1 nginx"),
            **self.options.nginx_env,
        }
        volumes = {}
        if self.options.tls_dir is not None:
            volumes[str(self.options.tls_dir)] = "/etc/nginx/tls"
        for attempt in range(5):
            # A fixed host port, as compose publishes 8080: clients come back to the same
            # URL after NGINX restarts (a port Docker picks changes on every restart).
            ports = {NGINX_PORT: free_port()}
            if self.options.tls_dir is not None:
                ports[NGINX_TLS_PORT] = free_port()
            try:
                return Service.start(
                    "nginx",
                    self._images["nginx"],
                    f"{self.name}-nginx",
                    self.edge,
                    ["nginx"],
                    env,
                    self.labels,
                    also_on=[(self.backend, ["nginx"])],
                    ports=ports,
                    volumes=volumes,
                    **compose_file.runtime_kwargs("nginx"),
                )
            except docker.errors.APIError as e:  # taken since free_port() looked: next one
                if "port is already allocated" not in str(e) or attempt == 4:
                    raise
                remove_all_named(f"{self.name}-nginx")
        raise AssertionError("unreachable")

    def replace_server(self) -> Service:
        """Start a new server container (a new address), then remove the old one."""
        old = self.server
        self.server = self._start_server()
        self.wait_server_ready(30)
        old.remove()
        return self.server

    def disconnect_server(self) -> None:
        """Cut the server off the backend network: NGINX and the server no longer see each other."""
        client().networks.get(self.backend.name).disconnect(self.server.id, force=True)
        self.server.refresh()

    def connect_server(self) -> None:
        self.backend.connect(self.server.id, ["server"])
        self.server.refresh()

    def reload_nginx(self) -> tuple[int, str]:
        """Test and re-read the rendered /tmp/nginx/nginx.conf (graceful: old workers drain)."""
        return self.nginx.exec(["wsgw-nginx", "reload"])


def remove_all_named(name: str) -> None:
    """Remove the container called ``name`` if it exists (left by a failed start)."""
    with suppress(docker.errors.NotFound):
        client().containers.get(name).remove(force=True, v=True)


def remove_all(name: str | None = None) -> int:
    """Remove every container and network of stack ``name`` (of every stack if None)."""
    selector = f"{LABEL}={name}" if name else LABEL
    removed = 0
    for container in client().containers.list(all=True, filters={"label": selector}):
        with suppress(docker.errors.NotFound):
            container.remove(force=True, v=True)
            removed += 1
    for network in client().networks.list(filters={"label": selector}):
        with suppress(docker.errors.NotFound, docker.errors.APIError):
            network.remove()
    return removed


def stack_names() -> list[str]:
    """Names of the stacks that have containers on this machine."""
    return sorted(
        {c.labels[LABEL] for c in client().containers.list(all=True, filters={"label": LABEL})}
    )


__all__ = ["GatewayStack", "StackOptions", "remove_all", "stack_names"]
