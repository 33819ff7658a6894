"""The lock files install the same packages on every machine, whatever PyPI publishes later.

Every entry is pinned with ``==`` and carries its hashes (``--require-hashes`` would refuse
anything else, but only at install time on somebody's fresh machine); no lock names a path
of the machine it was compiled on; and the host's lock agrees with the server's on every
package both install. ``make lock`` writes all three.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
LOCKS = ("requirements/bootstrap.txt", "server/requirements.txt", "requirements/dev.txt")
# An absolute path at the start of a line or after a space or "=": "/opt/wheels", "-o /tmp/x".
MACHINE_PATH = re.compile(r"(?:^|[\s=])(/[\w.-]+)+/?")


def entries(text: str) -> list[str]:
    """The lock's logical lines (continuations joined), without comments or blank lines."""
    joined = re.sub(r"\\\n", " ", text)
    lines = (line.split("#", 1)[0].strip() for line in joined.splitlines())
    return [line for line in lines if line]


def problems(text: str) -> list[str]:
    """What makes a lock's content differ from machine to machine or day to day."""
    found = []
    for number, line in enumerate(text.splitlines(), 1):
        if MACHINE_PATH.search(line):
            found.append(f"line {number} names a path of a machine: {line.strip()}")
    for entry in entries(text):
        spec, *options = entry.split()
        if spec.startswith("-"):
            found.append(f"an option where only pinned entries belong: {entry}")
            continue
        try:
            requirement = Requirement(spec)
        except InvalidRequirement as e:
            found.append(f"not a requirement: {spec} ({e})")
            continue
        specifiers = list(requirement.specifier)
        if len(specifiers) != 1 or specifiers[0].operator != "==" or "*" in specifiers[0].version:
            found.append(f"{spec} is not pinned with ==")
        if not any(option.startswith("--hash=sha256:") for option in options):
            found.append(f"{spec} has no --hash")
    return found


def pins(text: str) -> dict[str, str]:
    """{canonical name: version} of a lock's entries."""
    found = {}
    for entry in entries(text):
        requirement = Requirement(entry.split()[0])
        found[canonicalize_name(requirement.name)] = str(requirement.specifier)
    return found


@pytest.mark.parametrize("lock", LOCKS)
def test_lock_pins_every_entry_with_hashes_and_no_machine_path(lock: str) -> None:
    """Every entry of the lock is ==-pinned with hashes, and no line names a machine's path."""
    assert problems((ROOT / lock).read_text()) == []


def test_host_and_server_locks_agree_on_shared_packages() -> None:
    """requirements/dev.txt installs the same version of every package server/ also pins."""
    server = pins((ROOT / "server/requirements.txt").read_text())
    host = pins((ROOT / "requirements/dev.txt").read_text())
    assert server.keys() <= host.keys(), "dev.txt must include the server's requirements"
    assert {name: host[name] for name in server} == server


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("--find-links /opt/wheels\nuv==1 \\\n    --hash=sha256:ab\n", "names a path"),
        ("coverage>=7.10 \\\n    --hash=sha256:ab\n", "not pinned with =="),
        ("coverage==7.* \\\n    --hash=sha256:ab\n", "not pinned with =="),
        ("coverage[toml]==7.10\n", "has no --hash"),
        ("-f wheels\nuv==1 \\\n    --hash=sha256:ab\n", "an option"),
    ],
)
def test_lock_check_finds_each_kind_of_problem(text: str, problem: str) -> None:
    """The check itself reports unpinned, unhashed, option and machine-path entries."""
    assert any(problem in found for found in problems(text)), problems(text)


def test_lock_check_finds_disagreeing_pins() -> None:
    """Two locks pinning one package differently are told apart by name, across spellings."""
    assert pins("Web_Sockets==17.4 \\\n  --hash=sha256:ab\n") == {"web-sockets": "==17.4"}
    assert pins("web-sockets==17.3 \\\n  --hash=sha256:ab\n") != {"web-sockets": "==17.4"}
