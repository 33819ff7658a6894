# The two commands: `make up` runs the gateway, `make test` runs the whole suite.
# Each does its own set-up on a fresh machine (see ci/setup.sh).
.PHONY: setup images test up down lint bench clean

setup:
	ci/setup.sh

images: setup
	ci/images.sh

test: images
	ci/test.sh

lint: setup
	.venv/bin/python -m pytest -n auto tests/lint

# Compose builds with the same base images (official, or our Debian ones offline).
up: images
	eval "$$(.venv/bin/python -m stack compose-env)" && DOCKER_BUILDKIT=0 docker compose up --build

down:
	docker compose down --remove-orphans

bench: images
	.venv/bin/python -m stack bench

# Removes stacks left by interrupted runs; cached images stay.
clean:
	.venv/bin/python -m stack down --all
