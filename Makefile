# The two commands: `make up` runs the gateway, `make test` runs the whole suite.
# Each does its own set-up on a fresh machine (see ci/setup.sh).
.PHONY: setup images test test-in-container up down lint bench clean lock

setup:
	ci/setup.sh

images: setup
	ci/images.sh

test: images
	ci/test.sh

# The Docker-backed layers inside a container on the host's Docker socket (as many CI
# runners run): proves the suite needs no route to the stacks' bridge networks.
test-in-container: images
	ci/test-in-container.sh

lint: setup
	.venv/bin/python -m pytest -n auto tests/lint

# Compose builds with the same base images (official, or our Debian ones offline). Once
# NGINX answers, a check from the host says whether the published port works (a dead
# docker-proxy is invisible to the containers' own health checks).
up: images
	(.venv/bin/python -m stack check-port --wait 300 --port $${GATEWAY_PORT:-8080} || true) &
	eval "$$(.venv/bin/python -m stack compose-env)" && DOCKER_BUILDKIT=0 docker compose up --build

down:
	docker compose down --remove-orphans

bench: images
	.venv/bin/python -m stack bench

# Removes stacks left by interrupted runs; cached images stay.
clean:
	.venv/bin/python -m stack down --all

# Regenerates the three hash-checked locks from their .in files, keeping every pin that
# still satisfies them (add --upgrade to UV_COMPILE to move to newer releases). dev.txt is
# constrained by server/requirements.txt, so both install the same version of what they share.
UV_COMPILE = .venv/bin/uv pip compile --quiet --generate-hashes --python-version 3.11 \
	--custom-compile-command "make lock"
lock: setup
	$(UV_COMPILE) requirements/bootstrap.in -o requirements/bootstrap.txt
	$(UV_COMPILE) server/requirements.in -o server/requirements.txt
	$(UV_COMPILE) -c server/requirements.txt requirements/dev.in -o requirements/dev.txt
