#!/usr/bin/env bash
# The whole suite: one pytest run, in parallel (pytest -n auto), as the README's command by
# hand. pyproject.toml adds coverage of server/ and the reports (reports/coverage.xml,
# reports/junit.xml); conftest.py gates coverage on a whole-suite run and makes the host a
# swarm once, before any stack starts, when a `swarm` test is selected. Arguments go to
# pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
exec .venv/bin/python -m pytest -n auto "$@"
