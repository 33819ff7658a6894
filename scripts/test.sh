#!/usr/bin/env bash
# The whole suite, with coverage of server/. Reports go to reports/.
#
# Two passes: everything in parallel, then the tests marked `swarm` alone. Those make this
# host a one-node swarm, and swarm init and leave rewire Docker's networking meanwhile: a
# stack running beside them saw its NGINX answer 502 to all 500 handshakes of the load test.
# Arguments go to both passes; a pass that selects no test is fine.
set -uo pipefail
cd "$(dirname "$0")/.."
mkdir -p reports
pytest=(.venv/bin/python -m pytest --cov)

"${pytest[@]}" -n auto -m "not swarm" --cov-report= --junitxml=reports/junit.xml "$@"
parallel=$?
"${pytest[@]}" -m swarm --cov-append --cov-fail-under="${COVERAGE_MIN:-90}" \
  --cov-report=term --cov-report=xml:reports/coverage.xml \
  --junitxml=reports/junit-swarm.xml "$@"
alone=$?

# pytest exits 5 when a pass selects nothing (e.g. arguments naming one test).
for status in "$parallel" "$alone"; do
  if [ "$status" -ne 0 ] && [ "$status" -ne 5 ]; then
    exit "$status"
  fi
done
