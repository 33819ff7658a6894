# The test runner of `make test-in-container`: the suite's Docker-backed layers run in this
# container against the host's Docker socket, as on CI runners that run jobs in containers.
# Built on the project's own Python base image; everything the suite calls is added here.
# ci/test-in-container.sh builds it from a context it assembles in .stack/test-runner/.
ARG BASE_IMAGE=websocket-gateway/base-python:debian-sid
FROM ${BASE_IMAGE}

# Docker CLI and Compose v2 (the compose and swarm tests), Chromium and its driver (the
# browser test), Node (the JavaScript example), openssl (the TLS test's certificate),
# iproute2 (testcontainers reads the Docker host's address from `ip route`), git (the
# bench's report names the commit). Check-Valid-Until: a mirror may serve a snapshot.
RUN apt-get -o Acquire::Check-Valid-Until=false update -qq \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      docker-cli docker-compose chromium chromium-driver nodejs openssl iproute2 git \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/archives/*

# requirements/dev.txt, hash-checked, from wheels downloaded on the host for this image's
# Python (stack/wheelhouse.py): a build container may not reach PyPI.
COPY wheels/ /build/wheels/
COPY dev.txt /build/dev.txt
RUN python3 -m venv /opt/venv \
 && /opt/venv/bin/pip install --quiet --no-index --find-links /build/wheels \
      --require-hashes -r /build/dev.txt \
 && rm -rf /build

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp
