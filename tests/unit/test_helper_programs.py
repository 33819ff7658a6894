"""The programs the harness runs inside containers need nothing the container lacks.

They run in the server image (Python, websockets, uvloop) with only the repository files
copied beside them, so an import of anything else would fail there, not here.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
IN_THE_IMAGE = set(sys.stdlib_module_names) | {"websockets", "uvloop"}
# Program -> the repository modules copied in beside it (stack.helper_containers.program).
PROGRAMS = {
    "stack/scenarios/programs/hostile_attack.py": {"stack.wire.handshake"},
    "stack/scenarios/programs/other_address_probe.py": set(),
    "stack/bench/baseline_echo.py": set(),
    "stack/echo_exchange.py": set(),
}


def imported(path: Path) -> set[str]:
    """Every module ``path`` imports, by its full dotted name."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
    return names


def foreign(names: set[str]) -> set[str]:
    """The names among ``names`` that the server image does not provide."""
    return {n for n in names if n.split(".")[0] not in IN_THE_IMAGE}


@pytest.mark.parametrize("program", sorted(PROGRAMS))
def test_a_program_imports_only_the_image_and_what_is_copied_beside_it(program: str) -> None:
    """A helper program imports the standard library, websockets, uvloop and the modules
    copied in with it; those modules and their packages import only the standard library."""
    copied = PROGRAMS[program]
    assert foreign(imported(ROOT / program)) == copied
    for module in copied:
        parts = module.split(".")
        files = [ROOT.joinpath(*parts[:depth], "__init__.py") for depth in range(1, len(parts))]
        for path in [*files, ROOT.joinpath(*parts).with_suffix(".py")]:
            assert foreign(imported(path)) == set(), f"{path} imports more than Python's own"
