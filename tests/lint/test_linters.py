"""The linters, as tests: a broken Dockerfile, compose file or workflow fails the suite.

Each test runs one tool from this interpreter's virtual environment (the same binaries and
configuration files as ci/lint.sh) and passes when it exits 0; on failure the tool's own
output is the message. None of them needs the network.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from stack.harness_config import current, subprocess_env

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
WORKFLOW = ".github/workflows/ci.yml"
DOCKERFILES = ("server/Dockerfile", "nginx/Dockerfile", "examples/broadcast_room/Dockerfile")
TIMEOUT = 120  # seconds; each tool takes well under 5 s


def tool(name: str) -> str:
    """Path of ``name`` in the virtual environment; fails (never skips) when it is missing."""
    path = BIN / name
    if not path.exists():
        pytest.fail(f"{name} is not installed in {BIN}: run ci/setup.sh", pytrace=False)
    return str(path)


def check(*command: str) -> None:
    """Run ``command`` in the repository root; fail with its output unless it exits 0."""
    result = subprocess.run(
        command,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        env=subprocess_env(NO_COLOR="1"),
        check=False,
    )
    if result.returncode != 0:
        output = (result.stdout + result.stderr).strip()
        pytest.fail(f"`{' '.join(command)}` exited {result.returncode}:\n{output}", pytrace=False)


def test_ruff_check() -> None:
    """The repository's Python passes ruff's rules (pyproject.toml)."""
    check(tool("ruff"), "check", "--no-cache", ".")


def test_ruff_format() -> None:
    """The repository's Python is formatted as `ruff format` would write it."""
    check(tool("ruff"), "format", "--check", "--no-cache", ".")


@pytest.mark.parametrize("dockerfile", DOCKERFILES)
def test_hadolint(dockerfile: str) -> None:
    """The Dockerfile has no hadolint finding, down to "info" (.hadolint.yaml)."""
    check(tool("hadolint"), "--no-color", "--config", ".hadolint.yaml", dockerfile)


def test_yamllint() -> None:
    """The compose files, the workflow and dependabot's file pass yamllint, warnings
    included (.yamllint.yaml)."""
    check(
        tool("yamllint"),
        "--strict",
        "-c",
        ".yamllint.yaml",
        "docker-compose.yaml",
        ".github/workflows/",
        ".github/dependabot.yml",
        "examples/broadcast_room/compose.yaml",
    )


def test_workflow_schema() -> None:
    """The workflow validates against GitHub's workflow schema (vendored, offline)."""
    check(tool("check-jsonschema"), "--builtin-schema", "vendor.github-workflows", WORKFLOW)


def test_workflow_security_audit() -> None:
    """zizmor (offline, default persona) finds nothing: pinned actions, no persisted
    credentials, least permissions, no template injection."""
    check(tool("zizmor"), "--offline", "--no-progress", ".github/workflows/")


def test_compose_config() -> None:
    """`docker compose config -q` accepts docker-compose.yaml (the Compose CLI, no daemon)."""
    docker = shutil.which("docker")
    if docker is None:
        current().unavailable("the docker CLI with Compose v2", "docker is not on PATH")
    check(docker, "compose", "-f", "docker-compose.yaml", "config", "-q")
