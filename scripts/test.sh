#!/usr/bin/env bash
# The whole suite, in parallel, with coverage of server/. Reports go to reports/.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p reports
exec .venv/bin/python -m pytest -n auto \
  --cov --cov-fail-under="${COVERAGE_MIN:-90}" --cov-report=term --cov-report=xml:reports/coverage.xml \
  --junitxml=reports/junit.xml "$@"
