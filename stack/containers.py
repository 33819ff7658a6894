"""One running container of the stack, with the operations failure scenarios need.

:meth:`Service.start` is the one way the harness starts a container that stays up: the
gateway's server and NGINX, helper containers (stack/helper_containers.py), the bench's
baseline and replicas. :func:`run_once` is the one way it runs a command in an image to
its end (a probe of the base image's Python, promtool, a version). A Service reads its
addresses and published ports once, after start and after each restart, network change or
:meth:`Service.refresh`; reading them costs no Docker call.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping, Sequence
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker.errors
from testcontainers.core.container import DockerContainer
from testcontainers.core.network import Network

from stack import docker_host
from stack.docker_client import client
from stack.waits import seconds, until


def parse_json_lines(text: str) -> list[dict[str, Any]]:
    """The JSON objects among ``text``'s lines; other lines are skipped."""
    events = []
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("{"):
            with suppress(json.JSONDecodeError):
                events.append(json.loads(line))
    return events


def addresses(attrs: dict[str, Any]) -> dict[str, str]:
    """{network name: IPv4 address} from a container's ``docker inspect`` attributes."""
    networks = attrs["NetworkSettings"].get("Networks") or {}
    return {name: settings["IPAddress"] for name, settings in networks.items()}


def published_ports(attrs: dict[str, Any]) -> dict[int, int]:
    """{container TCP port: host port} from ``docker inspect`` attributes (published only)."""
    ports = {}
    for key, bindings in (attrs["NetworkSettings"].get("Ports") or {}).items():
        port, _, protocol = key.partition("/")
        if protocol == "tcp" and bindings:
            ports[int(port)] = int(bindings[0]["HostPort"])
    return ports


@dataclass(frozen=True)
class Finished:
    """What a one-off container left: its exit code and its output."""

    exit_code: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        """stdout, then stderr."""
        return self.stdout + self.stderr


def run_once(
    image: str,
    command: Sequence[str],
    *,
    entrypoint: Sequence[str] | None = None,
    volumes: Mapping[str, str] | None = None,
    timeout: float = 120,
) -> Finished:
    """Run ``command`` in a new container of ``image`` until it exits; the container is
    removed after, also when waiting fails.

    No network. ``entrypoint`` replaces the image's (``[]``: none); None keeps it.
    ``volumes`` ({host path: container path}) are read-only. ``timeout`` is in units
    (stack/waits.py); past it, the wait raises and the container is removed.
    """
    container = client().containers.create(
        image,
        list(command),
        entrypoint=None if entrypoint is None else list(entrypoint),
        volumes={host: {"bind": path, "mode": "ro"} for host, path in (volumes or {}).items()},
        network_mode="none",
    )
    try:
        container.start()
        code = container.wait(timeout=seconds(timeout))["StatusCode"]
        stdout = container.logs(stdout=True, stderr=False).decode(errors="replace")
        stderr = container.logs(stdout=False, stderr=True).decode(errors="replace")
        return Finished(code, stdout, stderr)
    finally:
        with suppress(docker.errors.NotFound):
            container.remove(force=True, v=True)


class Service:
    """A started container: restart, stop, kill, pause it; read its logs and stats.

    ``id``, ``name``, ``addresses`` ({network name: IP}) and ``ports`` ({container port:
    host port}) are records, refreshed by the methods that change them.
    """

    def __init__(self, role: str, container: DockerContainer) -> None:
        self.role = role
        self._container = container
        self.id = ""
        self.name = ""
        self.addresses: dict[str, str] = {}
        self.ports: dict[int, int] = {}
        self.refresh()

    @classmethod
    def start(
        cls,
        role: str,
        image: str,
        name: str,
        network: Network | None,
        aliases: Sequence[str] = (),
        env: dict[str, str] | None = None,
        labels: dict[str, str] | None = None,
        *,
        also_on: Sequence[tuple[Network, Sequence[str]]] = (),
        ports: Mapping[int, int | None] | None = None,
        volumes: dict[str, str] | None = None,
        tmpfs: dict[str, str] | None = None,
        command: Sequence[str] | None = None,
        files: Mapping[str, Path] | None = None,
        **kwargs: Any,
    ) -> Service:
        """Create and start ``image`` as ``name`` on ``network`` under ``aliases``
        (``network`` None: on the host's own network, without aliases).

        ``also_on`` lists more (network, aliases) to join right after the start (Docker API
        1.41 attaches one network at creation). ``ports`` maps container ports to host
        ports on :func:`stack.docker_host.publish_address` (None: one Docker picks, and
        picks again on each restart).
        ``volumes`` ({host path: container path}) are read-only. ``tmpfs`` maps a path to
        Docker's option string (e.g. "size=16m,mode=1777"). ``files`` ({path in the
        container: host file}) are copied in between create and start, through the Docker
        API (testcontainers' ``with_copy_into_container``), so they work wherever the daemon
        is; not into a read-only root filesystem. ``kwargs`` are docker-py
        ``containers.create`` keywords (limits, security options:
        ``compose_file.runtime_kwargs``).
        """
        container = DockerContainer(image).with_name(name).with_envs(**(env or {}))
        if network is None:
            kwargs["network_mode"] = "host"
        else:
            container.with_network(network).with_network_aliases(*aliases)
        # testcontainers' with_kwargs replaces earlier calls: everything goes in one.
        container.with_kwargs(labels=dict(labels or {}), **kwargs)
        if command is not None:
            container.with_command(list(command))
        for port, host_port in (ports or {}).items():
            # Debt, checked against testcontainers 4.15.0: with_bind_ports takes no host
            # address, and binding every interface would expose the gateway beyond this
            # machine. DockerContainer.start hands ``ports`` to docker-py unchanged, whose
            # (host ip, port) form publishes on that address (None: a port Docker picks).
            binding = (docker_host.publish_address(), host_port)
            container.ports[f"{port}/tcp"] = binding  # type: ignore[assignment]
        for path, options in (tmpfs or {}).items():
            # testcontainers 4.15.0 passes the value through as Docker's option string.
            container.with_tmpfs_mount(path, options)
        for host_path, container_path in (volumes or {}).items():
            container.with_volume_mapping(host_path, container_path, mode="ro")
        for container_path, host_file in (files or {}).items():
            container.with_copy_into_container(host_file, container_path)
        container.start()
        service = cls(role, container)
        try:
            for extra, extra_aliases in also_on:
                extra.connect(service.id, list(extra_aliases))
            if also_on:
                service.refresh()
        except BaseException:
            service.remove()
            raise
        return service

    # ---- records -------------------------------------------------------------------------------
    @property
    def docker(self):
        """The docker-py container (its ``attrs`` as of the last refresh; see :meth:`inspect`)."""
        return self._container.get_wrapped_container()

    def inspect(self) -> dict[str, Any]:
        """Fresh ``docker inspect`` attributes (one Docker call)."""
        self.docker.reload()
        return self.docker.attrs

    def refresh(self) -> None:
        """Read id, name, addresses and published ports again from Docker."""
        attrs = self.inspect()
        self.id = attrs["Id"]
        self.name = attrs["Name"].lstrip("/")
        self.addresses = addresses(attrs)
        self.ports = published_ports(attrs)

    def ip(self, network: Network) -> str:
        """The container's address on ``network`` (KeyError when it is not attached)."""
        return self.addresses[network.name]

    def host_port(self, port: int) -> int:
        """The host port published for container ``port``."""
        return self.ports[port]

    @property
    def status(self) -> str:
        """Docker's status now (one Docker call): created, running, paused, restarting, exited."""
        return self.inspect()["State"]["Status"]

    # ---- output -------------------------------------------------------------------------------
    def logs(self) -> str:
        """Everything the container wrote to stdout and stderr so far."""
        return self.docker.logs(stdout=True, stderr=True).decode(errors="replace")

    def events(self, event: str | None = None) -> list[dict[str, Any]]:
        """The JSON log lines so far (the server's events, NGINX's access log), parsed.

        Only lines of one whole JSON object count; ``event`` keeps those with that event.
        """
        return [
            e for e in parse_json_lines(self.logs()) if event is None or e.get("event") == event
        ]

    # ---- lifecycle ----------------------------------------------------------------------------
    def restart(self, timeout: int = 10) -> None:
        """Stop (stop signal, then SIGKILL after ``timeout`` s) and start again."""
        self.docker.restart(timeout=timeout)
        self.refresh()  # a new host port, maybe a new address

    def stop(self, timeout: int = 10) -> int:
        """Stop with the image's stop signal; return the exit code."""
        self.docker.stop(timeout=timeout)
        return self.inspect()["State"]["ExitCode"]

    def kill(self, signal: str = "SIGKILL") -> None:
        """Send ``signal`` to the container's main process."""
        self.docker.kill(signal=signal)

    def pause(self) -> None:
        """Freeze every process of the container (the peer sees silence, not a close)."""
        self.docker.pause()

    def unpause(self) -> None:
        self.docker.unpause()

    def exec(self, command: list[str]) -> tuple[int, str]:
        """Run ``command`` inside the container; return (exit code, output)."""
        code, output = self.docker.exec_run(command)
        return code, output.decode(errors="replace")

    def http_get(
        self, port: int, path: str, timeout: float = 5
    ) -> tuple[int, dict[str, str], bytes]:
        """GET ``path`` on the container's own 127.0.0.1:``port``, from inside it (exec).

        Returns (status, headers, body); an error status is returned, not raised. Works
        wherever the Docker API does, also for ports nothing publishes and while the
        container is cut off its networks. OSError when there is no answer (refused,
        timed out, container not running).
        """
        try:
            code, out = self.exec(
                ["python3", "-c", _HTTP_GET, f"http://127.0.0.1:{port}{path}", str(timeout)]
            )
        except docker.errors.APIError as e:  # not running: as unreachable as a refused port
            raise OSError(f"{self.name}: cannot exec ({e.explanation})") from e
        lines = out.strip().splitlines()
        if code != 0 or not lines:
            raise OSError(f"{self.name}: GET {path} on port {port} failed: {out[-300:]}")
        answer = json.loads(lines[-1])
        return answer["status"], answer["headers"], base64.b64decode(answer["body"])

    def wait_exit(self, timeout: float = 30) -> int:
        """Wait until the container has exited; return its exit code."""
        until(self.inspect, f"{self.name} exits", timeout, accept=_exited)
        return self.docker.attrs["State"]["ExitCode"]

    def oom_killed(self) -> bool:
        return bool(self.inspect()["State"].get("OOMKilled"))

    def stats(self) -> dict[str, float]:
        """One `docker stats` sample: memory in use (without page cache) and its limit, bytes."""
        sample = self.docker.stats(stream=False)
        memory = sample.get("memory_stats", {})
        detail = memory.get("stats", {})
        cache = detail.get("total_inactive_file", detail.get("inactive_file", 0))
        return {
            "memory_bytes": memory.get("usage", 0) - cache,
            "memory_limit_bytes": memory.get("limit", 0),
            "pids": sample.get("pids_stats", {}).get("current", 0),
        }

    def remove(self) -> None:
        """Force-remove the container; a container already gone is fine."""
        with suppress(docker.errors.NotFound):
            self.docker.remove(force=True, v=True)


# Run by http_get inside a container (the server image has python3): one JSON line out.
_HTTP_GET = """
import base64, json, sys, urllib.error, urllib.request
try:
    r = urllib.request.urlopen(sys.argv[1], timeout=float(sys.argv[2]))
except urllib.error.HTTPError as e:
    r = e
body = base64.b64encode(r.read()).decode()
print(json.dumps({"status": r.getcode(), "headers": dict(r.headers), "body": body}))
"""


def _exited(attrs: dict[str, Any]) -> bool:
    return attrs["State"]["Status"] == "exited"
