"""The compose file as the one source of the containers' limits and security options.

``docker compose up`` and the test stacks run the same images; reading the limits from
docker-compose.yaml keeps the two from drifting apart.
"""

from __future__ import annotations

import os
import re
import resource
from pathlib import Path
from typing import Any

import yaml
from docker.types import Ulimit

COMPOSE_FILE = Path(__file__).resolve().parent.parent / "docker-compose.yaml"
_VARIABLE = re.compile(r"\$\{(\w+)(?::-([^}]*))?\}")


def machine_settings() -> dict[str, str]:
    """Compose variables this machine needs: descriptor limits the engine can grant.

    A container's nofile limit cannot exceed the engine's own hard limit; where that is
    below the compose defaults (65,536 and 131,072), we take the host's hard limit, which
    the engine shares on a local daemon.
    """
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    settings = {}
    for name, default in (("SERVER_NOFILE", 65536), ("NGINX_NOFILE", 131072)):
        if name not in os.environ and hard != resource.RLIM_INFINITY and hard < default:
            settings[name] = str(hard)
    return settings


def interpolate(value: str, environ: dict[str, str] | None = None) -> str:
    """Expand ``${NAME}`` and ``${NAME:-default}`` as Compose does."""
    env = {**os.environ, **machine_settings()} if environ is None else environ
    return _VARIABLE.sub(lambda m: env.get(m.group(1)) or (m.group(2) or ""), value)


def service(name: str) -> dict[str, Any]:
    """The compose definition of service ``name``."""
    return yaml.safe_load(COMPOSE_FILE.read_text())["services"][name]


def environment(name: str) -> dict[str, str]:
    """The service's environment with Compose's defaults applied."""
    return {k: interpolate(str(v)) for k, v in (service(name).get("environment") or {}).items()}


def _bytes(size: str) -> int:
    units = {"k": 2**10, "m": 2**20, "g": 2**30}
    size = str(size).lower().rstrip("b")
    return int(float(size[:-1]) * units[size[-1]]) if size[-1] in units else int(size)


def runtime_kwargs(name: str) -> dict[str, Any]:
    """docker-py ``containers.create`` keywords for the service's limits and security."""
    svc = service(name)
    limits = svc.get("deploy", {}).get("resources", {}).get("limits", {})
    tmpfs = {}
    for entry in svc.get("tmpfs", []):
        path, _, options = entry.partition(":")
        tmpfs[path] = options
    return {
        "mem_limit": _bytes(limits["memory"]),
        "nano_cpus": int(float(limits["cpus"]) * 1e9),
        "pids_limit": int(limits["pids"]),
        "read_only": bool(svc.get("read_only", False)),
        "tmpfs": tmpfs,
        "cap_drop": list(svc.get("cap_drop", [])),
        "security_opt": list(svc.get("security_opt", [])),
        "ulimits": [
            Ulimit(
                name=key,
                soft=int(interpolate(str(value["soft"]))),
                hard=int(interpolate(str(value["hard"]))),
            )
            for key, value in (svc.get("ulimits") or {}).items()
        ],
    }


def memory_limit(name: str) -> int:
    """The service's memory limit in bytes."""
    return runtime_kwargs(name)["mem_limit"]
