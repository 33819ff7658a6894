"""A reconnecting WebSocket client that accounts for every message it sends.

It is what the failure scenarios use to prove that nothing is lost silently, and an
example of how an application should talk to the gateway:

    client = ReconnectingClient("ws://127.0.0.1:8080/ws", name="demo")
    client.start()                                   # connects, echoes, reconnects
    await client.wait_until(lambda c: c.ledger.echoed >= 10, "10 echoes", within=10)
    await client.stop()                              # waits for in-flight echoes, closes
    print(client.ledger.summary())   # {'sent': 12, 'echoed': 12, 'resent': 0, ...}

Reconnecting: when the connection breaks (or a handshake fails: 502, 429, refused), the
client tries again with exponential backoff and full jitter (tenacity's
``wait_random_exponential``), so a crowd of clients cut off at once does not come back in
lock-step.

Accounting: every message is in the client's :class:`~stack.echo_client.ledger.Ledger`
(pending, echoed, corrupted or failed with its reason).

Resending: when a connection breaks, the client does not know whether the server got the
messages still in flight, so after it reconnects it sends each of them again, oldest
first, before anything new (at-least-once: an echo server may see a message twice, the
sender never misses one).

After :meth:`ReconnectingClient.stop` nothing is pending: messages whose echo did not come
back even though the connection stayed up are failed with ``lost_at_stop`` set, which is
exactly what a scenario must never see.

Protocol timeouts (``echo_timeout``, ``open_timeout``, ...) are seconds; waits on a
condition (``wait_until``, ``stop``'s drain) are timeout units of :mod:`stack.waits`.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass

from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    wait_random_exponential,
)
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from stack import waits
from stack.echo_client.ledger import Ledger

# What a failed connection attempt may raise: refused, reset, timed out, a non-101 answer.
RETRYABLE = (OSError, TimeoutError, EOFError, InvalidHandshake)


@dataclass
class Session:
    """One WebSocket connection of the client, from its handshake to its close."""

    number: int
    opened_at: float
    request_id: str
    closed_at: float | None = None
    code: int | None = None  # close code as the client saw it (1006: no close frame)
    reason: str = ""
    closed_by: str = ""  # "server" (its close frame came first), "client", "network"
    note: str = ""  # why the client gave up on it, when it did (e.g. echo timeout)
    sent: int = 0  # frames sent on this connection, resends included
    resent: int = 0
    echoed: int = 0

    @property
    def open(self) -> bool:
        return self.closed_at is None


@dataclass
class HandshakeFailure:
    """A connection attempt that did not end in an open WebSocket."""

    at: float
    error: str
    status: int | None = None  # HTTP status when the answer was not 101 (429, 502, 503)


class ReconnectingClient:
    """An echo client that reconnects with backoff and keeps a :class:`Ledger`.

    ``url`` is a string or a callable returning the URL to use for the next attempt.
    While connected it sends a message every ``interval`` seconds with at most ``window``
    in flight (``send=False``: it only holds the connection). A message without its echo
    after ``echo_timeout`` seconds means the path is dead: the client drops the connection
    and reconnects. Messages in flight when a connection breaks are sent again on the next
    one (``resend``); one whose connection broke more than ``max_resends`` times is failed
    (with ``resend=False``: at the first break). ``ping_interval``/``ping_timeout`` are the
    websockets keepalive (off by default: the gateway's server pings).
    """

    def __init__(
        self,
        url: str | Callable[[], str],
        *,
        name: str = "client",
        send: bool = True,
        interval: float = 0.05,
        window: int = 4,
        size: int = 32,
        echo_timeout: float | None = 5.0,
        resend: bool = True,
        max_resends: int = 3,
        open_timeout: float = 5.0,
        close_timeout: float = 2.0,
        ping_interval: float | None = None,
        ping_timeout: float | None = None,
        backoff_initial: float = 0.1,
        backoff_max: float = 2.0,
        headers: dict[str, str] | None = None,
        max_runtime: float = 900.0,
    ) -> None:
        self._url = url
        self.name = name
        self.send = send
        self.interval = interval
        self.window = window
        self.size = size
        self.echo_timeout = echo_timeout
        self.resend = resend
        self.max_resends = max_resends
        self.open_timeout = open_timeout
        self.close_timeout = close_timeout
        self.ping_interval = ping_interval
        self.ping_timeout = ping_timeout
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.headers = dict(headers or {})
        # A bound of its own: whoever forgets stop(), the client gives up after this long.
        self.max_runtime = max_runtime
        self.ledger = Ledger(name)
        self.sessions: list[Session] = []
        self.handshake_failures: list[HandshakeFailure] = []
        self.attempts = 0
        self.ws: ClientConnection | None = None
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._connecting = False
        self._drain_timeout = 5.0

    # ---- lifecycle ---------------------------------------------------------------------------
    def start(self) -> asyncio.Task[None]:
        """Start connecting and echoing in the background."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(
                self._run(), name=f"client {self.name}"
            )
        return self._task

    async def stop(self, drain_timeout: float = 5.0) -> None:
        """Stop sending, wait up to ``drain_timeout`` units for in-flight echoes, close (1000)."""
        self._drain_timeout = drain_timeout
        self._stopping.set()
        if self._task is None:
            return
        if self._connecting:  # between connections: nothing in flight, stop at once
            self._task.cancel()
        bound = waits.seconds(drain_timeout) + self.close_timeout + 5
        await asyncio.wait([self._task], timeout=bound)
        if not self._task.done():
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        self._finish(time.time())

    async def __aenter__(self) -> ReconnectingClient:
        self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # ---- state -------------------------------------------------------------------------------
    @property
    def url(self) -> str:
        return self._url() if callable(self._url) else self._url

    @property
    def connected(self) -> bool:
        return bool(self.sessions) and self.sessions[-1].open

    @property
    def current(self) -> Session | None:
        return self.sessions[-1] if self.sessions else None

    def closed_sessions(self) -> list[Session]:
        return [s for s in self.sessions if not s.open]

    async def wait_until(
        self, predicate: Callable[[ReconnectingClient], bool], what: str, within: float
    ) -> None:
        """Wait until ``predicate(self)`` holds, ``within`` units; else ConditionTimeout
        naming ``what``. An exception from ``predicate`` propagates at once."""
        await waits.until_async(
            lambda: predicate(self), f"{self.name}: {what}", within, errors=(), interval=0.02
        )

    # ---- the connection loop -----------------------------------------------------------------
    async def _run(self) -> None:
        try:
            async with asyncio.timeout(self.max_runtime):
                await self._reconnect_until_stopped()
        except TimeoutError:
            self._stopping.set()
        finally:
            self._connecting = False

    async def _reconnect_until_stopped(self) -> None:
        while not self._stopping.is_set():
            ws = await self._connect()
            if ws is None:
                break
            await self._session(ws)
            if not self._stopping.is_set():
                # Jitter even the first retry, so clients cut off together spread out.
                await self._pause(random.uniform(0, self.backoff_initial))

    async def _connect(self) -> ClientConnection | None:
        """Open a connection, retrying with exponential backoff and full jitter."""
        self._connecting = True
        retrying = AsyncRetrying(
            wait=wait_random_exponential(multiplier=self.backoff_initial, max=self.backoff_max),
            retry=retry_if_exception_type(RETRYABLE),
            before_sleep=self._note_failure,
            sleep=self._pause,
            reraise=True,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    if self._stopping.is_set():
                        return None
                    self.attempts += 1
                    request_id = f"{self.name}-{self.attempts}"
                    ws = await connect(
                        self.url,
                        additional_headers={**self.headers, "X-Request-ID": request_id},
                        proxy=None,
                        compression=None,
                        open_timeout=self.open_timeout,
                        close_timeout=self.close_timeout,
                        ping_interval=self.ping_interval,
                        ping_timeout=self.ping_timeout,
                    )
                    self._connecting = False
                    self.sessions.append(Session(len(self.sessions) + 1, time.time(), request_id))
                    return ws
        finally:
            self._connecting = False
        return None  # pragma: no cover - the loop returns or raises

    def _note_failure(self, state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        status = exc.response.status_code if isinstance(exc, InvalidStatus) else None
        self.handshake_failures.append(
            HandshakeFailure(time.time(), f"{type(exc).__name__}: {exc}", status)
        )

    async def _pause(self, seconds: float) -> None:
        """Sleep between attempts, but wake up at once when the client is stopped."""
        with suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)

    async def _session(self, ws: ClientConnection) -> None:
        session = self.sessions[-1]
        self.ws = ws
        loop = asyncio.get_running_loop()
        reader = loop.create_task(self._read(ws, session))
        writer = loop.create_task(self._write(ws, session))
        stopping = loop.create_task(self._stopping.wait())
        try:
            await asyncio.wait({reader, stopping}, return_when=asyncio.FIRST_COMPLETED)
            if not reader.done():  # stopping: let in-flight echoes come back, then close
                await writer
                with suppress(waits.ConditionTimeout):
                    await self.wait_until(
                        lambda c: c.ledger.pending == 0 or reader.done(),
                        "in-flight echoes",
                        self._drain_timeout,
                    )
                await ws.close(1000, "client stopping")
                await reader
        finally:
            for task in (writer, stopping, reader):
                task.cancel()
            await asyncio.gather(writer, stopping, reader, return_exceptions=True)
            if ws.state.name != "CLOSED":
                ws.transport.abort()
            self._end(ws, session)
            self.ws = None

    def _end(self, ws: ClientConnection, session: Session) -> None:
        now = time.time()
        protocol = ws.protocol
        rcvd, sent = protocol.close_rcvd, protocol.close_sent
        if rcvd is not None and (sent is None or protocol.close_rcvd_then_sent):
            session.code, session.reason, session.closed_by = rcvd.code, rcvd.reason, "server"
        elif sent is not None:
            session.code, session.reason, session.closed_by = sent.code, sent.reason, "client"
        else:
            session.code, session.closed_by = 1006, "network"
        session.closed_at = now
        stopped = self._stopping.is_set() and session.closed_by == "client" and not session.note
        if stopped:
            reason = f"no echo before the client stopped (session {session.number})"
            self.ledger.fail_pending(reason, now, lost_at_stop=True)
            return
        what = session.note or f"close {session.code} by {session.closed_by}"
        # The rest stay pending: the next connection sends them again.
        give_up_at = 1 + self.max_resends if self.resend else 0
        reason = (
            "connection broke before its echo, sent {sends} time(s):"
            f" {what} (session {session.number})"
        )
        self.ledger.fail_pending(reason, now, min_sends=give_up_at)

    async def _read(self, ws: ClientConnection, session: Session) -> None:
        try:
            async for echo in ws:
                if self.ledger.settle(echo, time.time()) is not None:
                    session.echoed += 1
        except ConnectionClosed:
            pass

    async def _write(self, ws: ClientConnection, session: Session) -> None:
        try:
            # What the last connection left without an echo goes first, oldest first.
            for message in self.ledger.pending_messages():
                await ws.send(message.text)
                self.ledger.resend(message, time.time())
                session.sent += 1
                session.resent += 1
            while not self._stopping.is_set():
                oldest = self.ledger.oldest_pending()
                now = time.time()
                if (
                    self.echo_timeout is not None
                    and oldest is not None
                    and now - oldest.last_sent_at > self.echo_timeout
                ):
                    # The path is dead (a cut network, a frozen peer): don't wait for TCP.
                    session.note = f"no echo within {self.echo_timeout:g} s"
                    ws.transport.abort()
                    return
                if self.send and self.ledger.pending < self.window:
                    message = self.ledger.new(session.number, self.size, now)
                    session.sent += 1
                    await ws.send(message.text)
                await asyncio.sleep(self.interval)  # pacing of the send loop
        except ConnectionClosed:
            pass

    def _finish(self, now: float) -> None:
        """After stop: nothing may stay pending (a session may have been cancelled)."""
        self.ledger.fail_pending("client stopped before it could resend it", now)
