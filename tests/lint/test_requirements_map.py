"""REQUIREMENTS.md stays true: every test it names exists, every requirement names a test.

Also checks the requirement that is a fact about the repository itself: the project layout
the seed asks for (the locks are checked in test_locks.py).
"""

from __future__ import annotations

import ast
import re
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
REQUIREMENTS = ROOT / "REQUIREMENTS.md"
REFERENCE = re.compile(r"`(tests/[\w./-]+\.py)::([\w:]+)`")
ROW = re.compile(r"^\| ([A-Z]+-\d+) \| (.+) \|$")
STATUSES = ("met", "met (build)", "documented", "out of scope")


def references() -> list[tuple[str, str]]:
    return REFERENCE.findall(REQUIREMENTS.read_text())


@cache
def defined_tests(path: str) -> frozenset[str]:
    """``name`` and ``Class::name`` of every test function defined in ``path``."""
    tree = ast.parse((ROOT / path).read_text(), filename=path)
    names = set()
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            names.add(node.name)
        elif isinstance(node, ast.ClassDef):
            names.update(
                f"{node.name}::{item.name}"
                for item in node.body
                if isinstance(item, ast.FunctionDef | ast.AsyncFunctionDef)
            )
    return frozenset(name for name in names if name.split("::")[-1].startswith("test"))


def rows() -> list[tuple[str, list[str]]]:
    """(ID, cells) of every requirement row of every table."""
    out = []
    for line in REQUIREMENTS.read_text().splitlines():
        match = ROW.match(line)
        if match:
            out.append((match.group(1), [cell.strip() for cell in match.group(2).split(" | ")]))
    return out


def test_every_named_test_exists() -> None:
    """Each `tests/...py::name` in REQUIREMENTS.md is a file that defines that test."""
    refs = references()
    assert len(refs) > 50, "REQUIREMENTS.md names hardly any tests: did its format change?"
    missing = []
    for path, name in sorted(set(refs)):
        if not (ROOT / path).is_file():
            missing.append(f"{path} (no such file)")
        elif name not in defined_tests(path):
            missing.append(f"{path}::{name} (no such test)")
    assert not missing, "REQUIREMENTS.md names tests that do not exist:\n" + "\n".join(missing)


def test_every_requirement_has_a_test_and_a_status() -> None:
    """Each requirement row names at least one test and a known status; IDs are unique."""
    table = rows()
    ids = [requirement_id for requirement_id, _ in table]
    assert len(ids) == len(set(ids)), f"duplicate IDs: {sorted(i for i in ids if ids.count(i) > 1)}"
    problems = []
    for requirement_id, cells in table:
        if requirement_id.startswith("OUT-"):
            continue  # the seed's own "not in scope" list
        if len(cells) != 3:
            problems.append(f"{requirement_id}: expected requirement | tests | status")
            continue
        _, proof, status = cells
        if not REFERENCE.search(proof):
            problems.append(f"{requirement_id}: names no test")
        if not status.startswith(STATUSES):
            problems.append(f"{requirement_id}: unknown status {status!r}")
    assert not problems, "\n".join(problems)


def test_project_layout() -> None:
    """The layout the seed asks for, in Python terms: nginx/ and server/ apart, each with
    its Dockerfile; the compose file, README.md and REQUIREMENTS.md at the root."""
    expected = [
        "nginx/nginx.conf",
        "nginx/Dockerfile",
        "server/__main__.py",  # python -m server (index.js)
        "server/requirements.txt",  # package.json, locked
        "server/Dockerfile",
        "docker-compose.yaml",
        "README.md",
        "REQUIREMENTS.md",
    ]
    assert [path for path in expected if not (ROOT / path).is_file()] == []
    # The design card's top level: every entry it names is there.
    card = ["stack", "tests", "nginx", "server", "ci", "docker-compose.yaml", "README.md",
            "REQUIREMENTS.md", "conftest.py"]  # fmt: skip
    assert [entry for entry in card if not (ROOT / entry).exists()] == []
    steps = ["setup.sh", "images.sh", "test.sh", "lint.sh", "test-in-container.sh",
             "test-runner.Dockerfile"]  # fmt: skip
    assert [step for step in steps if not (ROOT / "ci" / step).is_file()] == [], (
        "ci/ holds the pipeline's steps"
    )
    # The runner image's Dockerfile lives in ci/: no top-level runner/ beside stack/bench/runner.
    assert not (ROOT / "runner").exists()
