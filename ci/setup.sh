#!/usr/bin/env bash
# Everything `make test` and `make up` need on the host: Compose v2, Chromium for the browser
# test, and the project's virtual environment. Idempotent and quick when nothing changed.
# Needs root only to install a missing Compose v2 or Chromium; debootstrap is installed only
# if the offline base-image fallback runs (stack/base_images.py), never here.
#
# The venv's bundled pip is whatever `python3 -m venv` ships, so it installs only the pinned,
# hash-checked installer (requirements/bootstrap.txt: uv); uv then installs the lock. What
# lands in .venv depends on the lock files alone, not on what PyPI has published since.
set -euo pipefail
cd "$(dirname "$0")/.."

ci/install-compose.sh

# Debian's Chromium and its driver, for tests/e2e/test_browser.py (examples/browser.html in a
# real browser). Installed like Compose: as root when missing; otherwise the test says why
# it cannot run (it fails in CI and skips elsewhere).
if ! command -v "${CHROMIUM_BINARY:-chromium}" >/dev/null || ! command -v "${CHROMEDRIVER:-chromedriver}" >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "installing chromium and chromium-driver (apt-get) for the browser test ..."
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      chromium chromium-driver >/dev/null
  else
    echo "chromium or chromedriver is missing: install them (apt-get install chromium" \
      "chromium-driver) for tests/e2e/test_browser.py" >&2
  fi
fi

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
