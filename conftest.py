"""Fixtures shared by every test layer: Docker, the images, and private gateway stacks.

Each pytest-xdist worker owns its stacks, named from the run id and the worker id, so
workers never touch each other's containers. Images are built once per run behind a file
lock (stack/images.py); stacks are always taken down, also when a test fails.

Tests marked ``swarm`` need this host in a Docker Swarm, and swarm init and leave rewire
Docker's networking under every stack running beside them (their NGINX answered 502). So a
run that selects any makes the host a swarm once, while collecting, before any test starts
a stack, and leaves it once, after the last stack is down, only if the run made it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

from stack import harness_config

LAYERS = ("unit", "integration", "e2e", "scenario", "load", "lint")


def whole_suite(config: pytest.Config) -> bool:
    """True when no argument narrows the run: it selects every test under testpaths."""
    narrowing = ("keyword", "markexpr", "deselect", "lf")  # -k, -m, --deselect, --lf
    return config.args_source is pytest.Config.ArgsSource.TESTPATHS and not any(
        getattr(config.option, name, None) for name in narrowing
    )


def pytest_configure(config: pytest.Config) -> None:
    if hasattr(config, "workerinput"):
        return
    # One id per test run, made by the controller (or the only process) and inherited by
    # pytest-xdist's workers: the run's hold on the swarm is named by it.
    harness_config.begin_test_run()
    # The coverage gate, for `pytest -n auto` as for `make test`. pytest-cov reads its gate
    # from the command line or coverage's own fail_under, both of which would also fail a
    # run of one layer; its plugin's options are set instead (checked with pytest-cov 7.1).
    cov = config.pluginmanager.get_plugin("_cov")
    if cov is not None and whole_suite(config) and not cov.options.cov_fail_under:
        cov.options.cov_fail_under = harness_config.current().coverage_min


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark each test with its layer, from the folder it lives in (tests/<layer>/...)."""
    for item in items:
        parts = Path(item.path).parts
        for layer in LAYERS:
            if layer in parts or f"{layer}s" in parts:
                item.add_marker(getattr(pytest.mark, layer))


def _docker_answers() -> bool:
    from stack.docker_client import DockerUnavailable, client

    try:
        client()
    except DockerUnavailable:
        return False  # the tests say so themselves (docker_ready)
    return True


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item) -> Iterator[None]:
    """A test marked ``alone`` runs while no other test of this machine runs (its set-up
    and teardown included); every other test runs beside others, not beside it."""
    from stack import machine_locks

    hold = machine_locks.alone if item.get_closest_marker("alone") else machine_locks.beside_others
    with hold():
        return (yield)


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist's worker reports its collection
def pytest_collection_finish(session: pytest.Session) -> None:
    """With a swarm test selected, make the host a swarm now, before any stack starts.

    pytest-xdist schedules tests only once every worker has reported its collection, so
    the swarm is there (or the run has failed) before any worker starts one.
    """
    if session.config.option.collectonly:
        return
    if any(item.get_closest_marker("swarm") for item in session.items) and _docker_answers():
        from stack import swarm

        swarm.hold_for_run(harness_config.current().test_run)


@pytest.hookimpl(trylast=True)  # after the session's fixtures (and stacks) are torn down
def pytest_sessionfinish(session: pytest.Session) -> None:
    """Leave the swarm this run made, once every worker is done (controller only)."""
    if hasattr(session.config, "workerinput") or not _docker_answers():
        return
    from stack import swarm

    run = harness_config.current().test_run
    if swarm.release_for_run(run):
        print(f"\nleft the swarm this test run made ({harness_config.TEST_RUN}={run})")


@pytest.fixture(scope="session")
def docker_ready() -> None:
    """Docker must answer; in CI its absence fails the run, never skips it."""
    from stack.docker_client import DockerUnavailable, client

    try:
        client()
    except DockerUnavailable as e:
        harness_config.current().unavailable("Docker", str(e))


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
