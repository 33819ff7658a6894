"""Waiting on conditions with deadlines, never on fixed sleeps.

Every deadline is a number of seconds multiplied by ``WSGW_TIMEOUT_UNIT`` (default 1), so
a slow machine scales all of them at once.
"""

from __future__ import annotations

import os
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import TypeVar

from tenacity import (
    RetryError,
    Retrying,
    retry_if_exception_type,
    retry_if_result,
    stop_after_delay,
    wait_exponential,
    wait_fixed,
)

UNIT = float(os.environ.get("WSGW_TIMEOUT_UNIT", "1"))
T = TypeVar("T")


class ConditionTimeout(TimeoutError):
    """A condition did not hold before its deadline."""


def seconds(n: float) -> float:
    """``n`` timeout units in seconds."""
    return n * UNIT


def until(
    probe: Callable[[], T],
    what: str,
    timeout: float = 30,
    accept: Callable[[T], bool] = bool,
    errors: tuple[type[BaseException], ...] = (OSError,),
) -> T:
    """Call ``probe`` until ``accept`` holds for its result; return that result.

    ``probe`` may raise one of ``errors`` meanwhile. After ``timeout`` units, raise
    ConditionTimeout naming ``what`` and the last result or error.
    """
    retrying = Retrying(
        stop=stop_after_delay(seconds(timeout)),
        wait=wait_exponential(multiplier=0.05, max=0.5),
        retry=retry_if_exception_type(errors) | retry_if_result(lambda r: not accept(r)),
    )
    try:
        return retrying(probe)
    except RetryError as e:
        last = e.last_attempt
        detail = repr(last.exception()) if last.failed else repr(last.result())
        raise ConditionTimeout(
            f"{what}: not true within {seconds(timeout):.0f} s (last: {detail})"
        ) from None


def http_status(url: str, timeout: float = 2) -> int:
    """The HTTP status of GET ``url`` (an error status is returned, not raised)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status
    except urllib.error.HTTPError as e:
        return e.code


def http_ok(url: str, what: str, timeout: float = 30) -> None:
    """Wait until GET ``url`` answers 200."""
    until(lambda: http_status(url), what, timeout, accept=lambda status: status == 200)


def settled(
    read: Callable[[], float],
    what: str,
    timeout: float = 15,
    tolerance: float = 0.02,
    interval: float = 0.5,
) -> float:
    """Wait until two readings ``interval`` s apart agree within ``tolerance``; return the last.

    For figures that drift after a change (memory after opening connections): a deadline
    on a condition, not a guessed pause.
    """
    last = [read()]

    def agrees() -> bool:
        value = read()
        previous, last[0] = last[0], value
        return abs(value - previous) <= tolerance * max(abs(previous), 1.0)

    retrying = Retrying(
        stop=stop_after_delay(seconds(timeout)),
        wait=wait_fixed(interval),
        retry=retry_if_result(lambda ok: not ok),
    )
    try:
        retrying(agrees)
    except RetryError:
        raise ConditionTimeout(f"{what}: still changing after {seconds(timeout):.0f} s") from None
    return last[0]
