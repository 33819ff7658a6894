"""The gateway's guards: the memory budget's watch (and its last resorts, shedding the
largest holders), and the heartbeat that drops peers that stopped answering."""

from __future__ import annotations

import asyncio
import gc
import logging
import math
from collections.abc import Callable

from websockets.frames import CloseCode
from websockets.protocol import OPEN

from . import memory_usage
from .budget import MemoryBudget
from .config import Config
from .connection import GatewayConnection, logger
from .logs import log_event
from .metrics import Metrics

HEARTBEAT_REASON = "keepalive ping timeout"
MEMORY_REASON = "server memory budget exceeded"
MEMORY_CHECK_INTERVAL = 0.025  # seconds between two looks at the process's memory
SHED_AT = 0.9  # from this share of the budget, close the largest holders ...
SHED_TO = 0.75  # ... until this share of it is left
# A connection that has shown it reads its echoes but has waited this long for the budget to
# reserve its next read makes room: the largest holders that stopped reading theirs are
# closed (1013). One that has not shown it (a slow reader stuck in its first message looks
# the same as a client sending its first large one) waits for room like the rest.
STARVING_AFTER = 1.0


class MemoryGuard:
    """Keeps one process within WS_MEMORY_BUDGET: the budget's bookkeeping every few
    milliseconds, and closing connections when that is not enough."""

    def __init__(
        self,
        config: Config,
        metrics: Metrics,
        budget: MemoryBudget,
        holding: set[GatewayConnection],
    ) -> None:
        self.config = config
        self.metrics = metrics
        self.budget = budget  # shared with the connections, which reserve their reads
        self.holding = holding  # the gateway's connections that stopped reading
        self._collect_garbage = False

    async def watch_memory(self) -> None:
        """Every MEMORY_CHECK_INTERVAL: give reservations back and let waiters read again
        (server.budget), and keep two last resorts.

        1. A connection that reads its echoes but has waited STARVING_AFTER for room: the
           largest holders that do not read theirs are closed with 1013 (Try Again Later)
           until it fits.
        2. What the budget cannot see (the allocator keeping freed memory, a library's
           buffers): from SHED_AT of WS_MEMORY_BUDGET in use, as the kernel counts it (the
           container's memory when it has a limit, else this process's resident memory),
           the largest holders that stopped reading are closed until SHED_TO is left.
        """
        in_use = memory_usage.MemoryInUse(memory_usage.limited_cgroup())
        loop = asyncio.get_running_loop()
        try:
            while True:
                await asyncio.sleep(MEMORY_CHECK_INTERVAL)
                self._check(loop, in_use)
        finally:
            in_use.close()

    def _check(self, loop: asyncio.AbstractEventLoop, in_use: memory_usage.MemoryInUse) -> None:
        """One look of :meth:`watch_memory`."""
        self.budget.rebalance(loop.time())
        held = {c: c.held_bytes() for c in self.holding}
        self.metrics.memory_held = sum(held.values())
        self.metrics.memory_reserved = self.budget.floors + self.budget.granted
        self.metrics.memory_waiting = len(self.budget.waiting)
        if self._collect_garbage:
            # Closed for being over the budget, the dropped connections are gone now:
            # what their cycles (handler frames, exceptions) still hold goes at once
            # rather than at some later collection. Not after a shed for a starving
            # reader: a few connections' leftovers do not pay for a full collection's
            # pause of every connection.
            gc.collect()
            self._collect_garbage = False
        starving = self.budget.starving(loop.time(), STARVING_AFTER)
        if isinstance(starving, GatewayConnection) and not starving.paused:
            short = self.budget.shortfall(starving) - self.budget.free
            self._shed(held, "starving", lambda shed, s=short: _reserved(shed) >= s, spare=starving)
        used = in_use.read() or self.metrics.memory_held
        self.metrics.memory_used = used
        if used > self.config.memory_budget * SHED_AT:
            excess = used - self.config.memory_budget * SHED_TO
            self._shed(
                held,
                "over_budget",
                lambda shed, e=excess, h=held: sum(map(h.__getitem__, shed)) >= e,
                spare=None,
            )

    def _shed(
        self,
        held: dict[GatewayConnection, int],
        why: str,
        enough: Callable[[list[GatewayConnection]], bool],
        *,
        spare: GatewayConnection | None,
    ) -> None:
        """Close the largest holders with 1013 until ``enough(those closed)``.

        To make room for ``spare``, a connection that reads its echoes: only holders that
        do not read theirs (a full write buffer), then the largest of those that have not
        shown they read theirs and wait for memory too. Else any that stopped reading.
        """
        candidates = sorted(held, key=held.__getitem__, reverse=True)
        if spare is not None:
            waiting = self.budget.waiting
            candidates = [c for c in candidates if c.paused] + [
                c for c in candidates if not c.paused and not c.reads_echoes and c in waiting
            ]
        shed: list[GatewayConnection] = []
        for connection in candidates:
            if enough(shed):
                break
            shed.append(connection)
            # Its reservation comes back at connection_lost, once its buffers are freed.
            connection.drop("memory_budget", CloseCode.TRY_AGAIN_LATER, MEMORY_REASON)
        for connection in shed:
            del held[connection]
        if shed:
            self._collect_garbage = why == "over_budget"
            log_event(
                logger,
                logging.WARNING,
                "memory_budget_exceeded",
                why=why,
                used_bytes=self.metrics.memory_used,
                held_bytes=self.metrics.memory_held,
                reserved_bytes=self.metrics.memory_reserved,
                budget_bytes=self.config.memory_budget,
                closed=len(shed),
                conns=[c.conn_id for c in shed],
                for_conn=spare.conn_id if spare is not None else None,
            )


def _reserved(connections: list[GatewayConnection]) -> int:
    """What ``connections`` have reserved against the memory budget."""
    return sum(c.floor + c.granted for c in connections)


async def heartbeats(config: Config, connections: set[GatewayConnection]) -> None:
    """Ping each open connection ``ping_interval`` after its last pong (or its opening);
    drop it if no pong comes within ``ping_timeout``.

    One task looks at every connection a few times per interval or timeout, whichever is
    shorter, instead of a task (and its timer and frames) per connection: about 1 KiB
    less per idle connection. Pings and drops come up to a quarter of that late.
    """
    tick = min(config.ping_interval, config.ping_timeout) / 4
    loop = asyncio.get_running_loop()
    while True:
        await asyncio.sleep(tick)
        now = loop.time()
        for ws in tuple(connections):
            if now >= ws.pong_due:
                ws.pong_due = math.inf
                ws.drop("heartbeat_timeout", CloseCode.INTERNAL_ERROR, HEARTBEAT_REASON)
            elif now >= ws.ping_due and ws.protocol.state is OPEN:
                ws.ping_for_heartbeat(now)
