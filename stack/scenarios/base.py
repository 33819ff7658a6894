"""What every scenario is made of: its definition, its context, and how it is run.

A scenario is an ``async def run(ctx)`` that drives real containers and real clients and
records what it does and sees in ``ctx.report``. The pytest test and the CLI run the same
definition; only the stacks come from different places (the ``make_stack`` fixture, or
:func:`stack.scenarios.command.main`).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from stack import prometheus
from stack.gateway import GatewayStack, StackOptions
from stack.scenarios.logbook import Report
from stack.waits import ConditionTimeout, holds, seconds, until, until_async

T = TypeVar("T")


@dataclass(frozen=True)
class Scenario:
    """One failure scenario: what it proves, the stacks it needs, and its steps."""

    name: str
    number: int
    title: str
    proves: str
    run: Callable[[Context], Awaitable[None]]
    # Role -> options of each stack it needs; "main" is ctx.stack.
    stacks: dict[str, StackOptions] = field(default_factory=lambda: {"main": StackOptions()})
    deadline: float = 90  # for the steps, in timeout units (WSGW_TIMEOUT_UNIT), stacks apart


class Context:
    """What a scenario's steps get: its stacks, its report and helpers to observe them."""

    def __init__(self, scenario: Scenario, stacks: dict[str, GatewayStack], report: Report):
        self.scenario = scenario
        self.stacks = stacks
        self.report = report

    @property
    def stack(self) -> GatewayStack:
        return self.stacks["main"]

    # Report shortcuts.
    def step(self, text: str) -> None:
        self.report.step(text)

    def note(self, text: str) -> None:
        self.report.note(text)

    def figure(self, key: str, value: Any, unit: str = "") -> None:
        self.report.figure(key, value, unit)

    def check(self, what: str, ok: bool, detail: str = "") -> bool:
        return self.report.check(what, ok, detail)

    def elapsed(self) -> float:
        return self.report.elapsed()

    # ---- waiting -----------------------------------------------------------------------------
    @staticmethod
    async def blocking(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run a blocking call (Docker, HTTP) in a thread, so the clients keep running."""
        return await asyncio.to_thread(fn, *args, **kwargs)

    @staticmethod
    def background(fn: Callable[..., T], *args: Any, **kwargs: Any) -> asyncio.Task[T]:
        """Start a blocking call in a thread now; await the task for its result."""
        return asyncio.get_running_loop().create_task(asyncio.to_thread(fn, *args, **kwargs))

    async def expect(
        self,
        predicate: Callable[[], Any],
        what: str,
        within: float,
        detail: Callable[[], str] | None = None,
        poll: float = 0.1,
    ) -> float | None:
        """Check that ``predicate`` (sync or async) becomes true within ``within`` units.

        Records the check with the time it took; returns that time, or None if it did not
        hold in time (the scenario goes on, so the report shows everything that failed).
        """
        started = time.monotonic()
        try:
            await until_async(
                predicate, what, within, errors=(OSError, TimeoutError, ValueError), interval=poll
            )
        except ConditionTimeout as e:
            extra = f"; {detail()}" if detail else ""
            extra += f"; last error {e.last_error}" if e.last_error else ""
            self.check(what, False, f"not within {seconds(within):.0f} s{extra}")
            return None
        took = time.monotonic() - started
        extra = f", {detail()}" if detail else ""
        self.check(what, True, f"after {took:.2f} s{extra}")
        return took

    async def holds_for(
        self, predicate: Callable[[], Any], what: str, duration: float, poll: float = 0.1
    ) -> bool:
        """Check that ``predicate`` stays true for ``duration`` s (something must NOT happen)."""
        broke = await holds(predicate, duration, poll)
        if broke is not None:
            return self.check(what, False, f"broke after {broke:.2f} s")
        return self.check(what, True, f"for {duration:.1f} s")

    # ---- observing the server -----------------------------------------------------------------
    async def metrics(
        self, stack: GatewayStack | None = None, inside: bool = False
    ) -> prometheus.Samples:
        """The server's /metrics, parsed.

        Asked from inside the server container (``inside`` is accepted and changes
        nothing), which works even when the server is cut off the network.
        """
        text = await self.blocking(_metrics_text, stack or self.stack, inside)
        return prometheus.parse(text)

    async def gauge(self, stack: GatewayStack | None = None, inside: bool = False) -> float:
        """The server's active-connection gauge (``ws_connections_active``)."""
        return (await self.metrics(stack, inside)).value("ws_connections_active")

    async def gauge_is(self, value: int, inside: bool = False) -> bool:
        """Whether the server's active-connection gauge reads ``value`` now."""
        return await self.gauge(inside=inside) == value

    async def server_events(
        self, stack: GatewayStack | None = None, event: str | None = None
    ) -> list[dict[str, Any]]:
        """The server's JSON log lines up to now, optionally only those of one ``event``.

        The server writes its lines together, up to 50 ms after their events, so a read of
        its log right after something happened can miss it. First a request the server
        logs (a 404 for a path of this read's own), then the log is read until that line
        is in it: a process writes its lines in order, so all it logged before are there
        too. A server that no longer answers has stopped: it wrote its lines as it exited.
        """
        target = stack or self.stack
        marker = f"/log-read-{uuid.uuid4().hex[:12]}"
        try:
            await self.blocking(target.server_get, marker)
        except OSError:
            return await self.blocking(target.server.events, event)
        logged = await self.blocking(
            until,
            target.server.events,
            "the server's log up to now",
            10,
            lambda events: any(e.get("path") == marker for e in events),
        )
        return [e for e in logged if event is None or e.get("event") == event]


def _metrics_text(stack: GatewayStack, inside: bool = False) -> str:
    # Always asked inside the server container (``inside`` is kept for callers): the test
    # process may not reach the server's address, and this works while it is cut off.
    status, _, body = stack.server_get("/metrics")
    if status != 200:
        raise OSError(f"/metrics answered {status}")
    return body.decode()


async def execute(scenario: Scenario, stacks: dict[str, GatewayStack], report: Report) -> Report:
    """Run ``scenario`` on started ``stacks`` within its deadline; the report has the verdict."""
    ctx = Context(scenario, stacks, report)
    report.note(f"stacks: {', '.join(f'{role}={s.name}' for role, s in stacks.items())}")
    try:
        async with asyncio.timeout(seconds(scenario.deadline)) as deadline:
            await scenario.run(ctx)
    except TimeoutError as e:
        if deadline.expired():
            report.check(
                f"scenario finished within its deadline of {seconds(scenario.deadline):.0f} s",
                False,
                "deadline passed",
            )
        else:
            report.error("scenario ran without an unexpected error", e)
    except Exception as e:
        report.error("scenario ran without an unexpected error", e)
    return report


def run(scenario: Scenario, stacks: dict[str, GatewayStack], report: Report) -> Report:
    """Synchronous :func:`execute` (pytest and the CLI call this)."""
    return asyncio.run(execute(scenario, stacks, report))
