"""``python -m server`` as a process: configuration errors, signals, exit status, workers."""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import subprocess

import pytest
from websockets.asyncio.client import connect

from stack.ports import free_port

from .helpers import (
    ROOT,
    RawClient,
    ServerProcess,
    get_json,
    http_request,
    kill_workers,
    metric,
    server_command,
    server_env,
    units,
    wait_until,
    worker_pids,
)

pytestmark = pytest.mark.unit


def run_server_sync(**env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        server_command(),
        cwd=ROOT,
        env=server_env(**env),
        capture_output=True,
        text=True,
        timeout=units(20),
        check=False,
    )


@pytest.mark.parametrize(
    ("env", "line"),
    [
        (
            {"WS_PORT": "abc"},
            "configuration error: WS_PORT='abc' is not an integer; allowed: 0-65535",
        ),
        (
            {"WS_PORT": "65536"},
            "configuration error: WS_PORT='65536' is out of range; allowed: 0-65535",
        ),
        (
            {"LOG_LEVEL": "LOUD"},
            "configuration error: LOG_LEVEL='LOUD' is unknown; "
            "allowed: DEBUG, INFO, WARNING, ERROR",
        ),
        ({"WS_PING_TIMEOUT": "-1"}, "configuration error: WS_PING_TIMEOUT='-1' is out of range"),
        (
            {"WS_LOG_MESSAGES": "maybe"},
            "configuration error: WS_LOG_MESSAGES='maybe' is not a boolean",
        ),
    ],
    ids=["not-a-number", "out-of-range", "unknown-level", "negative", "not-a-boolean"],
)
def test_bad_configuration_exits_2_with_one_line(env, line):
    """A bad value exits with status 2 and one stderr line, before anything is bound."""
    result = run_server_sync(**env)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and result.stderr.startswith(line), result.stderr
    assert "server_started" not in result.stdout


def test_port_in_use_exits_1_with_one_log_line():
    """A port that cannot be bound exits with status 1 and a server_failed line."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        result = run_server_sync(WS_PORT=str(taken.getsockname()[1]))
    assert result.returncode == 1
    (line,) = [json.loads(x) for x in result.stdout.splitlines() if '"server_failed"' in x]
    assert line["level"] == "ERROR" and "OSError" in line["error"]
    assert "Traceback" not in result.stdout + result.stderr


async def test_sigterm_drains_with_1001_and_exits_0():
    """SIGTERM: /readyz 503, clients get 1001, the process exits 0 within the timeout."""
    shutdown_timeout = units(2)
    server = await ServerProcess.start(WS_SHUTDOWN_TIMEOUT=f"{shutdown_timeout:.3f}")
    try:
        assert server.port is not None
        url = f"ws://127.0.0.1:{server.port}/ws"
        async with connect(url) as ws:
            await ws.send("before")
            assert await ws.recv() == "before"
            raw = await RawClient.connect(server.port)  # will not answer the close frame
            loop = asyncio.get_running_loop()
            started = loop.time()
            server.signal(signal.SIGTERM)

            async def draining() -> bool:
                return await get_json(server.port, "/readyz") == (503, {"status": "draining"})

            await wait_until(draining, what="/readyz to answer 503 during the drain")
            async with asyncio.timeout(units(3)):
                await ws.wait_closed()
            assert ws.close_code == 1001
            assert (await raw.read_close())[0] == 1001
            assert await server.wait(shutdown_timeout + units(3)) == 0
            assert loop.time() - started <= shutdown_timeout + units(1)
            raw.abort()
    finally:
        await server.kill()
    assert server.events("stop_requested")[0]["reason"] == "SIGTERM"
    assert server.events("server_draining")[0]["connections"] == 2
    assert server.events("server_stopped")
    assert {e["code"] for e in server.events("connection_closed")} == {1001}


async def test_sigint_stops_gracefully_with_exit_0():
    """SIGINT (Ctrl+C) drains like SIGTERM and exits 0."""
    server = await ServerProcess.start(LOG_FORMAT="json", WS_EVENT_LOOP="asyncio")
    try:
        async with connect(f"ws://127.0.0.1:{server.port}/") as ws:
            server.signal(signal.SIGINT)
            async with asyncio.timeout(units(5)):
                await ws.wait_closed()
            assert ws.close_code == 1001
        assert await server.wait(units(10)) == 0
    finally:
        await server.kill()
    assert server.events("server_started")[0]["event_loop"] == "asyncio"
    assert server.events("stop_requested")[0]["reason"] == "SIGINT"


async def test_text_log_format_and_uvloop():
    """LOG_FORMAT=text writes key=value lines; WS_EVENT_LOOP=uvloop runs on uvloop."""
    process = await asyncio.create_subprocess_exec(
        *server_command(),
        cwd=ROOT,
        env=server_env(LOG_FORMAT="text", WS_EVENT_LOOP="uvloop", WS_PORT="0"),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        assert process.stdout is not None
        async with asyncio.timeout(units(15)):
            first = (await process.stdout.readline()).decode()
        assert " INFO    server_started " in first and " event_loop=uvloop " in first
        process.send_signal(signal.SIGTERM)
        async with asyncio.timeout(units(10)):
            rest = (await process.stdout.read()).decode()
            assert await process.wait() == 0
        assert "server_stopped" in rest
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def test_stop_while_workers_start_is_a_clean_exit():
    """SIGTERM right after start (workers still starting) still ends with status 0."""
    process = await asyncio.create_subprocess_exec(
        *server_command(),
        cwd=ROOT,
        env=server_env(WS_WORKERS="2", WS_PORT=str(free_port())),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    assert process.stdout is not None
    announced = ""
    try:
        async with asyncio.timeout(units(15)):
            while "supervisor_started" not in announced:
                announced = (await process.stdout.readline()).decode()
            process.send_signal(signal.SIGTERM)
            output = (await process.stdout.read()).decode()
            assert await process.wait() == 0, output
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
        kill_workers(worker_pids(announced))
    assert '"status":0' in output


async def test_workers_share_one_port_and_stop_together():
    """WS_WORKERS=2 runs two processes on one port (SO_REUSEPORT); SIGTERM stops both, exit 0."""
    server = await ServerProcess.start(WS_WORKERS="2", WS_PORT=str(free_port()))
    try:
        await wait_until(lambda: len(server.events("server_started")) == 2, what="both workers")
        pids = {e["pid"] for e in server.events("server_started")}
        assert len(pids) == 2
        for i in range(10):
            async with connect(f"ws://127.0.0.1:{server.port}/ws") as ws:
                await ws.send(f"via worker {i}")
                assert await ws.recv() == f"via worker {i}"
        server.signal(signal.SIGTERM)
        assert await server.wait(units(15)) == 0
    finally:
        await server.kill()
    assert len(server.events("server_stopped")) == 2
    assert server.events("supervisor_stopped")[0]["status"] == 0


def test_failing_workers_make_the_supervisor_exit_1():
    """If workers cannot serve (here: an address not on this host), the supervisor exits 1."""
    result = run_server_sync(WS_WORKERS="2", WS_PORT=str(free_port()), WS_HOST="192.0.2.1")
    assert result.returncode == 1
    events = [json.loads(x) for x in result.stdout.splitlines() if x.startswith("{")]
    assert "server_failed" in [e["event"] for e in events]  # the other may be stopped first
    failed = [e for e in events if e["event"] == "worker_failed"]
    assert failed and all(e["exitcode"] != 0 for e in failed)
    # The supervisor's own lines; a worker that got the relayed SIGTERM after installing its
    # handler may also log its stop_requested (server.app), which is not checked here.
    supervisor = [e for e in events if e["event"].startswith(("supervisor_", "worker_"))]
    assert all(e["logger"] == "server.__main__" for e in supervisor), supervisor
    assert events[-1]["event"] == "supervisor_stopped" and events[-1]["status"] == 1


async def test_a_log_reader_that_stops_reading_does_not_stall_echoing():
    """stdout to a pipe nobody reads: echo goes on, lines are dropped and counted, then told."""
    process = await asyncio.create_subprocess_exec(
        *server_command(),
        cwd=ROOT,
        # No per-connection bound on message lines: this one connection must outrun the reader.
        env=server_env(WS_LOG_MESSAGES="true", WS_LOG_MESSAGES_PER_SECOND="0"),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        limit=1024,  # the test's own reader stops too, after 2 KiB
    )
    try:
        assert process.stdout is not None
        async with asyncio.timeout(units(15)):
            first = json.loads(await process.stdout.readline())
        port = int(first["url"].rsplit(":", 1)[1].split("/")[0])
        await wait_until(lambda: get_json(port, "/readyz"), what="/readyz")
        # Now nobody reads stdout: ~250 B per message line fill the pipe and the server's
        # 1 MiB of buffered lines well before 20,000 messages.
        message = b"\n" * 1024
        async with connect(f"ws://127.0.0.1:{port}/ws", max_queue=None) as ws:
            async with asyncio.timeout(units(60)):
                for _ in range(20):
                    for _ in range(1000):
                        await ws.send(message)
                    for _ in range(1000):
                        assert await ws.recv() == message
        _, _, body = await http_request(port, "/metrics")
        dropped = metric(body.decode(), "ws_log_lines_dropped_total")
        assert dropped > 0
        # Reading again: the server writes what it kept, then says how many it dropped.
        async with asyncio.timeout(units(15)):
            while True:
                line = (await process.stdout.readline()).decode()
                assert line, "stdout ended before a log_lines_dropped line"
                if '"log_lines_dropped"' in line:
                    break
        told = json.loads(line)["dropped"]
        assert 0 < told <= dropped
        process.send_signal(signal.SIGTERM)
        async with asyncio.timeout(units(10)):
            rest = (await process.stdout.read()).decode()
            assert await process.wait() == 0
        assert '"server_stopped"' in rest
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
