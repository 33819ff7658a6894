"""The gateway: accept WebSocket connections, echo every message (or hand each connection to
the application's handler, WS_HANDLER), shut down gracefully.

In-process use (tests, embedding)::

    gateway = Gateway(Config.from_env({"WS_PORT": "0", "WS_HOST": "127.0.0.1"}))
    await gateway.start()          # bound; gateway.url is ws://127.0.0.1:<port>/ws
    ...
    await gateway.shutdown()       # drain: 503, wait WS_DRAIN_DELAY, 1001, stop listening

or ``await run(config, stop_event)``, which serves until ``stop_event`` is set, then drains.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import platform
from typing import Any

import websockets
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.frames import CloseCode
from websockets.protocol import OPEN

from . import allocator, memory_usage
from .budget import HEADROOM, MemoryBudget
from .config import Config, load_handler
from .connection import SHUTDOWN_REASON, GatewayConnection, logger
from .echo import EchoConnection
from .guards import MemoryGuard, heartbeats
from .handler import HandlerConnection
from .http import HttpEndpoints
from .logs import log_event, message_logger
from .metrics import Metrics

# Handshakes waiting to be accepted, as NGINX's listen (``backlog=4096``). asyncio's default
# is 100: a burst of reconnects (every client after a restart, a ramp through NGINX, which
# spreads its connects over the replicas) overflowed it, and each dropped SYN cost its
# client a retransmission 1 s later. The kernel caps it at net.core.somaxconn.
LISTEN_BACKLOG = 4096


class Gateway:
    """One echo server: a websockets ``Server`` plus metrics, admission and graceful shutdown."""

    def __init__(self, config: Config, *, worker: int = 0) -> None:
        self.config = config
        self.worker = worker
        self.metrics = Metrics(
            max_connections=config.max_connections,
            memory_budget=config.memory_budget,
            worker=worker,
        )
        self.http = HttpEndpoints(config, self.metrics)
        # The application's handler (WS_HANDLER), or None for the echo.
        self.handler = load_handler(config.handler) if config.handler else None
        self.connections: set[GatewayConnection] = set()  # connections whose handler runs
        # Every accepted TCP connection until it is lost, handshake or not: the library's
        # all_connections lists only open WebSockets.
        self.sockets: set[GatewayConnection] = set()
        # Connections that stopped reading (full receive queue or write buffer): the only
        # ones that hold more than a write limit and a few frames for long.
        self.holding: set[GatewayConnection] = set()
        # Reserves what connections read against WS_MEMORY_BUDGET; sized by start(), when
        # the process's own base is known.
        self.budget = MemoryBudget(0)
        self.memory_guard = MemoryGuard(config, self.metrics, self.budget, self.holding)
        self._background: list[asyncio.Task[None]] = []  # memory watch, heartbeats
        self.server: Server | None = None
        self.log_message = message_logger(logger)
        self._address: tuple[Any, ...] | None = None
        self._stop_requested = asyncio.Event()
        self._forced = asyncio.Event()  # a repeated stop with force: no more waiting
        self._shutdown_task: asyncio.Task[None] | None = None

    # Lifecycle

    @property
    def draining(self) -> bool:
        return self.metrics.draining

    async def start(self) -> None:
        """Bind and start accepting connections."""
        config = self.config
        extra: dict[str, Any] = {"reuse_port": True} if config.workers > 1 else {}
        self.server = await serve(
            GatewayConnection.handle,  # type: ignore[arg-type]
            config.host,
            config.port,
            process_request=self.http.process_request,
            process_response=self.http.process_response,
            create_connection=functools.partial(  # type: ignore[arg-type]
                EchoConnection if self.handler is None else HandlerConnection, gateway=self
            ),
            compression="deflate" if config.compression else None,
            max_size=config.max_size,
            max_queue=config.max_queue,
            # The heartbeat is ours (server.guards.heartbeats): the library's keepalive waits
            # on a full write buffer forever, so it would never drop a peer that stopped reading.
            ping_interval=None,
            close_timeout=config.close_timeout,
            open_timeout=config.open_timeout,
            server_header=f"websocket-gateway websockets/{websockets.__version__}",
            backlog=LISTEN_BACKLOG,
            **extra,
        )
        self._address = self.server.sockets[0].getsockname()
        freed_buffers = allocator.return_freed_buffers()
        # What the process (the container, for one worker alone in it) uses before any
        # connection is not the connections' to use.
        alone = memory_usage.limited_cgroup() if config.workers == 1 else None
        base = (memory_usage.in_use(alone) or 0) + HEADROOM
        self.budget.limit = config.memory_budget // config.workers - base
        # One per-message logger for all connections (a closure each would cost 0.5 KiB),
        # built now that logging is configured.
        self.log_message = message_logger(logger)
        loop = asyncio.get_running_loop()
        self._background.append(loop.create_task(self.memory_guard.watch_memory()))
        if config.ping_interval > 0:
            self._background.append(loop.create_task(heartbeats(config, self.connections)))
        log_event(
            logger,
            logging.INFO,
            "server_started",
            url=self.url,
            pid=os.getpid(),
            worker=self.worker,
            event_loop=type(loop).__module__.split(".")[0],
            allocator=freed_buffers,
            memory_pool_bytes=self.budget.limit,
            python=platform.python_version(),
            websockets=websockets.__version__,
            config=config.summary(),
        )

    @property
    def port(self) -> int:
        """The bound TCP port (known after :meth:`start`)."""
        assert self._address is not None, "call start() first"
        return int(self._address[1])

    @property
    def url(self) -> str:
        """``ws://host:port/ws`` of the bound socket (usable by a client)."""
        assert self._address is not None, "call start() first"
        host = str(self._address[0])
        if host in ("0.0.0.0", "::"):
            host = "127.0.0.1" if host == "0.0.0.0" else "::1"
        if ":" in host:
            host = f"[{host}]"
        return f"ws://{host}:{self.port}/ws"

    def request_stop(self, reason: str = "requested", *, force_if_repeated: bool = False) -> None:
        """Ask :meth:`serve_until_stopped` to drain.

        A repeated request is ignored, unless ``force_if_repeated`` (a second Ctrl+C): then
        the connections still open are dropped at once.
        """
        if not self._stop_requested.is_set():
            log_event(logger, logging.INFO, "stop_requested", reason=reason)
            self._stop_requested.set()
        elif force_if_repeated:
            log_event(logger, logging.WARNING, "stop_forced", reason=reason)
            self._forced.set()
            self._abort_all()

    async def serve_until_stopped(self) -> None:
        """Serve until :meth:`request_stop`, then drain and return."""
        await self._stop_requested.wait()
        await self.shutdown()

    async def shutdown(self) -> None:
        """Drain and stop; idempotent; returns within ``shutdown_timeout`` whatever peers do."""
        if self._shutdown_task is None:
            self._stop_requested.set()
            self._shutdown_task = asyncio.get_running_loop().create_task(self._shutdown())
        await asyncio.shield(self._shutdown_task)

    async def _shutdown(self) -> None:
        assert self.server is not None, "call start() first"
        loop = asyncio.get_running_loop()
        started = loop.time()
        budget = self.config.shutdown_timeout
        # The drain delay comes first; the close handshakes share what is left of the budget.
        closing_from = started + self.config.drain_delay
        graceful_deadline = closing_from + (budget - self.config.drain_delay) * 0.6
        hard_deadline = started + budget * 0.9

        # 1. Not ready any more: /readyz answers 503 and new handshakes get 503, while the
        #    port stays open so probes and load balancers can see it.
        self.metrics.draining = True
        log_event(
            logger,
            logging.INFO,
            "server_draining",
            connections=sum(c.protocol.state is OPEN for c in self.connections),
            timeout_s=budget,
            drain_delay_s=self.config.drain_delay,
        )
        # 2. Only refuse, for WS_DRAIN_DELAY: a proxy that re-resolves the server's name
        #    (NGINX's `resolve`) forgets this address meanwhile. Closing connections first
        #    sent their reconnects here while the proxy still listed this address: it tried
        #    the next one after our 503, and when its address list changed in between,
        #    NGINX had "no live upstreams" and answered 502.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout_at(closing_from):
                await self._forced.wait()
        # 3. Close open connections with 1001 Going Away. A peer that has not answered by the
        #    graceful deadline is dropped by step 5, not by the library's own close timeout
        #    a moment earlier or later: which timer fired first depended on the machine.
        open_connections = [c for c in self.connections if c.protocol.state is OPEN]
        for connection in open_connections:
            connection.close_timeout = hard_deadline - loop.time()
        closing = [
            loop.create_task(c.close(CloseCode.GOING_AWAY, SHUTDOWN_REASON))
            for c in open_connections
        ]
        if closing:
            await asyncio.wait(closing, timeout=max(0.0, graceful_deadline - loop.time()))
        # 4. Stop listening; the library closes connections that opened meanwhile. Sockets
        #    that have not sent a request yet would hold the drain for open_timeout: drop
        #    them now, not earlier, so a probe sent during the drain is answered (503).
        for connection in list(self.sockets):
            if connection.request is None:
                connection.transport.abort()
        self.server.close(close_connections=True, code=CloseCode.GOING_AWAY, reason=SHUTDOWN_REASON)
        aborted = 0
        try:
            async with asyncio.timeout_at(graceful_deadline):
                await self.server.wait_closed()
        except TimeoutError:
            # 5. Peers that neither read nor answer: drop them.
            aborted = self._abort_all()
            try:
                async with asyncio.timeout_at(hard_deadline):
                    await self.server.wait_closed()
            except TimeoutError:
                log_event(
                    logger, logging.ERROR, "shutdown_incomplete", connections=len(self.connections)
                )
        for task in closing:
            task.cancel()
        for task in self._background:
            task.cancel()
        log_event(
            logger,
            logging.INFO,
            "server_stopped",
            duration_s=round(loop.time() - started, 3),
            aborted=aborted,
            connections_total=self.metrics.connections_total,
        )

    def _abort_all(self) -> int:
        """Drop every TCP connection now; return how many."""
        connections: set[ServerConnection] = set(self.connections)
        if self.server is not None:
            connections |= self.server.all_connections
        for connection in connections:
            if isinstance(connection, GatewayConnection):
                connection.drop_reason = connection.drop_reason or "shutdown_timeout"
            connection.transport.abort()
        return len(connections)


async def run(config: Config, stop: asyncio.Event, *, worker: int = 0) -> None:
    """Serve ``config`` until ``stop`` is set, then drain and return."""
    gateway = Gateway(config, worker=worker)
    await gateway.start()
    relay = asyncio.get_running_loop().create_task(stop.wait())
    relay.add_done_callback(lambda task: task.cancelled() or gateway.request_stop("stop event"))
    try:
        await gateway.serve_until_stopped()
    finally:
        relay.cancel()
