"""Waiting on conditions with deadlines, never on fixed sleeps.

Every deadline is a number of seconds multiplied by ``WSGW_TIMEOUT_UNIT`` (default 1;
stack/harness_config.py), so a slow machine scales all of them at once.
"""

from __future__ import annotations

import inspect
import time
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable
from typing import TypeVar

from tenacity import (
    AsyncRetrying,
    RetryError,
    Retrying,
    retry_if_exception_type,
    retry_if_result,
    stop_after_delay,
    wait_exponential,
    wait_fixed,
)

from stack import harness_config

UNIT = harness_config.current().timeout_unit
T = TypeVar("T")


class ConditionTimeout(TimeoutError):
    """A condition did not hold before its deadline.

    ``last_error`` is the error of the last attempt ("Type: message"), or "" if it returned.
    """

    def __init__(self, message: str, last_error: str = "") -> None:
        super().__init__(message)
        self.last_error = last_error


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
        raise _timeout(e, what, timeout) from None


async def until_async(
    probe: Callable[[], T | Awaitable[T]],
    what: str,
    within: float = 30,
    accept: Callable[[T], bool] = bool,
    errors: tuple[type[BaseException], ...] = (OSError,),
    interval: float = 0.1,
) -> T:
    """:func:`until` for the event loop, ``within`` units: ``probe`` may be sync or async.

    It is polled every ``interval`` s, so other tasks run in between.
    """
    retrying = AsyncRetrying(
        stop=stop_after_delay(seconds(within)),
        wait=wait_fixed(interval),
        retry=retry_if_exception_type(errors) | retry_if_result(lambda r: not accept(r)),
    )
    try:
        return await retrying(_awaited, probe)
    except RetryError as e:
        raise _timeout(e, what, within) from None


async def holds(
    probe: Callable[[], object], duration: float, interval: float = 0.1
) -> float | None:
    """Poll ``probe`` (sync or async) for ``duration`` s: None if it stayed true throughout,
    else the seconds after which it was false.

    ``duration`` is seconds, not units: the span that must pass is the claim itself.
    """
    retrying = AsyncRetrying(
        stop=stop_after_delay(duration),
        wait=wait_fixed(interval),
        retry=retry_if_result(bool),  # go on while it holds
    )
    started = time.monotonic()
    try:
        await retrying(_awaited, probe)
    except RetryError:
        return None
    return time.monotonic() - started


async def _awaited(probe: Callable[[], T | Awaitable[T]]) -> T:
    result = probe()
    if inspect.isawaitable(result):
        result = await result
    return result  # type: ignore[return-value]


def _timeout(error: RetryError, what: str, timeout: float) -> ConditionTimeout:
    last = error.last_attempt
    detail = repr(last.exception()) if last.failed else repr(last.result())
    failure = f"{type(last.exception()).__name__}: {last.exception()}" if last.failed else ""
    return ConditionTimeout(
        f"{what}: not true within {seconds(timeout):.0f} s (last: {detail})", failure
    )


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
