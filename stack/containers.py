"""One running container of the stack, with the operations failure scenarios need."""

from __future__ import annotations

import json
from contextlib import suppress
from typing import Any

import docker.errors
from testcontainers.core.container import DockerContainer
from testcontainers.core.network import Network

from stack.waits import until


def parse_json_lines(text: str) -> list[dict[str, Any]]:
    """The JSON objects among ``text``'s lines; other lines are skipped."""
    events = []
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("{"):
            with suppress(json.JSONDecodeError):
                events.append(json.loads(line))
    return events


class Service:
    """A started container: restart, stop, kill, pause it; read its logs and stats."""

    def __init__(self, role: str, container: DockerContainer) -> None:
        self.role = role
        self._container = container

    @classmethod
    def start(
        cls,
        role: str,
        image: str,
        name: str,
        network: Network,
        aliases: list[str],
        env: dict[str, str],
        labels: dict[str, str],
        ports: dict[int, tuple[str, None]] | None = None,
        volumes: dict[str, str] | None = None,
        tmpfs: dict[str, str] | None = None,
        **kwargs: Any,
    ) -> Service:
        """Create and start ``image`` as ``name`` on ``network`` under ``aliases``."""
        container = (
            DockerContainer(image)
            .with_name(name)
            .with_network(network)
            .with_network_aliases(*aliases)
            .with_envs(**env)
            # testcontainers' with_kwargs replaces earlier calls: everything goes in one.
            .with_kwargs(labels=labels, **kwargs)
        )
        for port, binding in (ports or {}).items():
            # docker-py's (host ip, host port) form: with_bind_ports takes no address.
            container.ports[f"{port}/tcp"] = binding
        for path, options in (tmpfs or {}).items():
            container.tmpfs[path] = options  # Docker's option string, e.g. "size=16m,mode=1777"
        for host_path, container_path in (volumes or {}).items():
            container.with_volume_mapping(host_path, container_path, mode="ro")
        container.start()
        return cls(role, container)

    @property
    def docker(self):
        """The docker-py container, freshly reloaded."""
        wrapped = self._container.get_wrapped_container()
        wrapped.reload()
        return wrapped

    @property
    def name(self) -> str:
        return self.docker.name

    def ip(self, network: Network) -> str:
        """The container's address on ``network``."""
        return self.docker.attrs["NetworkSettings"]["Networks"][network.name]["IPAddress"]

    def host_port(self, port: int) -> int:
        """The host port published for container ``port``."""
        return int(self.docker.ports[f"{port}/tcp"][0]["HostPort"])

    @property
    def status(self) -> str:
        """Docker's status: created, running, paused, restarting, exited."""
        return self.docker.status

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

    def restart(self, timeout: int = 10) -> None:
        """Stop (stop signal, then SIGKILL after ``timeout`` s) and start again."""
        self.docker.restart(timeout=timeout)

    def stop(self, timeout: int = 10) -> int:
        """Stop with the image's stop signal; return the exit code."""
        self.docker.stop(timeout=timeout)
        return self.docker.attrs["State"]["ExitCode"]

    def start_again(self) -> None:
        """Start a stopped container."""
        self.docker.start()

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

    def wait_exit(self, timeout: float = 30) -> int:
        """Wait until the container has exited; return its exit code."""
        until(lambda: self.status, f"{self.role} exits", timeout, accept=lambda s: s == "exited")
        return self.docker.attrs["State"]["ExitCode"]

    def oom_killed(self) -> bool:
        return bool(self.docker.attrs["State"].get("OOMKilled"))

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
            self._container.get_wrapped_container().remove(force=True, v=True)
