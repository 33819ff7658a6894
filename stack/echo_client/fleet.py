"""Many reconnecting clients started, watched and stopped together."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from typing import Any

from stack.echo_client.ledger import Message, Outcome
from stack.echo_client.reconnecting import HandshakeFailure, ReconnectingClient, Session
from stack.waits import until_async


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
        """Wait until ``predicate(self)`` holds, ``within`` units; else ConditionTimeout
        naming ``what``. An exception from ``predicate`` propagates at once."""
        await until_async(lambda: predicate(self), what, within, errors=(), interval=0.05)
