"""One connection's message lines are bounded (WS_LOG_MESSAGES_PER_SECOND); others' are not."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest
from websockets.asyncio.client import connect

from server.logs import MessageLogBudget

from .helpers import ServerProcess, http_request, metric, units, wait_until

pytestmark = pytest.mark.unit

FLOOD = 50_000  # one-byte messages, as in the review: 7.3 MB of log and 8,126 lines lost
OTHER = 50  # messages of a client that behaves


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_over_the_rate_lines_are_counted_into_one_summary_per_second(caplog):
    """At 10/s: 10 lines pass at once, the next 90 become one summary line a second later."""
    clock, written = Clock(), []
    log = logging.getLogger("server.app")
    budget = MessageLogBudget(lambda *line: written.append(line), log, "c1", 10, clock)
    caplog.set_level(logging.INFO, "server.app")
    for seq in range(1, 101):
        budget("message_echoed", "c1", seq, "binary", 3, "00")
    assert [line[2] for line in written] == list(range(1, 11))
    assert not caplog.records, "no summary before a second has passed"
    clock.now += 1.0
    budget("message_echoed", "c1", 101, "binary", 3, "00")
    (summary,) = [r.fields for r in caplog.records if r.msg == "message_logs_suppressed"]
    assert summary == {
        "conn": "c1",
        "messages": 90,
        "bytes": 270,
        "first_seq": 11,
        "last_seq": 100,
        "limit_per_second": 10,
    }
    assert written[-1][2] == 101, "the bucket refilled: message lines resume"
    budget.close()
    assert len(caplog.records) == 1, "nothing suppressed since: no second summary"


def test_the_summary_of_a_connection_that_ends_suppressed_is_written_at_close(caplog):
    """What is still suppressed when the connection ends is told by close()."""
    written: list[tuple] = []
    caplog.set_level(logging.INFO, "server.app")
    budget = MessageLogBudget(
        lambda *line: written.append(line), logging.getLogger("server.app"), "c1", 1, Clock()
    )
    for seq in range(1, 6):
        budget("message_echoed", "c1", seq, "text", 1, "x")
    budget.close()
    assert len(written) == 1
    (summary,) = [r.fields for r in caplog.records]
    assert (summary["messages"], summary["first_seq"], summary["last_seq"]) == (4, 2, 5)


def test_rate_zero_logs_every_message():
    """WS_LOG_MESSAGES_PER_SECOND=0 lifts the bound: every message line is written."""
    written: list[tuple] = []
    budget = MessageLogBudget(
        lambda *line: written.append(line), logging.getLogger("x"), "c1", 0, Clock()
    )
    for seq in range(1000):
        budget("message_echoed", "c1", seq, "text", 1, "x")
    assert len(written) == 1000


async def test_a_flooder_cannot_push_another_clients_lines_out_of_the_log():
    """50,000 messages on one connection: its lines are bounded, another client's all arrive."""
    server = await ServerProcess.start()  # the defaults: WS_LOG_MESSAGES on, 100 lines/s
    try:
        url = f"ws://127.0.0.1:{server.port}/ws"
        started = time.monotonic()

        async def flood() -> None:
            async with connect(url, max_queue=None) as ws:
                for _ in range(FLOOD):
                    await ws.send(b"x")
                for _ in range(FLOOD):
                    assert await ws.recv() == b"x"

        async def behave() -> None:
            async with connect(url) as ws:
                for i in range(OTHER):
                    await ws.send(f"other-{i}")
                    assert await ws.recv() == f"other-{i}"
                    await asyncio.sleep(0)  # interleave with the flood, not before it

        async with asyncio.timeout(units(60)):
            await asyncio.gather(flood(), behave())
        elapsed = time.monotonic() - started
        await wait_until(
            lambda: len(server.events("connection_closed")) == 2, units(10), "both closes logged"
        )
        _, _, body = await http_request(server.port, "/metrics")
        assert metric(body.decode(), "ws_log_lines_dropped_total") == 0

        echoed = server.events("message_echoed") + server.events("message_received")
        by_type = {"text": [], "binary": []}
        for line in echoed:
            by_type[line["type"]].append(line)
        # The other client: every message, in order, one line each.
        assert [line["preview"] for line in by_type["text"]] == [f"other-{i}" for i in range(OTHER)]
        # The flooder: a burst of 100, then 100 a second; the rest counted, not lost.
        flooded = by_type["binary"]
        assert len(flooded) <= 100 + 100 * elapsed + 1, (len(flooded), elapsed)
        summaries = server.events("message_logs_suppressed")
        assert summaries and len(summaries) <= elapsed + 2, (len(summaries), elapsed)
        assert {s["conn"] for s in summaries} == {flooded[0]["conn"]}
        assert len(flooded) + sum(s["messages"] for s in summaries) == FLOOD
        assert sum(s["bytes"] for s in summaries) == FLOOD - len(flooded)
    finally:
        await server.kill()
