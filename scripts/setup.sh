#!/usr/bin/env bash
# Everything `make test` and `make up` need on the host: Compose v2 and the project's virtual
# environment. Idempotent and quick when nothing changed. Needs no root unless Compose v2 is
# missing; debootstrap is installed only if the offline base-image fallback runs
# (stack/base_images.py), never here.
#
# The venv's bundled pip is whatever `python3 -m venv` ships, so it installs only the pinned,
# hash-checked installer (requirements/bootstrap.txt: uv); uv then installs the lock. What
# lands in .venv depends on the lock files alone, not on what PyPI has published since.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-compose.sh

python=${PYTHON:-python3}
locks=(requirements/bootstrap.txt requirements/dev.txt)
stamp=.venv/.installed-$(cat "${locks[@]}" | sha256sum | cut -c1-16)
if [ ! -f "$stamp" ]; then
  started=$(date +%s)
  echo "creating .venv from ${locks[*]} ..."
  rm -rf .venv
  "$python" -m venv .venv
  .venv/bin/python -m pip install --quiet --disable-pip-version-check --no-deps \
    --require-hashes -r requirements/bootstrap.txt
  .venv/bin/uv pip install --quiet --python .venv/bin/python --require-hashes \
    -r requirements/dev.txt
  touch "$stamp"
  echo "created .venv in $(( $(date +%s) - started )) s"
fi
