"""The test stacks take their settings from Compose itself: .env, override file, variable syntax.

These run ``docker compose config`` on a copy of docker-compose.yaml in a temporary project
directory; they need the Compose binary, not the daemon, and start no container.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from stack import compose_file

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
