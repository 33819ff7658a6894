"""Bad peers: each error closes only its own connection, with the right code, logged once."""

from __future__ import annotations

import asyncio

import pytest
from websockets.asyncio.client import connect

from server.app import Gateway

from .conftest import LogEvents
from .helpers import OP_BINARY, OP_CLOSE, OP_TEXT, RawClient, units, wait_until

pytestmark = pytest.mark.unit


async def closed_events(log_events: LogEvents, count: int) -> list[dict]:
    return await wait_until(
        lambda: len(log_events("connection_closed")) >= count and log_events("connection_closed"),
        what=f"{count} connection_closed events",
    )


async def assert_still_echoing(ws) -> None:
    await ws.send("still echoing")
    async with asyncio.timeout(units(5)):
        assert await ws.recv() == "still echoing"


@pytest.mark.parametrize(
    ("frame", "error"),
    [
        ({"opcode": OP_TEXT, "payload": b"hi", "rsv": 0b100}, "reserved bits"),
        ({"opcode": 0x3, "payload": b"hi"}, "invalid opcode"),
        ({"opcode": OP_BINARY, "payload": b"hi", "mask": False}, "incorrect masking"),
        ({"opcode": 0x9, "payload": b"p" * 126}, "control frame too long"),
    ],
    ids=["reserved-bits", "invalid-opcode", "unmasked", "long-ping"],
)
async def test_malformed_frame_closes_with_1002_while_others_echo(
    gateway: Gateway, log_events: LogEvents, frame, error
):
    """A malformed frame gets a 1002 close frame; a second client keeps echoing."""
    async with connect(gateway.url) as bystander:
        raw = await RawClient.connect(gateway.port)
        try:
            await raw.send_frame(**frame)
            code, reason = await raw.read_close()
        finally:
            await raw.close()
        assert code == 1002
        assert error in reason
        await assert_still_echoing(bystander)
    (normal, malformed) = sorted(await closed_events(log_events, 2), key=lambda e: e["code"])
    assert (normal["code"], malformed["code"]) == (1000, 1002)
    assert malformed["level"] == "WARNING"
    assert "ProtocolError" in malformed["error"]
    assert len(log_events.caplog.records) == len(log_events())  # no stray library lines
    assert gateway.metrics.errors == {"protocol_error": 1}


async def test_invalid_utf8_text_closes_with_1007(gateway: Gateway, log_events: LogEvents):
    """A text message that is not UTF-8 gets 1007, logged once as a warning."""
    async with connect(gateway.url) as bystander:
        raw = await RawClient.connect(gateway.port)
        try:
            await raw.send_frame(OP_TEXT, b"ok \xff\xfe not utf-8")
            code, _reason = await raw.read_close()
        finally:
            await raw.close()
        assert code == 1007
        await assert_still_echoing(bystander)
    await closed_events(log_events, 2)
    closed = log_events.one("connection_closed", code=1007)
    assert closed["level"] == "WARNING"
    assert "UnicodeDecodeError" in closed["error"]
    assert gateway.metrics.errors == {"invalid_data": 1}


async def test_client_gone_without_close_frame_is_1006(gateway: Gateway, log_events: LogEvents):
    """A client that drops TCP without a close frame is logged once as 1006, a warning."""
    raw = await RawClient.connect(gateway.port)
    await raw.send_frame(OP_TEXT, b"bye")
    assert (await raw.read_frame())[2] == b"bye"
    await raw.close()
    (closed,) = await closed_events(log_events, 1)
    assert (closed["code"], closed["closed_by"], closed["level"]) == (1006, "network", "WARNING")
    assert (closed["msgs_in"], closed["msgs_out"], closed["bytes_in"]) == (1, 1, 3)
    await wait_until(lambda: gateway.metrics.connections_active == 0)
    assert gateway.metrics.closes == {1006: 1}
    assert gateway.metrics.errors == {"abnormal_closure": 1}


async def test_client_close_codes_are_reported_not_counted_as_errors(
    gateway: Gateway, log_events: LogEvents
):
    """A client closing with its own code is logged with it and is not a server error."""
    raw = await RawClient.connect(gateway.port)
    try:
        await raw.send_frame(OP_CLOSE, (4000).to_bytes(2, "big") + b"app says bye")
        assert await raw.read_close() == (4000, "app says bye")
    finally:
        await raw.close()
    (closed,) = await closed_events(log_events, 1)
    assert (closed["code"], closed["reason"], closed["closed_by"]) == (
        4000,
        "app says bye",
        "client",
    )
    assert gateway.metrics.errors == {}


async def test_handler_bug_closes_1011_and_server_keeps_serving(
    gateway: Gateway, log_events: LogEvents, monkeypatch: pytest.MonkeyPatch
):
    """An unexpected exception in the echo loop ends that connection (1011), nothing else."""

    def broken(message):
        raise RuntimeError("boom")

    async with connect(gateway.url) as bystander:
        monkeypatch.setattr("server.echo.preview", broken)  # called only for logged messages
        async with connect(gateway.url) as ws:
            await ws.send("trigger")
            async with asyncio.timeout(units(5)):
                await ws.wait_closed()
            assert ws.close_code == 1011
        monkeypatch.undo()
        await assert_still_echoing(bystander)
    error = log_events.one("connection_error")
    assert error["level"] == "ERROR" and error["error"] == "RuntimeError: boom"
    assert gateway.metrics.errors == {"internal_error": 1}
    await wait_until(lambda: gateway.metrics.connections_active == 0)


def test_describe_names_the_root_of_an_exception_group():
    """A broadcast failure (ExceptionGroup) is logged as the write error that caused it."""
    from server.connection import describe

    try:
        raise OSError("broken pipe")
    except OSError as cause:
        failed = RuntimeError("failed to write message")
        failed.__cause__ = cause
    assert describe(ExceptionGroup("skipped broadcast", [failed])) == "OSError: broken pipe"
    assert describe(ValueError("x")) == "ValueError: x"
