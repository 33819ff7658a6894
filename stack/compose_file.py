"""The compose file as the one source of the containers' environment, limits and security.

``docker compose up`` and the test stacks run the same images; reading the settings from
what Compose itself makes of docker-compose.yaml (``docker compose config``: its ``.env``,
``docker-compose.override.yaml`` and every variable syntax included) keeps the two from
drifting apart.
"""

from __future__ import annotations

import functools
import json
import resource
import subprocess
from pathlib import Path
from typing import Any

from docker.types import LogConfig, Ulimit

from stack import harness_config

ROOT = Path(__file__).resolve().parent.parent
COMPOSE_FILE = ROOT / "docker-compose.yaml"
HOST_NETWORK_FILE = ROOT / "docker-compose.host-network.yaml"  # NGINX without docker-proxy
# Settings the compose file fixes (not passed through from the environment): they wire the
# services to each other.
WIRING = (
    "WS_HOST",
    "WS_PORT",
    "LISTEN_PORT",
    "LISTEN_ADDRESS",
    "STATUS_ADDRESS",
    "UPSTREAM_HOST",
    "UPSTREAM_PORT",
)


class ComposeError(RuntimeError):
    """``docker compose config`` failed (a missing binary, a bad file, a required variable)."""


def machine_settings() -> dict[str, str]:
    """Compose variables this machine needs: descriptor limits the engine can grant.

    A container's nofile limit cannot exceed the engine's own hard limit; where that is
    below the compose defaults (65,536 and 131,072), we take the host's hard limit, which
    the engine shares on a local daemon.
    """
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    config = harness_config.current()
    settings = {}
    for name, chosen, default in (
        ("SERVER_NOFILE", config.server_nofile, 65536),
        ("NGINX_NOFILE", config.nginx_nofile, 131072),
    ):
        if chosen is None and hard != resource.RLIM_INFINITY and hard < default:
            settings[name] = str(hard)
    return settings


@functools.cache
def config(project: Path = ROOT) -> dict[str, Any]:
    """The compose project in ``project`` as Compose resolves it (read once per process).

    Compose finds the files there as ``docker compose up`` would (docker-compose.yaml, its
    override file, ``.env``); this process's environment and :func:`machine_settings` fill
    the variables.
    """
    try:
        result = subprocess.run(
            [
                "docker",
                "compose",
                "--project-directory",
                str(project),
                "config",
                "--format",
                "json",
            ],
            cwd=project,
            env=harness_config.subprocess_env(**machine_settings()),
            capture_output=True,
            text=True,
            timeout=60,
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        raise ComposeError(f"docker compose config in {project}: {e}") from e
    if result.returncode != 0:
        raise ComposeError(f"docker compose config in {project}: {result.stderr.strip()}")
    return json.loads(result.stdout)


def service(name: str, project: Path = ROOT) -> dict[str, Any]:
    """Compose's resolved definition of service ``name``."""
    return config(project)["services"][name]


def environment(name: str, project: Path = ROOT) -> dict[str, str]:
    """The service's environment as Compose resolves it (variables unset in it left out)."""
    env = service(name, project).get("environment") or {}
    return {key: str(value) for key, value in env.items() if value is not None}


def runtime_kwargs(name: str, project: Path = ROOT) -> dict[str, Any]:
    """docker-py ``containers.create`` keywords for the service's limits and security.

    Compose normalises what it prints: memory in bytes (a string), cpus a number, each
    ulimit a number or {soft, hard}.
    """
    svc = service(name, project)
    limits = svc.get("deploy", {}).get("resources", {}).get("limits", {})
    tmpfs = {}
    for entry in svc.get("tmpfs") or []:
        path, _, options = entry.partition(":")
        tmpfs[path] = options
    return {
        "mem_limit": int(limits["memory"]),
        "nano_cpus": int(float(limits["cpus"]) * 1e9),
        "pids_limit": int(limits["pids"]),
        "read_only": bool(svc.get("read_only", False)),
        "tmpfs": tmpfs,
        "cap_drop": list(svc.get("cap_drop") or []),
        "security_opt": list(svc.get("security_opt") or []),
        "ulimits": [_ulimit(key, value) for key, value in (svc.get("ulimits") or {}).items()],
        "log_config": _log_config(svc.get("logging") or {}),
    }


def _log_config(logging: dict[str, Any]) -> LogConfig:
    """The service's log driver and options (rotation, non-blocking mode)."""
    options = {key: str(value) for key, value in (logging.get("options") or {}).items()}
    return LogConfig(type=logging.get("driver", "json-file"), config=options)


def _ulimit(name: str, value: int | dict[str, int]) -> Ulimit:
    if isinstance(value, dict):
        return Ulimit(name=name, soft=int(value["soft"]), hard=int(value["hard"]))
    return Ulimit(name=name, soft=int(value), hard=int(value))


def memory_limit(name: str) -> int:
    """The service's memory limit in bytes."""
    return runtime_kwargs(name)["mem_limit"]


def down(project: str, env: dict[str, str]) -> None:
    """Remove compose project ``project`` (containers, networks, volumes); never raises."""
    command = ["docker", "compose", "-f", str(COMPOSE_FILE), "-p", project]
    subprocess.run(
        [*command, "down", "-v", "--remove-orphans", "-t", "5"],
        env=env,
        capture_output=True,
        check=False,
    )
