"""The failure scenarios (docs/scenarios.md), each on private stacks of its own.

Each test runs the same definition as ``python -m stack scenario NAME`` (stack/scenarios/)
and fails with the scenario's full timestamped report, so a red run says what was done,
what was seen and which claim did not hold. Every wait inside has a deadline; the scenario
as a whole has one too (Scenario.deadline, scaled by WSGW_TIMEOUT_UNIT).
"""

from __future__ import annotations

import dataclasses

import pytest

from stack.scenarios import SCENARIOS, Report, run


def run_scenario(name: str, make_stack) -> None:
    scenario = SCENARIOS[name]
    stacks = {
        role: make_stack(**{f.name: getattr(options, f.name) for f in dataclasses.fields(options)})
        for role, options in scenario.stacks.items()
    }
    report = run(scenario, stacks, Report(f"scenario {scenario.number} {scenario.name}"))
    print(report.render())  # shown by pytest -rP, and on failure below
    if not report.ok:
        pytest.fail(report.render(), pytrace=False)


def test_nginx_restart(make_stack) -> None:
    run_scenario("nginx-restart", make_stack)


def test_nginx_reload(make_stack) -> None:
    run_scenario("nginx-reload", make_stack)


def test_server_restart(make_stack) -> None:
    run_scenario("server-restart", make_stack)


def test_network_cut(make_stack) -> None:
    run_scenario("network-cut", make_stack)


def test_graceful_drain(make_stack) -> None:
    run_scenario("graceful-drain", make_stack)


def test_bad_input(make_stack) -> None:
    run_scenario("bad-input", make_stack)


def test_timeouts(make_stack) -> None:
    run_scenario("timeouts", make_stack)


def test_limits(make_stack) -> None:
    run_scenario("limits", make_stack)


def test_resource_limits(make_stack) -> None:
    run_scenario("resources", make_stack)


@pytest.mark.alone  # its healthy clients' p99 round trip is a check
def test_hostile_clients(make_stack) -> None:
    """Attackers from several addresses and the backend at once: see the scenario."""
    run_scenario("hostile-clients", make_stack)


@pytest.mark.swarm
def test_rolling_update(make_stack) -> None:
    """On the run's swarm (conftest.py; machine-wide lock, stack always removed): see the
    scenario."""
    run_scenario("rolling-update", make_stack)
