"""One docker-py client per process, with a clear error when Docker is missing."""

from __future__ import annotations

import functools

import docker
import docker.errors


class DockerUnavailable(RuntimeError):
    """The Docker daemon cannot be reached."""


@functools.cache
def client() -> docker.DockerClient:
    """Return a client for the daemon named by the environment (DOCKER_HOST or the socket)."""
    try:
        c = docker.from_env()
        c.ping()
    except docker.errors.DockerException as e:
        raise DockerUnavailable(
            f"cannot reach the Docker daemon ({e}); start it, or check DOCKER_HOST and "
            "that this user may use /var/run/docker.sock"
        ) from e
    return c


def image_exists(tag: str) -> bool:
    """Whether an image with this tag is present locally."""
    try:
        client().images.get(tag)
    except docker.errors.ImageNotFound:
        return False
    return True
