"""What the GitHub workflow must keep doing, beyond what its schema and zizmor check.

It runs the same ci/ steps as `.ci/run` (`make test`), so CI on GitHub and CI here cannot
drift apart, and it stays locked down: actions pinned by commit, read-only token.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
WORKFLOW = ROOT / ".github" / "workflows" / "ci.yml"
PINNED = re.compile(r"^\s*(?:-\s+)?uses:\s+[\w.-]+/[\w./-]+@[0-9a-f]{40} # v\d+\.\d+\.\d+\s*$")


@pytest.fixture(scope="module")
def workflow() -> dict[str, Any]:
    return yaml.safe_load(WORKFLOW.read_text())


def run_lines(job: dict[str, Any]) -> list[str]:
    """The shell lines of a job's `run:` steps, in order."""
    return [
        line.strip()
        for step in job["steps"]
        if "run" in step
        for line in step["run"].splitlines()
        if line.strip()
    ]


def test_actions_pinned_by_commit_with_version() -> None:
    """Every `uses:` names a full 40-hex commit SHA followed by `# vX.Y.Z`."""
    uses = [line for line in WORKFLOW.read_text().splitlines() if "uses:" in line]
    assert uses, "the workflow uses no action at all?"
    unpinned = [line.strip() for line in uses if not PINNED.match(line)]
    assert not unpinned, f"not pinned to a commit with a version comment: {unpinned}"


def test_token_is_read_only(workflow: dict[str, Any]) -> None:
    """The workflow token can read the code and nothing else; no job widens it."""
    assert workflow["permissions"] == {"contents": "read"}
    widened = [name for name, job in workflow["jobs"].items() if "permissions" in job]
    assert not widened, f"jobs that set their own permissions: {widened}"


def test_checkout_keeps_no_credentials(workflow: dict[str, Any]) -> None:
    """Every checkout sets persist-credentials: false."""
    for name, job in workflow["jobs"].items():
        for step in job["steps"]:
            if step.get("uses", "").startswith("actions/checkout@"):
                assert step.get("with", {}).get("persist-credentials") is False, name


def test_runs_are_bounded(workflow: dict[str, Any]) -> None:
    """A concurrency group cancels superseded runs and every job has a timeout."""
    assert workflow["concurrency"]["cancel-in-progress"] is True
    for name, job in workflow["jobs"].items():
        assert 0 < job["timeout-minutes"] <= 90, name


def test_lint_job_runs_scripts_lint(workflow: dict[str, Any]) -> None:
    """The lint job sets up as `make` does, then runs ci/lint.sh."""
    lines = run_lines(workflow["jobs"]["lint"])
    assert lines.index("ci/setup.sh") < lines.index("ci/lint.sh")


def test_test_job_runs_the_make_test_steps(workflow: dict[str, Any]) -> None:
    """The test job runs ci/setup.sh, images.sh, test.sh in the order `make test` does."""
    order = ["ci/setup.sh", "ci/images.sh", "ci/test.sh"]
    steps = [line for line in run_lines(workflow["jobs"]["test"]) if line in order]
    assert steps == order
    makefile = (ROOT / "Makefile").read_text()
    for target, script in (("setup", "ci/setup.sh"), ("images", "ci/images.sh")):
        assert re.search(rf"^{target}:.*\n\t{re.escape(script)}$", makefile, re.M), target
    assert re.search(r"^test: images\n\tci/test.sh$", makefile, re.M)
    assert "make test" in (ROOT / ".ci" / "run").read_text()


def test_ci_pulls_base_images_instead_of_trusting_the_cache(workflow: dict[str, Any]) -> None:
    """The image step pulls the official bases again (WSGW_PULL_BASE_IMAGES=1): a copy
    restored from the cache, or by its older-key fallback, is never built on for good."""
    (step,) = [s for s in workflow["jobs"]["test"]["steps"] if s.get("run") == "ci/images.sh"]
    assert step.get("env", {}).get("WSGW_PULL_BASE_IMAGES") == "1"


def test_reports_uploaded(workflow: dict[str, Any]) -> None:
    """The coverage and JUnit reports every pytest run writes (pyproject.toml's addopts,
    so ci/test.sh's too) are uploaded as artifacts."""
    uploads = [
        step
        for step in workflow["jobs"]["test"]["steps"]
        if step.get("uses", "").startswith("actions/upload-artifact@")
    ]
    assert len(uploads) == 1
    paths = uploads[0]["with"]["path"].split()
    assert paths == ["reports/coverage.xml", "reports/junit.xml"]
    addopts = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["pytest"]
    addopts = addopts["ini_options"]["addopts"].split()
    assert "--cov-report=xml:reports/coverage.xml" in addopts
    assert "--junitxml=reports/junit.xml" in addopts


def test_pip_cache_keyed_on_lock(workflow: dict[str, Any]) -> None:
    """Both jobs cache pip downloads keyed on the lock files (requirements/*.txt)."""
    for name, job in workflow["jobs"].items():
        setups = [s for s in job["steps"] if s.get("uses", "").startswith("actions/setup-python@")]
        assert setups, name
        assert setups[0]["with"]["cache"] == "pip"
        assert setups[0]["with"]["cache-dependency-path"] == "requirements/*.txt"
