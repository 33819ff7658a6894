"""Failure scenarios (issue #4): break a real stack on purpose and check what happens.

Each module defines one ``SCENARIO``; pytest (tests/scenarios/) and
``python -m stack scenario NAME`` run the same definition on stacks of their own.
"""

from __future__ import annotations

from importlib import import_module

from stack.scenarios.base import Context, Scenario, execute, run
from stack.scenarios.logbook import Report

_MODULES = (
    "nginx_restart",
    "nginx_reload",
    "server_restart",
    "network_cut",
    "graceful_drain",
    "bad_input",
    "timeouts",
    "limits",
    "resources",
    "hostile_clients",
    "rolling_update",
)


def _load() -> dict[str, Scenario]:
    found = [import_module(f"stack.scenarios.{module}").SCENARIO for module in _MODULES]
    return {s.name: s for s in sorted(found, key=lambda s: s.number)}


SCENARIOS: dict[str, Scenario] = _load()

__all__ = ["SCENARIOS", "Context", "Report", "Scenario", "execute", "run"]
