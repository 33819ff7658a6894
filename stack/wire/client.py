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

Accounting: every message gets an id (client name and sequence number) and random text
(multi-byte UTF-8 included), and the echo is compared with what was sent, character for
character. Each message is in the ledger as

* ``pending``: sent, its echo not back yet (in flight, or waiting to be resent);
* ``echoed``: came back intact;
* ``corrupted``: came back different;
* ``failed``: given up on and reported to the sender, with the reason: its connection
  broke more than ``max_resends`` times before its echo came back (or every time, with
  ``resend=False``), or the client stopped before it could resend it.

Resending: when a connection breaks, the client does not know whether the server got the
messages still in flight, so after it reconnects it sends each of them again, oldest
first, before anything new (at-least-once: an echo server may see a message twice, the
sender never misses one). The echo carries the sequence number, so an echo of a message
that is no longer pending (a late duplicate) is recognised and counted in ``duplicates``,
never taken for a new message nor counted as lost. The summary keeps ``sent`` (distinct
messages), ``resent`` (extra sends), ``echoed``, ``duplicates`` and ``failed`` apart.

After :meth:`ReconnectingClient.stop` nothing is pending: messages whose echo did not come
back even though the connection stayed up are failed with ``lost_at_stop`` set, which is
exactly what a scenario must never see.
"""

from __future__ import annotations

import asyncio
import enum
import random
import string
import time
from collections.abc import Callable, Iterable
from contextlib import suppress
from dataclasses import dataclass
from typing import Any

from tenacity import (
    AsyncRetrying,
    RetryCallState,
    RetryError,
    retry_if_exception_type,
    retry_if_result,
    stop_after_delay,
    wait_fixed,
    wait_random_exponential,
)
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

# Characters of the random part of a message: ASCII and 2-, 3- and 4-byte UTF-8.
ALPHABET = string.ascii_letters + string.digits + "äéß€жñ中文😀🚀"

# What a failed connection attempt may raise: refused, reset, timed out, a non-101 answer.
RETRYABLE = (OSError, TimeoutError, EOFError, InvalidHandshake)


async def _poll(predicate: Callable[[], bool], what: str, within: float, every: float) -> None:
    """Check ``predicate`` every ``every`` s until it holds; TimeoutError after ``within`` s.

    The asynchronous twin of ``stack.waits.until`` (which blocks the thread, and the
    clients live on this event loop); in seconds, like every timeout of this client. An
    exception from ``predicate`` propagates at once.
    """

    async def check() -> bool:
        return predicate()

    retrying = AsyncRetrying(
        stop=stop_after_delay(within),
        wait=wait_fixed(every),
        retry=retry_if_result(lambda held: not held),
    )
    try:
        await retrying(check)
    except RetryError:
        raise TimeoutError(f"{what}: not true within {within:.0f} s") from None


class Outcome(enum.StrEnum):
    PENDING = "pending"
    ECHOED = "echoed"
    CORRUPTED = "corrupted"
    FAILED = "failed"


@dataclass
class Message:
    """One message sent, and what became of it."""

    seq: int
    session: int  # the session it was first sent on
    text: str
    sent_at: float  # first sent (epoch seconds)
    outcome: Outcome = Outcome.PENDING
    settled_at: float | None = None
    reason: str = ""
    lost_at_stop: bool = False  # no echo although the connection stayed up: lost silently
    sends: int = 1  # 1 + times resent after a reconnect
    last_sent_at: float = 0.0  # latest send; the echo timeout counts from here
    duplicates: int = 0  # echoes that came after it had settled

    def __post_init__(self) -> None:
        self.last_sent_at = self.last_sent_at or self.sent_at


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


class Ledger:
    """Every message one client sent, by sequence number, with its outcome."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.messages: dict[int, Message] = {}
        self.stray: list[str] = []  # echoes that match no message sent (must stay empty)
        self.resent = 0  # sends of a message after the first, over all messages
        self.duplicates = 0  # echoes of a message that had already settled
        self._pending: dict[int, Message] = {}  # insertion order: oldest first
        self._next_seq = 0

    def new(self, session: int, size: int, now: float) -> Message:
        """Record a message about to be sent; it is pending from now on."""
        self._next_seq += 1
        seq = self._next_seq
        body = "".join(random.choices(ALPHABET, k=size))
        message = Message(seq, session, f"{self.name}#{seq}#{body}", now)
        self.messages[seq] = message
        self._pending[seq] = message
        return message

    def resend(self, message: Message, now: float) -> None:
        """Record that a pending message goes out again (after a reconnect)."""
        message.sends += 1
        message.last_sent_at = now
        self.resent += 1

    def settle(self, echo: str | bytes, now: float) -> Message | None:
        """Match an echo to its pending message and compare it.

        None if it settles nothing: a duplicate (the echo of a message already settled,
        counted) or a stray (it names no message of this client, kept for the report).
        """
        text = echo.decode(errors="replace") if isinstance(echo, bytes) else echo
        name, _, rest = text.partition("#")
        seq_text = rest.partition("#")[0]
        seq = int(seq_text) if seq_text.isdigit() else None
        message = self._pending.pop(seq, None) if seq is not None else None
        if name == self.name and message is None and seq in self.messages:
            self.messages[seq].duplicates += 1
            self.duplicates += 1
            return None
        if name != self.name or message is None:
            self.stray.append(text[:80])
            return None
        intact = isinstance(echo, str) and echo == message.text
        message.outcome = Outcome.ECHOED if intact else Outcome.CORRUPTED
        message.settled_at = now
        if not intact:
            message.reason = f"echo differs: {text[:40]!r}..."
        return message

    def fail_pending(
        self,
        reason: str,
        now: float,
        *,
        lost_at_stop: bool = False,
        min_sends: int = 0,
    ) -> int:
        """Fail every pending message sent at least ``min_sends`` times; return how many.

        ``reason`` may name ``{sends}``, the number of times the message went out.
        """
        failed = [m for m in self._pending.values() if m.sends >= min_sends]
        for message in failed:
            del self._pending[message.seq]
            message.outcome = Outcome.FAILED
            message.settled_at = now
            message.reason = reason.format(sends=message.sends)
            message.lost_at_stop = lost_at_stop
        return len(failed)

    def oldest_pending(self) -> Message | None:
        return next(iter(self._pending.values()), None)

    def pending_messages(self) -> list[Message]:
        """The messages without their echo yet, oldest first (a copy)."""
        return list(self._pending.values())

    def count(self, outcome: Outcome) -> int:
        if outcome is Outcome.PENDING:
            return len(self._pending)
        return sum(1 for m in self.messages.values() if m.outcome is outcome)

    @property
    def sent(self) -> int:
        return len(self.messages)

    @property
    def pending(self) -> int:
        return len(self._pending)

    @property
    def echoed(self) -> int:
        return self.count(Outcome.ECHOED)

    @property
    def failed(self) -> int:
        return self.count(Outcome.FAILED)

    @property
    def corrupted(self) -> int:
        return self.count(Outcome.CORRUPTED)

    @property
    def lost_at_stop(self) -> int:
        return sum(1 for m in self.messages.values() if m.lost_at_stop)

    def summary(self) -> dict[str, int]:
        return {
            "sent": self.sent,
            "echoed": self.echoed,
            "resent": self.resent,
            "duplicates": self.duplicates,
            "failed": self.failed,
            "corrupted": self.corrupted,
            "pending": self.pending,
            "lost_at_stop": self.lost_at_stop,
            "stray": len(self.stray),
        }


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
        """Stop sending, wait up to ``drain_timeout`` s for in-flight echoes, close (1000)."""
        self._drain_timeout = drain_timeout
        self._stopping.set()
        if self._task is None:
            return
        if self._connecting:  # between connections: nothing in flight, stop at once
            self._task.cancel()
        await asyncio.wait([self._task], timeout=drain_timeout + self.close_timeout + 5)
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
        """Wait until ``predicate(self)`` holds; raise TimeoutError naming ``what``."""
        await _poll(lambda: predicate(self), f"{self.name}: {what}", within, 0.02)

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
                with suppress(TimeoutError):
                    await asyncio.wait_for(
                        self.wait_until(
                            lambda c: c.ledger.pending == 0 or reader.done(),
                            "in-flight echoes",
                            self._drain_timeout,
                        ),
                        self._drain_timeout + 1,
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


class Fleet:
    """Many clients started, watched and stopped together."""

    def __init__(self, clients: Iterable[ReconnectingClient]) -> None:
        self.clients = list(clients)

    @classmethod
    def of(
        cls, count: int, url: str | Callable[[], str], prefix: str = "c", **options: Any
    ) -> Fleet:
        return cls(
            ReconnectingClient(url, name=f"{prefix}{i:03d}", **options) for i in range(count)
        )

    def __len__(self) -> int:
        return len(self.clients)

    def start(self) -> None:
        for client in self.clients:
            client.start()

    async def stop(self, drain_timeout: float = 5.0) -> None:
        await asyncio.gather(*(c.stop(drain_timeout) for c in self.clients))

    def all_echoing(self, echoes: int = 3) -> bool:
        """Every client is connected and has had at least ``echoes`` messages echoed."""
        return all(c.connected and c.ledger.echoed >= echoes for c in self.clients)

    @property
    def connected(self) -> int:
        return sum(c.connected for c in self.clients)

    def sessions(self) -> list[Session]:
        return [s for c in self.clients for s in c.sessions]

    def handshake_failures(self) -> list[HandshakeFailure]:
        return [f for c in self.clients for f in c.handshake_failures]

    def totals(self) -> dict[str, int]:
        totals: dict[str, int] = {}
        for client in self.clients:
            for key, value in client.ledger.summary().items():
                totals[key] = totals.get(key, 0) + value
        return totals

    def failed_messages(self) -> list[Message]:
        return [
            m
            for c in self.clients
            for m in c.ledger.messages.values()
            if m.outcome is Outcome.FAILED
        ]

    async def wait_until(
        self, predicate: Callable[[Fleet], bool], what: str, within: float
    ) -> None:
        """Wait until ``predicate(self)`` holds; raise TimeoutError naming ``what``."""
        await _poll(lambda: predicate(self), what, within, 0.05)


__all__ = [
    "Fleet",
    "HandshakeFailure",
    "Ledger",
    "Message",
    "Outcome",
    "ReconnectingClient",
    "Session",
]
