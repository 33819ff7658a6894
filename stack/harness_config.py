"""The harness's configuration: read once from the environment into one frozen object.

What ``server/config.py`` is for the server, this is for the test harness and ``python -m
stack``: every environment variable they read, its default and its allowed values, in one
place (the table is in docs/testing.md). Nothing else in ``stack/``, ``tests/`` or
``conftest.py`` reads ``os.environ``; a subprocess that needs this process's environment
gets it from :func:`subprocess_env`.

A bad value raises :class:`HarnessConfigError`, one line naming the variable, the value and
what is allowed. An empty value counts as unset.
"""

from __future__ import annotations

import functools
import os
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, NoReturn

_TRUE = frozenset({"true", "1", "yes", "on"})
_FALSE = frozenset({"false", "0", "no", "off"})
_BOOL_ALLOWED = "true, false, 1, 0, yes, no, on, off"
TEST_RUN = "WSGW_TEST_RUN"  # set by the test run's controller, inherited by its workers
# The variables that name another base image (stack/base_images.py: BaseImage.env_override).
BASE_IMAGE_VARIABLES = (
    "PYTHON_BASE_IMAGE",
    "NGINX_BASE_IMAGE",
    "PROMETHEUS_BASE_IMAGE",
    "NGINX_EXPORTER_BASE_IMAGE",
)


class HarnessConfigError(ValueError):
    """A harness setting is invalid; ``str(error)`` is one line: variable, value, allowed."""

    def __init__(self, variable: str, value: str, allowed: str) -> None:
        self.variable = variable
        super().__init__(f"{variable}={value!r} is not valid; allowed: {allowed}")


@dataclass(frozen=True)
class HarnessConfig:
    """Every setting of the harness; field comments name the variable, units and default."""

    # Timeouts and the run
    timeout_unit: float = 1.0  # WSGW_TIMEOUT_UNIT: seconds per timeout unit, > 0
    ci: bool = False  # CI: a missing prerequisite fails the test instead of skipping it
    coverage_min: float = 90.0  # COVERAGE_MIN: percent of server/ a whole-suite run covers
    test_run: str = ""  # WSGW_TEST_RUN: the run's id, inherited by pytest-xdist's workers
    in_container: bool = False  # WSGW_TESTS_IN_CONTAINER: pytest runs in a container
    # Images
    pull_base_images: bool = False  # WSGW_PULL_BASE_IMAGES: pull official bases again
    # PYTHON_BASE_IMAGE, NGINX_BASE_IMAGE, ...: {variable: image} of those set
    base_images: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    debian_mirror: str = "https://deb.debian.org/debian"  # DEBIAN_MIRROR
    debian_keyring: str = "/usr/share/keyrings/debian-archive-keyring.gpg"  # DEBIAN_KEYRING
    debian_suite: str = "sid"  # DEBIAN_SUITE
    # Compose and swarm
    compose_profiles: tuple[str, ...] = ()  # COMPOSE_PROFILES, comma-separated
    server_nofile: int | None = None  # SERVER_NOFILE: set, the machine's limit is not applied
    nginx_nofile: int | None = None  # NGINX_NOFILE: likewise
    swarm_stack: str = "wsgw"  # WSGW_SWARM_STACK: the swarm stack's name
    # The browser
    chromium_binary: str = "chromium"  # CHROMIUM_BINARY: a name on PATH or a path
    chromedriver: str = "chromedriver"  # CHROMEDRIVER: likewise

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> HarnessConfig:
        """Parse ``environ`` (usually ``os.environ``); raise HarnessConfigError on a bad value."""
        values: dict[str, Any] = {}

        def read(name: str, variable: str, parse: Callable[[str, str], Any] = _text) -> None:
            raw = environ.get(variable, "").strip()
            if raw:
                values[name] = parse(variable, raw)

        read("timeout_unit", "WSGW_TIMEOUT_UNIT", _positive_float)
        read("ci", "CI", _bool)
        read("coverage_min", "COVERAGE_MIN", _percent)
        read("test_run", TEST_RUN)
        read("in_container", "WSGW_TESTS_IN_CONTAINER", _bool)
        read("pull_base_images", "WSGW_PULL_BASE_IMAGES", _bool)
        read("debian_mirror", "DEBIAN_MIRROR")
        read("debian_keyring", "DEBIAN_KEYRING")
        read("debian_suite", "DEBIAN_SUITE")
        read("compose_profiles", "COMPOSE_PROFILES", _csv)
        read("server_nofile", "SERVER_NOFILE", _positive_int)
        read("nginx_nofile", "NGINX_NOFILE", _positive_int)
        read("swarm_stack", "WSGW_SWARM_STACK")
        read("chromium_binary", "CHROMIUM_BINARY")
        read("chromedriver", "CHROMEDRIVER")
        chosen = {v: environ[v].strip() for v in BASE_IMAGE_VARIABLES if environ.get(v, "").strip()}
        values["base_images"] = MappingProxyType(chosen)
        return cls(**values)

    def unavailable(self, needed: str, reason: str) -> NoReturn:
        """A test's prerequisite is missing: in CI that fails the test, elsewhere it skips."""
        import pytest

        if self.ci:
            pytest.fail(f"CI needs {needed}: {reason}", pytrace=False)
        pytest.skip(f"no {needed} here: {reason}")


@functools.cache
def current() -> HarnessConfig:
    """The harness's configuration, read from this process's environment once."""
    return HarnessConfig.from_env(os.environ)


def subprocess_env(**overrides: str) -> dict[str, str]:
    """This process's environment plus ``overrides``: for a subprocess (docker, compose,
    apt-get, the server) that must see the same variables as we do."""
    return {**os.environ, **overrides}


def begin_test_run() -> str:
    """A new test run's id, exported (WSGW_TEST_RUN) so pytest-xdist's workers inherit it.

    Called by the run's controller before any worker starts.
    """
    run = uuid.uuid4().hex[:12]
    os.environ[TEST_RUN] = run
    current.cache_clear()
    return run


def _text(_variable: str, raw: str) -> str:
    return raw


def _bool(variable: str, raw: str) -> bool:
    if raw.lower() in _TRUE:
        return True
    if raw.lower() in _FALSE:
        return False
    raise HarnessConfigError(variable, raw, _BOOL_ALLOWED)


def _number(variable: str, raw: str, allowed: str, kind: type, low: float, high: float) -> Any:
    try:
        value = kind(raw)
    except ValueError:
        raise HarnessConfigError(variable, raw, allowed) from None
    if not low <= value <= high:
        raise HarnessConfigError(variable, raw, allowed)
    return value


def _positive_float(variable: str, raw: str) -> float:
    return _number(variable, raw, "a number of seconds, 0.01-1000", float, 0.01, 1000)


def _percent(variable: str, raw: str) -> float:
    return _number(variable, raw, "a percentage, 0-100", float, 0, 100)


def _positive_int(variable: str, raw: str) -> int:
    return _number(variable, raw, "a whole number, 1-1073741816", int, 1, 1073741816)


def _csv(_variable: str, raw: str) -> tuple[str, ...]:
    return tuple(word.strip() for word in raw.split(",") if word.strip())
