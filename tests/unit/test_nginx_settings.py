"""NGINX's entrypoint validates its settings as written, before NGINX is needed.

Validation runs first in ``wsgw-nginx check``; a bad value exits 2 with one line, so these
run the script on the host (no NGINX, no Docker) in a folder whose file names a glob could
match.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from stack.harness_config import subprocess_env

ENTRYPOINT = Path(__file__).resolve().parents[2] / "nginx" / "entrypoint.sh"

pytestmark = pytest.mark.unit


def check(tmp_path: Path, **settings: str) -> subprocess.CompletedProcess[str]:
    """``wsgw-nginx check`` with ``settings``, run in ``tmp_path``, which holds a file 'bin'."""
    (tmp_path / "bin").touch()
    return subprocess.run(
        ["bash", str(ENTRYPOINT), "check"],
        cwd=tmp_path,
        env={"PATH": subprocess_env()["PATH"], **settings},
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


def _settings() -> list[tuple[str, str, str]]:
    """(name, default, kind) of every setting in the entrypoint's SETTINGS table."""
    rows = re.findall(
        r'^\s+"([A-Z][A-Z0-9_]*)\|([^|]*)\|([^|:]*)[^|]*\|', ENTRYPOINT.read_text(), re.M
    )
    assert len(rows) >= 20, "the SETTINGS table moved: update this parser"
    return rows


SETTINGS = _settings()
LIST_KINDS = {"resolvers", "server_names"}  # space-separated lists: two words are allowed
ONE_WORD = [(name, default, kind) for name, default, kind in SETTINGS if kind not in LIST_KINDS]


def test_every_kind_of_setting_is_covered() -> None:
    """The injection tests below run on every setting, so every kind of check is among them."""
    kinds = {kind for _, _, kind in SETTINGS}
    assert kinds >= {"int", "duration", "status", "rate", "enum", "workers", "host", "path"}
    assert kinds >= LIST_KINDS


@pytest.mark.parametrize(("name", "default", "kind"), SETTINGS, ids=[s[0] for s in SETTINGS])
@pytest.mark.parametrize(
    "shape",
    ["{v}\nx; location = /k {{ alias /etc/nginx/tls/tls.key; }}", "\n{v}", "{v}\r", "{v}\tx"],
    ids=["newline", "leading-newline", "carriage-return", "tab"],
)
def test_a_control_character_in_any_setting_is_rejected(
    tmp_path: Path, name: str, default: str, kind: str, shape: str
) -> None:
    """A newline (first or later), CR or tab in any setting exits 2: it could end a directive."""
    value = shape.format(v=default.split()[0])
    result = check(tmp_path, **{name: value})
    assert result.returncode == 2, (kind, result.stderr)
    assert result.stderr.startswith(f"configuration error: {name}="), result.stderr
    assert "contains a control character" in result.stderr
    assert result.stderr.count("\n") == 1, "the error is one line, the value shown escaped"


@pytest.mark.parametrize(("name", "default", "kind"), SETTINGS, ids=[s[0] for s in SETTINGS])
def test_a_semicolon_in_any_setting_is_rejected(
    tmp_path: Path, name: str, default: str, kind: str
) -> None:
    """';' would end the directive and start another: no kind of setting accepts it."""
    for value in (f"{default};", f"{default}; server_tokens on", f"{default.split()[0]};x"):
        result = check(tmp_path, **{name: value})
        assert result.returncode == 2, (kind, value, result.stderr)
        assert result.stderr.startswith(f"configuration error: {name}="), result.stderr


@pytest.mark.parametrize(("name", "default", "kind"), ONE_WORD, ids=[s[0] for s in ONE_WORD])
def test_two_words_where_one_is_allowed_are_rejected(
    tmp_path: Path, name: str, default: str, kind: str
) -> None:
    """A one-word setting given two allowed words ('444 421') exits 2 instead of rendering both."""
    result = check(tmp_path, **{name: f"{default} {default}"})
    assert result.returncode == 2, (kind, result.stderr)
    assert result.stderr.startswith(f"configuration error: {name}='{default} {default}'")


def test_two_allowed_choices_of_an_enum_are_rejected(tmp_path: Path) -> None:
    """UNKNOWN_HOST_STATUS='444 421' names two valid choices at once, which is not a choice."""
    result = check(tmp_path, UNKNOWN_HOST_STATUS="444 421")
    assert result.returncode == 2, result.stderr
    assert "is not a valid choice" in result.stderr


@pytest.mark.parametrize("name", sorted(n for n, _, k in SETTINGS if k in LIST_KINDS))
def test_list_settings_still_take_several_words(tmp_path: Path, name: str) -> None:
    """Space-separated lists stay lists: two valid items pass validation."""
    value = {"RESOLVER": "127.0.0.11 10.0.0.2:53", "SERVER_NAMES": "localhost example.com"}[name]
    result = check(tmp_path, **{name: value})
    assert "configuration error" not in result.stderr
