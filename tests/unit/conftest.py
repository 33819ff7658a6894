"""Fixtures of the unit tests: a running in-process gateway and its captured log events."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest

from server.app import Gateway

from .helpers import running_gateway


@pytest.fixture
async def gateway() -> AsyncIterator[Gateway]:
    """A gateway with the default configuration, on 127.0.0.1 and a free port."""
    async with running_gateway() as started:
        yield started


class LogEvents:
    """The structured log events the gateway emitted during the test (INFO and above)."""

    def __init__(self, caplog: pytest.LogCaptureFixture) -> None:
        self.caplog = caplog

    def __call__(self, event: str | None = None) -> list[dict[str, Any]]:
        found = []
        for record in self.caplog.records:
            fields = record.__dict__.get("fields")
            if fields is not None and (event is None or record.msg == event):
                found.append({"event": record.msg, "level": record.levelname, **fields})
        return found

    def one(self, event: str, **match: Any) -> dict[str, Any]:
        """The single ``event`` whose fields include ``match``."""
        found = [e for e in self(event) if all(e.get(k) == v for k, v in match.items())]
        assert len(found) == 1, f"expected one {event} {match}, got {found}"
        return found[0]


@pytest.fixture
def log_events(caplog: pytest.LogCaptureFixture) -> LogEvents:
    caplog.set_level(logging.INFO, logger="server")
    return LogEvents(caplog)
