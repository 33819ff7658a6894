"""WS_HANDLER: an application's handler, written for websockets' serve(), runs unchanged
behind the gateway, and every guarantee of the gateway holds around it."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosedError, InvalidStatus

from server.config import SETTINGS, Config, ConfigError, load_handler
from stack.ports import free_port

from .conftest import LogEvents
from .helpers import (
    FRAME_PAYLOAD,
    ROOT,
    Flood,
    RawClient,
    ServerProcess,
    flood_until_closed,
    http_request,
    run_server_command,
    running_gateway,
    server_command,
    server_connection,
    server_env,
    units,
    wait_until,
)

pytestmark = pytest.mark.unit

HANDLERS = "tests.unit.handlers"


async def test_handler_runs_unchanged_and_sees_its_request():
    """The handler gets the connection serve() would give it, request path and headers too."""
    async with (
        running_gateway(WS_HANDLER=f"{HANDLERS}:shout") as gw,
        connect(gw.url, additional_headers={"X-Test": "yes"}) as ws,
    ):
        hello = json.loads(await ws.recv())
        assert (hello["path"], hello["x-test"]) == ("/ws", "yes")
        await ws.send("hello")
        assert await ws.recv() == "HELLO"
        await ws.send(b"abc")
        assert await ws.recv() == b"cba"


async def test_handler_messages_are_counted_and_logged(log_events: LogEvents):
    """What the handler receives and sends through its connection is counted and logged."""
    async with running_gateway(WS_HANDLER=f"{HANDLERS}:shout") as gw:
        async with connect(gw.url) as ws:
            await ws.recv()
            await ws.send("abc")
            assert await ws.recv() == "ABC"
        await wait_until(lambda: log_events("connection_closed"), what="connection_closed")
        m = gw.metrics
        assert (m.text.msgs_in, m.text.bytes_in, m.text.msgs_out) == (1, 3, 2)
    received = log_events.one("message_received")
    assert (received["seq"], received["type"], received["size"]) == (1, "text", 3)
    assert [e["seq"] for e in log_events("message_sent")] == [1, 2]
    closed = log_events.one("connection_closed")
    assert (closed["code"], closed["msgs_in"], closed["msgs_out"]) == (1000, 1, 2)
    log_events.one("connection_open")


async def test_oversized_message_closes_with_1009_before_the_handler_sees_it():
    """WS_MAX_MESSAGE_BYTES holds around a handler: one byte more closes with 1009."""
    async with (
        running_gateway(WS_HANDLER=f"{HANDLERS}:fail_on_boom", WS_MAX_MESSAGE_BYTES="100") as gw,
        connect(gw.url) as ws,
    ):
        await ws.send("x" * 100)
        assert await ws.recv() == "x" * 100
        await ws.send("x" * 101)
        with pytest.raises(ConnectionClosedError) as raised:
            async with asyncio.timeout(units(5)):
                await ws.recv()
        assert raised.value.rcvd is not None and raised.value.rcvd.code == 1009
        assert gw.metrics.text.msgs_in == 1


async def test_handler_exception_closes_that_connection_with_1011_logged_once(
    log_events: LogEvents, caplog: pytest.LogCaptureFixture
):
    """A bug in the handler: 1011 for that connection, one ERROR line with the traceback,
    and the other connections go on."""
    async with (
        running_gateway(WS_HANDLER=f"{HANDLERS}:fail_on_boom") as gw,
        connect(gw.url) as other,
        connect(gw.url) as ws,
    ):
        await ws.send("boom")
        with pytest.raises(ConnectionClosedError) as raised:
            async with asyncio.timeout(units(5)):
                await ws.recv()
        assert raised.value.rcvd is not None
        assert (raised.value.rcvd.code, raised.value.rcvd.reason) == (1011, "internal error")
        await other.send("still here")
        assert await other.recv() == "still here"
        assert gw.metrics.errors == {"internal_error": 1}
    error = log_events.one("connection_error")
    assert error["level"] == "ERROR"
    assert error["error"] == "RuntimeError: the handler broke on purpose"
    assert "in fail_on_boom" in error["traceback"]
    assert error["traceback"].endswith("RuntimeError: the handler broke on purpose")
    tracebacks = [r for r in caplog.records if r.exc_info or "Traceback" in r.getMessage()]
    assert tracebacks == []  # not logged a second time (by websockets' own logger)


async def test_handler_that_returns_closes_with_1000():
    """When the handler returns, the connection is closed normally, as serve() does."""
    async with running_gateway(WS_HANDLER=f"{HANDLERS}:one_answer") as gw, connect(gw.url) as ws:
        await ws.send("x")
        assert await ws.recv() == "only x"
        async with asyncio.timeout(units(5)):
            await ws.wait_closed()
        assert ws.close_code == 1000
    assert gw.metrics.closes == {1000: 1}


async def test_rate_limit_applies_to_what_the_handler_receives(log_events: LogEvents):
    """Over WS_MAX_MESSAGES_PER_SECOND the handler's connection is closed with 1008."""
    async with (
        running_gateway(
            WS_HANDLER=f"{HANDLERS}:fail_on_boom", WS_MAX_MESSAGES_PER_SECOND="5"
        ) as gw,
        connect(gw.url) as ws,
    ):
        echoed, closed_by = await flood_until_closed(ws)
        assert closed_by.rcvd is not None and closed_by.rcvd.code == 1008
        assert 1 <= len(echoed) < 50
    closed = log_events.one("connection_closed", code=1008)
    assert closed["drop_reason"] == "rate_limited"
    assert gw.metrics.errors == {"rate_limited": 1}


async def test_heartbeat_drops_a_silent_peer_of_a_handler(log_events: LogEvents):
    """The gateway's heartbeat runs around a handler: a peer that never answers gets 1011."""
    async with running_gateway(
        WS_HANDLER=f"{HANDLERS}:never_reads",
        WS_PING_INTERVAL=f"{units(0.2):.3f}",
        WS_PING_TIMEOUT=f"{units(0.2):.3f}",
    ) as gw:
        raw = await RawClient.connect(gw.port)
        try:
            await wait_until(lambda: gw.metrics.connections_active == 1)
            await wait_until(lambda: gw.metrics.connections_active == 0, units(3), "the drop")
        finally:
            await raw.close()
    closed = (await wait_until(lambda: log_events("connection_closed")))[0]
    assert (closed["code"], closed["drop_reason"]) == (1011, "heartbeat_timeout")


async def test_a_handler_that_does_not_read_stops_the_peer_not_the_memory():
    """A flood to a handler that never reads: the gateway stops reading it, with at most
    WS_MAX_QUEUE frames held, and other connections are served."""
    async with running_gateway(WS_HANDLER=f"{HANDLERS}:never_reads", WS_PING_INTERVAL="0") as gw:
        flood = Flood(await RawClient.connect(gw.port))
        try:
            connection = await wait_until(lambda: gw.connections and server_connection(gw))

            def held_back() -> bool:
                return not connection.transport.is_reading() and flood.blocked()

            await wait_until(held_back, units(10), "the server to stop reading the flood")
            max_queue = Config().max_queue
            queued = sum(len(f.data) for f in connection.recv_messages.frames.queue)
            assert queued <= (max_queue + 8) * FRAME_PAYLOAD
            assert connection in gw.holding  # the memory budget's last resort sees it
            assert gw.budget.floors > 0
        finally:
            await flood.stop()


async def test_connection_cap_health_and_drain_hold_around_a_handler():
    """WS_MAX_CONNECTIONS answers 503, /healthz and /readyz answer, and a drain closes the
    handler's connection with 1001."""
    async with running_gateway(
        WS_HANDLER=f"{HANDLERS}:fail_on_boom", WS_MAX_CONNECTIONS="1", WS_SHUTDOWN_TIMEOUT="4"
    ) as gw:
        async with connect(gw.url) as ws:
            with pytest.raises(InvalidStatus) as refused:
                async with connect(gw.url):
                    pass
            assert refused.value.response.status_code == 503
            assert (await http_request(gw.port, "/healthz"))[0] == 200
            assert (await http_request(gw.port, "/readyz"))[0] == 200
            async with asyncio.timeout(units(10)):
                await gw.shutdown()
            assert ws.close_code == 1001
        assert not gw.connections


@pytest.mark.parametrize(
    ("spec", "problem"),
    [
        ("tests.unit.handlers", "is not package.module:name"),
        ("no_such_module_here:handler", "cannot be imported (ModuleNotFoundError"),
        (f"{HANDLERS}:missing", "names nothing: no 'missing'"),
        (f"{HANDLERS}:NOT_A_HANDLER", "is not an async callable (it is int)"),
        (f"{HANDLERS}:sync_handler", "is not an async callable (it is function)"),
        (f"{HANDLERS}:legacy_handler", "does not take one argument, the connection"),
    ],
    ids=["no-colon", "no-module", "no-name", "not-callable", "not-async", "two-arguments"],
)
def test_a_handler_that_cannot_run_is_a_configuration_error(spec: str, problem: str):
    """WS_HANDLER is imported and checked when the configuration is read."""
    with pytest.raises(ConfigError) as raised:
        Config.from_env({"WS_HANDLER": spec})
    assert str(raised.value).startswith(f"WS_HANDLER={spec!r} {problem}")
    assert "\n" not in str(raised.value)


def test_an_object_with_an_async_call_is_a_handler():
    """Any async callable of one argument is accepted, not only functions."""
    assert load_handler(f"{HANDLERS}:room") is not None
    assert Config.from_env({"WS_HANDLER": f" {HANDLERS}:shout "}).handler == f"{HANDLERS}:shout"


def test_python_m_server_with_a_broken_handler_exits_2_with_one_line():
    """`python -m server` with a handler it cannot import exits 2, one line naming it."""
    result = subprocess.run(
        server_command(),
        cwd=ROOT,
        env=server_env(WS_HANDLER="no_such_module_here:handler"),
        capture_output=True,
        text=True,
        timeout=units(20),
        check=False,
    )
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith("configuration error: WS_HANDLER='no_such_module_here:handler'")


def test_help_lists_every_setting_with_its_default_and_exits_0():
    """`python -m server --help` prints each variable with its default, binds nothing."""
    result = run_server_command("--help")
    assert result.returncode == 0, result.stderr
    for variable in SETTINGS:
        assert f"\n  {variable}=" in result.stdout, variable
    for expected in ("WS_PORT=3000", "WS_PING_INTERVAL=20", "WS_MAX_QUEUE=4", "WS_HANDLER=\n"):
        assert expected in result.stdout
    assert "server_started" not in result.stdout


def test_help_names_exactly_the_variables_the_configuration_reads():
    """SETTINGS (--help) and Config.from_env agree on which variables exist."""

    class Recording(dict):
        def get(self, key, default=None):
            self.setdefault(key, "")
            return default

    read = Recording()
    Config.from_env(read)
    assert sorted(read) == sorted(SETTINGS)


def test_an_unknown_argument_exits_2():
    """Settings are environment variables: any argument but --help is a usage error."""
    result = run_server_command("--port", "80")
    assert result.returncode == 2
    assert result.stderr.startswith("usage error: unknown argument '--port'")


async def test_every_worker_runs_the_handler():
    """With WS_WORKERS=2 each worker imports the handler; SIGTERM stops them, exit 0."""
    server = await ServerProcess.start(
        WS_WORKERS="2", WS_PORT=str(free_port()), WS_HANDLER=f"{HANDLERS}:shout"
    )
    try:
        await wait_until(lambda: len(server.events("server_started")) == 2, what="both workers")
        workers = {e["pid"] for e in server.events("server_started")}
        for _ in range(6):
            async with connect(f"ws://127.0.0.1:{server.port}/ws") as ws:
                assert json.loads(await ws.recv())["pid"] in workers
                await ws.send("hi")
                assert await ws.recv() == "HI"
        server.signal(signal.SIGTERM)
        assert await server.wait(units(15)) == 0
    finally:
        await server.kill()
    assert len(server.events("server_stopped")) == 2


async def test_a_handler_that_outlives_its_connection_does_not_hold_the_drain():
    """A handler still running after its connection closed: the drain still ends within
    WS_SHUTDOWN_TIMEOUT, with 1001 for the client."""
    budget = units(1)
    async with (
        running_gateway(
            WS_HANDLER=f"{HANDLERS}:outlives_its_connection", WS_SHUTDOWN_TIMEOUT=f"{budget:.3f}"
        ) as gw,
        connect(gw.url) as ws,
    ):
        loop = asyncio.get_running_loop()
        started = loop.time()
        async with asyncio.timeout(budget + units(2)):
            await gw.shutdown()
        assert loop.time() - started <= budget + units(0.5)
        assert ws.close_code == 1001


async def test_a_fragmented_send_goes_out_whole_and_uncounted():
    """send() of an iterable (fragments) works as under serve(); as docs/handlers.md says,
    only whole str or bytes messages are counted per message."""
    async with (
        running_gateway(WS_HANDLER=f"{HANDLERS}:fragments") as gw,
        connect(gw.url) as ws,
    ):
        await ws.send("abcd")
        assert await ws.recv() == "abcd"
        assert (gw.metrics.text.msgs_in, gw.metrics.text.msgs_out) == (1, 0)


async def test_what_the_gateway_discards_after_the_handler_returned_is_not_the_handlers():
    """Messages read only to reach the close after the handler returned are neither counted
    as the handler's nor rate-limited: the close is still 1000."""
    env = {"WS_HANDLER": f"{HANDLERS}:first_only", "WS_MAX_MESSAGES_PER_SECOND": "1"}
    async with running_gateway(**env) as gw, connect(gw.url) as ws:
        for i in range(10):
            await ws.send(f"m{i}")
        assert await ws.recv() == "m0"
        async with asyncio.timeout(units(5)):
            await ws.wait_closed()
        assert ws.close_code == 1000
        assert gw.metrics.text.msgs_in == 1
