"""NGINX's entrypoint validates its settings as written, before NGINX is needed.

Validation runs first in ``wsgw-nginx check``; a bad value exits 2 with one line, so these
run the script on the host (no NGINX, no Docker) in a folder whose file names a glob could
match.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

ENTRYPOINT = Path(__file__).resolve().parents[2] / "nginx" / "entrypoint.sh"

pytestmark = pytest.mark.unit


def check(tmp_path: Path, **settings: str) -> subprocess.CompletedProcess[str]:
    """``wsgw-nginx check`` with ``settings``, run in ``tmp_path``, which holds a file 'bin'."""
    (tmp_path / "bin").touch()
    return subprocess.run(
        ["bash", str(ENTRYPOINT), "check"],
        cwd=tmp_path,
        env={"PATH": os.environ["PATH"], **settings},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


@pytest.mark.parametrize(
    ("name", "value"), [("SERVER_NAMES", "localhost b?n"), ("RESOLVER", "127.0.0.11 b*")]
)
def test_list_settings_are_checked_as_written_not_glob_expanded(
    tmp_path: Path, name: str, value: str
) -> None:
    """A token a glob would turn into a file name ('b?n' -> 'bin') is rejected as written."""
    result = check(tmp_path, **{name: value})
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith(f"configuration error: {name}='{value}'")


def test_a_valid_wildcard_name_passes_validation(tmp_path: Path) -> None:
    """'*.example.com' is a server name NGINX accepts, so validation lets it through."""
    result = check(tmp_path, SERVER_NAMES="localhost *.example.com")
    assert "configuration error" not in result.stderr
