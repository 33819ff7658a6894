#!/usr/bin/env bash
# The Docker-backed layers (integration, e2e, scenarios, load) run inside a container that
# uses the host's Docker socket, as CI runners that run jobs in containers do: there Docker's
# network isolation hides every other network's bridge IPs, so the suite must reach the
# containers through published ports at testcontainers' Docker host address, `docker exec`
# and helper containers (docs/testing.md). Extra arguments go to pytest.
#
# The repository is mounted at the same absolute path, so the bind mounts the tests ask
# Docker for (TLS certificate dirs under pytest's basetemp, which lives in the repository)
# name the same files on the host; the machine-wide lock directory is shared the same way.
# Arguments (pytest's) replace the default selection: the four Docker-backed layers.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

# Images and the server's wheelhouse are made here: the container has no route to PyPI
# (PIP_NO_INDEX below: the wheelhouse check there finds everything in place).
.venv/bin/python -m stack images >/dev/null
base=$(.venv/bin/python -c 'from stack import base_images as b; print(b.resolve(b.PYTHON))')
locks=$(.venv/bin/python -c 'from stack import machine_locks; print(machine_locks.DIRECTORY)')

# The runner image (ci/test-runner.Dockerfile) is built from a context of its own under
# .stack/ (git-ignored): the runner's wheelhouse for its Python (a build container may not
# reach PyPI) and the lock it installs. The tag is a hash of all that goes in, so an
# unchanged runner is reused.
context=.stack/test-runner
mkdir -p "$context"
cp requirements/dev.txt "$context/dev.txt"
.venv/bin/python - "$base" "$context" <<'PY'
import sys
from pathlib import Path

from stack import wheelhouse

wheelhouse.prepare(sys.argv[1], Path("requirements/dev.txt"), Path(sys.argv[2]) / "wheels")
PY
hash=$( { cat ci/test-runner.Dockerfile "$context/dev.txt"; docker image inspect -f '{{.Id}}' "$base"; } \
  | sha256sum | cut -c1-12)
tag=websocket-gateway/test-runner:$hash
if ! docker image inspect "$tag" >/dev/null 2>&1; then
  echo "building $tag ..."
  DOCKER_BUILDKIT=0 docker build --quiet --build-arg "BASE_IMAGE=$base" -t "$tag" \
    -f ci/test-runner.Dockerfile "$context" >/dev/null
fi

[ $# -gt 0 ] || set -- tests/integration tests/e2e tests/scenarios tests/load
basetemp=$root/.stack/pytest-in-container
mkdir -p "$(dirname "$basetemp")"
started=$(date +%s)
in_runner() {
  docker run --rm --init \
    -v /var/run/docker.sock:/var/run/docker.sock \
    -v "$root:$root" -w "$root" \
    -v "$locks:$locks" \
    --user "$(id -u):$(id -g)" --group-add "$(stat -c %g /var/run/docker.sock)" \
    -e CI=true -e WSGW_TIMEOUT_UNIT -e WSGW_TESTS_IN_CONTAINER=1 \
    -e PIP_NO_INDEX=1 -e PIP_FIND_LINKS="$root/server/wheels" \
    "$tag" python -m pytest -p no:cacheprovider --basetemp="$basetemp" "$@"
}
# One run, as ci/test.sh (the swarm tests in it). No coverage: the server runs in the
# stacks' containers here, not in pytest's processes.
status=0
in_runner -n auto --no-cov "$@" || status=$?
echo "in-container run: exit $status after $(( $(date +%s) - started )) s"
exit "$status"
