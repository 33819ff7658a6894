#!/usr/bin/env bash
# Everything `make test` and `make up` need, on a fresh machine: Debian packages
# (debootstrap for offline base images, Compose v2) and the project's virtual environment.
# Idempotent and quick when nothing changed.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
[ -x /usr/sbin/debootstrap ] || command -v debootstrap >/dev/null || missing+=(debootstrap)
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "missing ${missing[*]}: install with apt-get (needs root)" >&2
    exit 1
  fi
  echo "installing ${missing[*]} ..."
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
ci/install-compose.sh

# The virtual environment, reinstalled only when the lock file changes.
python=${PYTHON:-python3}
lock=requirements/dev.txt
stamp=.venv/.installed-$(sha256sum "$lock" | cut -c1-16)
if [ ! -f "$stamp" ]; then
  echo "creating .venv from $lock ..."
  rm -rf .venv
  "$python" -m venv .venv
  .venv/bin/pip install --quiet --disable-pip-version-check --require-hashes -r "$lock"
  touch "$stamp"
fi
