"""Fixtures shared by every test layer: Docker, the images, and private gateway stacks.

Each pytest-xdist worker owns its stacks, named from the run id and the worker id, so
workers never touch each other's containers. Images are built once per run behind a file
lock (stack/images.py); stacks are always taken down, also when a test fails.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

LAYERS = ("unit", "integration", "e2e", "scenario", "load", "lint")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark each test with its layer, from the folder it lives in (tests/<layer>/...)."""
    for item in items:
        parts = Path(item.path).parts
        for layer in LAYERS:
            if layer in parts or f"{layer}s" in parts:
                item.add_marker(getattr(pytest.mark, layer))


@pytest.fixture(scope="session")
def docker_ready() -> None:
    """Docker must answer; in CI its absence fails the run, never skips it."""
    from stack.docker_client import DockerUnavailable, client

    try:
        client()
    except DockerUnavailable as e:
        if os.environ.get("CI"):
            pytest.fail(f"CI needs Docker: {e}", pytrace=False)
        pytest.skip(f"Docker is not available here: {e}")


@pytest.fixture(scope="session")
def gateway_images(docker_ready: None) -> dict[str, str]:
    """Tags of the server and NGINX images for the current code (built once, shared)."""
    from stack import images

    return images.ensure_all()


@pytest.fixture(scope="session")
def stack_prefix(testrun_uid: str, worker_id: str) -> str:
    """A name prefix unique to this run and worker."""
    return f"wsgw-{testrun_uid[:6]}-{worker_id}"


@pytest.fixture(scope="session")
def stack(gateway_images: dict[str, str], stack_prefix: str) -> Iterator:
    """This worker's shared stack; tests must not break or reconfigure it (use make_stack).

    Compose defaults, except the per-IP limits: every test here connects from the same
    address, and the default 100 handshakes per minute and 100 open connections per IP
    would throttle the suite itself. The limits are proven on stacks of their own
    (tests/integration/test_rate_limit.py, the rate-limit scenario).
    """
    from stack.gateway import GatewayStack, StackOptions

    options = StackOptions(
        nginx_env={
            "WS_RATE_LIMIT": "60000r/m",
            "WS_RATE_BURST": "10000",
            "WS_CONN_LIMIT_PER_IP": "2000",
        }
    )
    with GatewayStack.up(f"{stack_prefix}-shared", options) as shared:
        yield shared


@pytest.fixture
def make_stack(
    gateway_images: dict[str, str], stack_prefix: str, request: pytest.FixtureRequest
) -> Iterator[Callable]:
    """A factory of private stacks (for tests that break or reconfigure one); all torn down."""
    from stack.gateway import GatewayStack, StackOptions

    made: list[GatewayStack] = []

    def make(**options) -> GatewayStack:
        name = f"{stack_prefix}-{request.node.name[:20].strip('_-[]').lower()}-{len(made)}"
        name = "".join(ch if ch.isalnum() or ch == "-" else "-" for ch in name)
        stack = GatewayStack(name, StackOptions(**options))
        made.append(stack)
        stack.start()
        return stack

    yield make
    with ExitStack() as teardown:  # every stack comes down, even if one teardown fails
        for stack in made:
            teardown.callback(stack.down)
