#!/usr/bin/env bash
# Every linter of tests/lint/, run directly with the same configuration (the workflow's lint
# job). Runs them all, then fails if any failed. Needs ci/setup.sh first (the linters
# come from requirements/dev.txt; hadolint and zizmor ship their binaries on PyPI).
set -uo pipefail
cd "$(dirname "$0")/.."
bin=.venv/bin
failed=()

run() {
  echo "==> $*"
  "$@" || failed+=("$1")
}

# Python: lint and formatting (rules in pyproject.toml).
run "$bin/ruff" check .
run "$bin/ruff" format --check .
# Dockerfiles (.hadolint.yaml: every finding fails).
run "$bin/hadolint" --config .hadolint.yaml server/Dockerfile nginx/Dockerfile \
  examples/broadcast_room/Dockerfile
# YAML (.yamllint.yaml); --strict makes warnings fail too.
run "$bin/yamllint" --strict -c .yamllint.yaml docker-compose.yaml .github/workflows/ \
  .github/dependabot.yml examples/broadcast_room/compose.yaml
# The workflow: GitHub's schema, then a security audit (pinned actions, credentials,
# permissions, template injection). Both offline.
run "$bin/check-jsonschema" --builtin-schema vendor.github-workflows .github/workflows/ci.yml
run "$bin/zizmor" --offline .github/workflows/
# The compose file as Compose itself reads it.
run docker compose -f docker-compose.yaml config -q
# nginx -t: the NGINX image's build renders the templates and runs `nginx -t` on them
# (nginx/Dockerfile, `wsgw-nginx check`); a broken configuration fails this build.
run "$bin/python" -c 'from stack import images; print("nginx -t passed in", images.ensure(images.NGINX))'

if [ ${#failed[@]} -gt 0 ]; then
  echo "lint failed: ${failed[*]}" >&2
  exit 1
fi
echo "lint passed"
