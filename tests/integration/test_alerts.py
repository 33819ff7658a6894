"""The alerting rules: `promtool test rules` runs each alert's unit test, in the Prometheus image.

promtool ships with Prometheus (the official image and Debian's package); the test runs it
inside the image the observability profile builds, so it needs nothing installed on the
host but Docker.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from stack import images
from stack.containers import run_once

pytestmark = pytest.mark.integration

RULES = images.PROMETHEUS.context
TESTS = RULES / "tests" / "alerts_test.yml"


@pytest.fixture(scope="module")
def prometheus_image(docker_ready: None) -> str:
    return images.ensure(images.PROMETHEUS)


def promtool(image: str, *args: str) -> tuple[int, str]:
    """Run promtool in ``image`` with observability/prometheus mounted at /rules."""
    done = run_once(image, ["promtool", *args], entrypoint=[], volumes={str(RULES): "/rules"})
    return done.exit_code, done.output


def test_every_alert_passes_its_promtool_unit_test(prometheus_image: str) -> None:
    """`promtool test rules` passes: each alert fires on its series, not on healthy ones."""
    status, output = promtool(prometheus_image, "test", "rules", "/rules/tests/alerts_test.yml")
    assert status == 0, output
    assert "SUCCESS" in output


def test_every_alert_has_a_unit_test() -> None:
    """Each alert of alerts.yml is named by an alert_rule_test of alerts_test.yml."""
    rules = yaml.safe_load((RULES / "alerts.yml").read_text())
    alerts = {r["alert"] for group in rules["groups"] for r in group["rules"] if "alert" in r}
    tests = yaml.safe_load(TESTS.read_text())["tests"]
    tested = {case["alertname"] for test in tests for case in test["alert_rule_test"]}
    assert sorted(alerts - tested) == []
    assert len(alerts) >= 8


def test_a_broken_expectation_fails(prometheus_image: str, tmp_path: Path) -> None:
    """promtool fails when an alert does not fire as a test expects: the suite can fail."""
    # The server never goes down in this copy, so WebSocketServerDown must not fire.
    copy = RULES / "tests" / f"broken-{tmp_path.name}.yml"
    copy.write_text(TESTS.read_text().replace('values: "1 1 0 0 0"', 'values: "1 1 1 1 1"'))
    try:
        status, output = promtool(prometheus_image, "test", "rules", f"/rules/tests/{copy.name}")
    finally:
        copy.unlink()
    assert status != 0 and "WebSocketServerDown" in output, output
