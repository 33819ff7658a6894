"""The test stacks take their settings from Compose itself: .env, override file, variable syntax.

These run ``docker compose config`` on a copy of docker-compose.yaml in a temporary project
directory; they need the Compose binary, not the daemon, and start no container.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from stack import compose_file
from stack.harness_config import subprocess_env

OVERRIDE = """\
services:
  server:
    environment:
      WS_REQUIRED: ${WSGW_TEST_REQUIRED:?set WSGW_TEST_REQUIRED}
      WS_ALTERNATIVE: ${LOG_LEVEL:+level given}
    deploy:
      resources:
        limits:
          memory: 512m
"""


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of docker-compose.yaml with a .env and an override file beside it."""
    if shutil.which("docker") is None:
        pytest.skip("the docker CLI (with Compose) is not installed here")
    shutil.copy(compose_file.COMPOSE_FILE, tmp_path / "docker-compose.yaml")
    (tmp_path / ".env").write_text("LOG_LEVEL=DEBUG\nNGINX_WORKER_PROCESSES=3\n")
    (tmp_path / "docker-compose.override.yaml").write_text(OVERRIDE)
    for name in ("LOG_LEVEL", "NGINX_WORKER_PROCESSES", "WSGW_TEST_REQUIRED"):
        monkeypatch.delenv(name, raising=False)
    return tmp_path


def test_env_file_and_override_file_reach_the_stack_settings(project, monkeypatch) -> None:
    """Values from .env and docker-compose.override.yaml are what the test stack gets."""
    monkeypatch.setenv("WSGW_TEST_REQUIRED", "present")
    server = compose_file.environment("server", project)
    assert server["LOG_LEVEL"] == "DEBUG"  # .env
    assert server["WS_REQUIRED"] == "present"  # ${X:?err}, set
    assert server["WS_ALTERNATIVE"] == "level given"  # ${X:+alt}
    assert compose_file.environment("nginx", project)["WORKER_PROCESSES"] == "3"
    limits = compose_file.runtime_kwargs("server", project)
    assert limits["mem_limit"] == 512 * 2**20  # override file, normalised to bytes
    assert limits["nano_cpus"] == 10**9  # the base file's, kept
    assert limits["tmpfs"] == {"/tmp": "size=16m,mode=1777"}


def test_a_missing_required_variable_fails_with_compose_message(project) -> None:
    """``${X:?message}`` unset: reading the settings fails with Compose's message."""
    with pytest.raises(compose_file.ComposeError, match="set WSGW_TEST_REQUIRED"):
        compose_file.config(project)


# Container variable -> the .env name that sets it, where they differ.
COMPOSE_NAMES = {"WORKER_PROCESSES": "NGINX_WORKER_PROCESSES"}


def documented(heading: str) -> list[str]:
    """The variables of the table under ``heading`` in docs/configuration.md."""
    text = (compose_file.ROOT / "docs" / "configuration.md").read_text()
    section = text.split(f"## {heading}\n", 1)[1].split("\n## ", 1)[0]
    return [
        name
        for name in re.findall(r"^\| `(\w+)` \|", section, re.M)
        if name not in compose_file.WIRING
    ]


def test_every_documented_setting_reaches_its_container_from_env(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each server and NGINX variable docs/configuration.md documents, set in .env to a
    value of its own, is in that service's environment as Compose resolves it."""
    if shutil.which("docker") is None:
        pytest.skip("the docker CLI (with Compose) is not installed here")
    shutil.copy(compose_file.COMPOSE_FILE, tmp_path / "docker-compose.yaml")
    wanted = {
        "server": documented("Server (`server/config.py`)"),
        "nginx": documented("NGINX (`nginx/entrypoint.sh`)"),
    }
    assert len(wanted["server"]) >= 15 and len(wanted["nginx"]) >= 18
    lines = []
    for names in wanted.values():
        for name in names:
            env_name = COMPOSE_NAMES.get(name, name)
            monkeypatch.delenv(env_name, raising=False)
            lines.append(f"{env_name}=set-by-env-{name}")
    (tmp_path / ".env").write_text("\n".join(lines) + "\n")
    missing = [
        f"{service}: {name}"
        for service, names in wanted.items()
        for name in names
        if compose_file.environment(service, tmp_path).get(name) != f"set-by-env-{name}"
    ]
    assert missing == []


def test_tls_override_keeps_plaintext_on_loopback_and_wss_where_clients_connect() -> None:
    """With docker-compose.tls.yaml, 8443 is published on GATEWAY_BIND and plaintext 8080
    on 127.0.0.1 only (GATEWAY_PLAIN_BIND), as Compose resolves the two files."""
    if shutil.which("docker") is None:
        pytest.skip("the docker CLI (with Compose) is not installed here")
    tls_file = compose_file.ROOT / "docker-compose.tls.yaml"
    env = {
        key: value
        for key, value in subprocess_env().items()
        if key not in ("GATEWAY_PLAIN_BIND", "GATEWAY_PORT", "GATEWAY_TLS_PORT", "COMPOSE_FILE")
    }
    files = ["-f", str(compose_file.COMPOSE_FILE), "-f", str(tls_file)]
    result = subprocess.run(
        ["docker", "compose", *files, "config", "--format", "json"],
        env={**env, "GATEWAY_BIND": "0.0.0.0"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    ports = json.loads(result.stdout)["services"]["nginx"]["ports"]
    published = {(p["target"], p.get("host_ip"), p["published"]) for p in ports}
    assert published == {(8443, "0.0.0.0", "8443"), (8080, "127.0.0.1", "8080")}
