"""The harness's reconnecting client against the real gateway, in-process: a restart or a
dropped connection mid-stream loses nothing, because what was in flight is resent."""

from __future__ import annotations

from server.app import Gateway
from stack.echo_client.reconnecting import ReconnectingClient

from .helpers import make_config, running_gateway


async def _echo_on_a_new_gateway(client: ReconnectingClient, port: int) -> None:
    """Start a gateway on ``port``, wait for 50 echoes on a new connection, stop the client."""
    async with running_gateway(WS_PORT=str(port)):
        await client.wait_until(
            lambda c: len(c.sessions) >= 2 and c.current.echoed >= 50,
            "50 echoes after the restart",
            10,
        )
        await client.stop()  # while the second gateway still runs


def _nothing_lost(client: ReconnectingClient) -> dict[str, int]:
    summary = client.ledger.summary()
    assert summary["failed"] == summary["pending"] == summary["corrupted"] == 0, summary
    assert summary["stray"] == summary["lost_at_stop"] == 0, summary
    assert summary["echoed"] == summary["sent"], summary
    return summary


async def test_an_aborted_connection_resends_what_was_in_flight() -> None:
    """The client's TCP connection aborted with messages in flight: all resent, all echoed."""
    async with running_gateway() as gateway:
        client = ReconnectingClient(gateway.url, name="ab", interval=0.001, window=8)
        client.start()
        try:
            for round_ in range(3):
                # No await between the check and the abort: messages are in flight.
                await client.wait_until(
                    lambda c, n=round_: len(c.sessions) == n + 1 and c.ledger.pending >= 1,
                    "messages in flight",
                    5,
                )
                in_flight = client.ledger.pending
                client.ws.transport.abort()
                await client.wait_until(
                    lambda c, n=round_: len(c.sessions) == n + 2 and c.current.echoed >= 5,
                    "echoes on the next connection",
                    5,
                )
                assert client.sessions[-1].resent >= in_flight
        finally:
            await client.stop()
    summary = _nothing_lost(client)
    assert summary["resent"] >= 3


async def test_a_gateway_restart_mid_stream_loses_nothing() -> None:
    """The gateway drains (1001) and a new one starts on the same port: no message lost."""
    first = Gateway(make_config())
    await first.start()
    port = first.port
    client = ReconnectingClient(
        first.url, name="rst", interval=0.002, window=8, backoff_initial=0.02
    )
    client.start()
    try:
        await client.wait_until(lambda c: c.ledger.echoed >= 50, "50 echoes", 5)
        await first.shutdown()
        await _echo_on_a_new_gateway(client, port)
    finally:
        await client.stop()
        await first.shutdown()
    assert client.sessions[0].code == 1001 and client.sessions[0].closed_by == "server"
    assert len(client.sessions) == 2
    _nothing_lost(client)


async def test_a_gateway_that_drops_every_connection_loses_nothing() -> None:
    """A forced stop (every TCP connection aborted, 1006): what was in flight is resent."""
    first = Gateway(make_config())
    await first.start()
    port = first.port
    client = ReconnectingClient(first.url, name="kil", interval=0.001, window=8)
    client.start()
    try:
        await client.wait_until(
            lambda c: c.ledger.echoed >= 50 and c.ledger.pending >= 1, "in flight", 5
        )
        first.request_stop("test")
        first.request_stop("test", force_if_repeated=True)  # drops every connection now
        await first.shutdown()
        await _echo_on_a_new_gateway(client, port)
    finally:
        await client.stop()
        await first.shutdown()
    assert client.sessions[0].code == 1006
    assert [s.closed_by for s in client.sessions] == ["network", "client"]
    _nothing_lost(client)
