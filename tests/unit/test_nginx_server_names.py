"""SERVER_NAMES: `*` alone serves any Host; mixed into a list it is refused at start."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from stack.harness_config import subprocess_env

ENTRYPOINT = Path(__file__).resolve().parents[2] / "nginx" / "entrypoint.sh"

pytestmark = pytest.mark.unit


def check(**settings: str) -> subprocess.CompletedProcess[str]:
    """``wsgw-nginx check`` (validation only, no NGINX needed) with ``settings``."""
    return subprocess.run(
        ["bash", str(ENTRYPOINT), "check"],
        env={"PATH": subprocess_env()["PATH"], **settings},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_star_alone_is_the_default_and_valid() -> None:
    """`*` (any Host) passes validation, set or left to the default."""
    for settings in ({}, {"SERVER_NAMES": "*"}):
        result = check(**settings)
        assert "configuration error" not in result.stderr, result.stderr


def test_star_in_a_list_exits_2_with_one_line() -> None:
    """`* example.com` would serve no name at all in NGINX: one line naming it, exit 2."""
    result = check(SERVER_NAMES="example.com *")
    assert result.returncode == 2
    assert result.stderr == (
        "configuration error: SERVER_NAMES='example.com *' mixes * with names; "
        "allowed: * alone (any Host), or space-separated names without *\n"
    )
