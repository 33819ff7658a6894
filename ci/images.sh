#!/usr/bin/env bash
# Build (or find, by content hash) the server and NGINX images, and the base images they
# need where no registry answers. Prints what it built and how long it took.
set -euo pipefail
cd "$(dirname "$0")/.."
.venv/bin/python -m stack images
