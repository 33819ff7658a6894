"""The bench's own stacks: one per setup, with its replicas, limits, baselines and targets.

Addresses: "direct" is the server's address on the stack's backend network, "nginx" is
NGINX's address on the edge network (port 8080, Host: localhost). Both are networks of
this stack only. "published" is the path a user on the host takes: NGINX's port published
on 127.0.0.1, which this engine relays through its userland proxy (``docker-proxy``) unless
the daemon runs with ``"userland-proxy": false``; its rows show what that relay costs.
"host-network" is the same path without the relay, as docker-compose.host-network.yaml runs
it: a second NGINX of the stack on the host's own network, on 127.0.0.1:<free port>, to the
server's backend address.
"""

from __future__ import annotations

from contextlib import suppress
from dataclasses import dataclass

import docker.errors
from rich.progress import Progress

from stack import compose_file, images, prometheus
from stack.bench import baseline
from stack.bench.bench_settings import Settings
from stack.bench.loadgen import Target
from stack.bench.setups import NGINX_BENCH_ENV, SERVER_BENCH_ENV, Setup
from stack.containers import Service
from stack.docker_client import client
from stack.gateway import LABEL, NGINX_PORT, SERVER_PORT, GatewayStack, StackOptions
from stack.ports import free_port
from stack.waits import http_ok, until


@dataclass(frozen=True)
class Session:
    """What every phase is given: the settings, the progress display, its stacks' prefix."""

    settings: Settings
    progress: Progress
    prefix: str  # stack names are <prefix>-<setup key>

    def stack(self, setup: Setup) -> GatewayStack:
        """Start ``setup``'s stack (CPU limit and replicas included); the caller takes it down."""
        name = f"{self.prefix}-{setup.key}"
        options = StackOptions(
            server_env={
                **SERVER_BENCH_ENV,
                **setup.server_env,
                **self.settings.server_env_pairs,
            },
            nginx_env={**NGINX_BENCH_ENV, **setup.nginx_env, **self.settings.nginx_env_pairs},
        )
        task = self.progress.add_task(f"start stack {name}", total=None, info="")
        stack = GatewayStack.up(name, options)
        try:
            if setup.server_cpus:
                set_cpus(stack.server.id, setup.server_cpus)
            for n in range(2, setup.replicas + 1):
                add_replica(stack, n)
        except BaseException:
            stack.down()
            raise
        self.progress.update(task, total=1, completed=1, info="up")
        return stack


def replica_connections(ip: str) -> float:
    """``ws_connections_total`` of the server replica at ``ip`` (its own /metrics), summed
    over its workers: with WS_WORKERS > 1 every sample carries a ``worker`` label."""
    return prometheus.fetch(f"http://{ip}:{SERVER_PORT}/metrics").total("ws_connections_total")


def start_replica(stack: GatewayStack, n: int) -> str:
    """Start server container ``n`` under the network alias "server"; return its address."""
    replica = Service.start(
        "server",
        images.ensure(images.SERVER),
        f"{stack.name}-server-{n}",
        stack.backend,
        ["server"],
        {**compose_file.environment("server"), **stack.options.server_env},
        stack.labels,
        **compose_file.runtime_kwargs("server"),
    )
    return replica.ip(stack.backend)


def add_replica(stack: GatewayStack, n: int) -> None:
    """Another server container behind NGINX (compose --scale), once NGINX routes to it."""
    ip = start_replica(stack, n)
    http_ok(f"http://{ip}:{SERVER_PORT}/readyz", f"replica {n} ready")

    # NGINX re-resolves "server" every RESOLVER_VALID (5 s): handshake through it until
    # the new replica has taken one.
    def routed() -> bool:
        GatewayStack.echo_once(stack.url)
        return replica_connections(ip) > 0

    until(routed, f"NGINX routes to replica {n}", 30, errors=(Exception,))


def start_baseline(stack: GatewayStack, loop: str) -> Service:
    """The bare echo on ``loop`` beside ``stack``'s server, once it echoes."""
    container = baseline.start(stack, loop)
    ip = container.ip(stack.backend)
    until(
        lambda: GatewayStack.echo_once(f"ws://{ip}:{baseline.PORT}/"),
        f"baseline {loop} echoes",
        30,
        errors=(OSError, TimeoutError, Exception),
    )
    return container


def server_ids(stack: GatewayStack) -> list[str]:
    """Every server container of the stack (replicas included)."""
    return [
        c.id
        for c in client().containers.list(filters={"label": f"{LABEL}={stack.name}"})
        if c.name.startswith(f"{stack.name}-server")
    ]


def server_ips(stack: GatewayStack) -> list[str]:
    """The backend address of every server container of the stack (replicas included)."""
    return [
        client()
        .containers.get(cid)
        .attrs["NetworkSettings"]["Networks"][stack.backend.name]["IPAddress"]
        for cid in server_ids(stack)
    ]


def target(
    stack: GatewayStack, via: str, baselines: dict[str, Service]
) -> tuple[list[Target], dict[str, str]]:
    """Where the load goes, and which containers' CPU to report."""
    if via.startswith("baseline-"):
        container = baselines[via]
        return [Target(container.ip(stack.backend), baseline.PORT)], {"server": container.id}
    servers = server_ids(stack)
    cpu = {f"server{i + 1 if len(servers) > 1 else ''}": cid for i, cid in enumerate(servers)}
    if via == "direct":
        return [Target(stack.server_ip, SERVER_PORT)], cpu
    cpu["nginx"] = stack.nginx.id
    if via == "published":
        return [Target("127.0.0.1", stack.port)], cpu
    if via == "host-network":
        nginx, port = host_network_nginx(stack)
        cpu["nginx"] = nginx.id
        return [Target("127.0.0.1", port)], cpu
    return [Target(stack.nginx.ip(stack.edge), NGINX_PORT)], cpu


_host_network_nginx: dict[str, tuple[Service, int]] = {}  # by stack name


def host_network_nginx(stack: GatewayStack) -> tuple[Service, int]:
    """``stack``'s NGINX again, on the host's own network (as docker-compose.host-network.yaml
    runs it), once it echoes; and its port on 127.0.0.1. Started on first use; it carries
    the stack's label, so ``stack.down()`` removes it with the rest."""
    if stack.name in _host_network_nginx:
        return _host_network_nginx[stack.name]
    port = free_port()
    env = {
        **compose_file.environment("nginx"),
        **stack.options.nginx_env,
        "LISTEN_PORT": str(port),
        "UPSTREAM_HOST": stack.server_ip,
    }
    nginx = Service.start(
        "nginx",
        images.ensure(images.NGINX),
        f"{stack.name}-nginx-host-network",
        None,
        env=env,
        labels=stack.labels,
        **compose_file.runtime_kwargs("nginx"),
    )
    url = f"ws://127.0.0.1:{port}/ws"
    until(
        lambda: GatewayStack.echo_once(url),
        "NGINX on the host's network echoes",
        30,
        errors=(Exception,),
    )
    _host_network_nginx[stack.name] = nginx, port
    return nginx, port


def limits_text() -> str:
    """The compose file's CPU, memory and descriptor limits of both containers, in words."""
    server = compose_file.runtime_kwargs("server")
    nginx = compose_file.runtime_kwargs("nginx")

    def one(kw: dict) -> str:
        nofile = next((u["Soft"] for u in kw["ulimits"] if u["Name"] == "nofile"), "?")
        cpus, mib = kw["nano_cpus"] / 1e9, kw["mem_limit"] / 2**20
        return f"{cpus:.1f} CPU, {mib:.0f} MiB, nofile {nofile}"

    return f"server {one(server)}; NGINX {one(nginx)}"


def nginx_addresses(stack: GatewayStack, count: int) -> list[str]:
    """``count`` addresses of the stack's NGINX, one per network (edge, backend, then
    networks of the stack's own, created and joined here; :func:`down` removes them).

    The host reaches NGINX from its own address on each network, so every address is a
    (source, destination) pair of its own, with its own ~28,000 ephemeral ports.
    """
    addresses = [stack.nginx.ip(stack.edge), stack.nginx.ip(stack.backend)][:count]
    for n in range(len(addresses), count):
        network = client().networks.create(
            f"{stack.name}-load-{n}", driver="bridge", labels=stack.labels
        )
        network.connect(stack.nginx.id)
        attrs = client().containers.get(stack.nginx.id).attrs
        addresses.append(attrs["NetworkSettings"]["Networks"][network.name]["IPAddress"])
    return addresses


def down(stack: GatewayStack) -> None:
    """Remove the stack and every network of its label (the load networks too)."""
    stack.down()
    for network in client().networks.list(filters={"label": f"{LABEL}={stack.name}"}):
        with suppress(docker.errors.NotFound):
            network.remove()


def set_cpus(container_id: str, cpus: float) -> None:
    """Change a running container's CPU limit (docker update --cpus).

    A private docker-py call, on purpose: ``APIClient.update_container`` (docker-py 7.2.0,
    checked) has no ``NanoCpus``, and its ``cpu_quota``/``cpu_period`` are refused by the
    engine for a container created with ``nano_cpus`` (as compose limits are).
    """
    api = client().api
    response = api._post_json(
        api._url("/containers/{0}/update", container_id), data={"NanoCpus": int(cpus * 1e9)}
    )
    api._raise_for_status(response)


def set_memory(container_id: str, limit: int) -> None:
    """Change a running container's memory limit (docker update --memory, no swap)."""
    client().api.update_container(container_id, mem_limit=limit, memswap_limit=limit)
