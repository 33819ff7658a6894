"""Helpers for the unit tests: a real gateway in-process, raw HTTP and WebSocket clients,
condition waits with deadlines, and ``python -m server`` as a subprocess (under coverage
when the tests run under coverage).

Every timeout is a multiple of one unit, ``WSGW_TIMEOUT_UNIT`` seconds (default 1.0);
raise it on a slow machine instead of editing tests.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosedError

from server.app import Gateway
from server.config import Config
from server.connection import GatewayConnection
from stack import prometheus
from stack.harness_config import subprocess_env
from stack.waits import seconds, until_async
from stack.wire.frames import (  # noqa: F401 - re-exported to the tests
    OP_BINARY,
    OP_CLOSE,
    OP_CONT,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    ZERO_KEY,
    encode,
)
from stack.wire.raw import RawWebSocket

ROOT = Path(__file__).resolve().parents[2]
MIB = 2**20


def units(n: float = 1.0) -> float:
    """``n`` timeout units (``WSGW_TIMEOUT_UNIT``), in seconds."""
    return seconds(n)


def make_config(**env: str) -> Config:
    """A config from defaults plus ``env``, on 127.0.0.1 and a free port."""
    return Config.from_env({"WS_HOST": "127.0.0.1", "WS_PORT": "0", **env})


@asynccontextmanager
async def running_gateway(**env: str) -> AsyncIterator[Gateway]:
    """A started gateway (configured by ``env`` variables); drained on exit."""
    gateway = Gateway(make_config(**env))
    await gateway.start()
    try:
        yield gateway
    finally:
        async with asyncio.timeout(units(15)):
            await gateway.shutdown()


async def wait_until(
    predicate: Callable[[], Any], within: float | None = None, what: str = "condition"
) -> Any:
    """Poll ``predicate`` (sync or async) until it returns something truthy, and return that.

    :func:`stack.waits.until_async`, polled every 10 ms, with ``within`` in seconds (default
    5 units): ConditionTimeout after it. An exception from ``predicate`` propagates at once.
    """
    deadline = units(5) if within is None else within
    return await until_async(predicate, what, deadline / units(1), errors=(), interval=0.01)


def server_connection(gateway: Gateway) -> GatewayConnection:
    """The only connection the gateway is handling."""
    (connection,) = gateway.connections
    return connection


# Plain HTTP


async def http_request(
    port: int,
    path: str,
    *,
    method: str = "GET",
    headers: Mapping[str, str] | None = None,
    host: str = "127.0.0.1",
) -> tuple[int, dict[str, str], bytes]:
    """One HTTP/1.1 request; returns (status, headers with lower-case names, body)."""
    async with asyncio.timeout(units(5)):
        reader, writer = await asyncio.open_connection(host, port)
        try:
            lines = [f"{method} {path} HTTP/1.1", f"Host: {host}:{port}"]
            lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
            writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
            await writer.drain()
            head = await reader.readuntil(b"\r\n\r\n")
            status_line, *header_lines = head.decode("latin-1").split("\r\n")
            status = int(status_line.split(" ", 2)[1])
            response_headers = {}
            for line in header_lines:
                if line:
                    name, _, value = line.partition(":")
                    response_headers[name.strip().lower()] = value.strip()
            length = int(response_headers.get("content-length", "0"))
            body = await reader.readexactly(length)
        finally:
            writer.close()
    return status, response_headers, body


async def get_json(port: int, path: str) -> tuple[int, Any]:
    status, headers, body = await http_request(port, path)
    assert headers["content-type"] == "application/json"
    return status, json.loads(body)


def metric(text: str, name: str, **labels: str) -> float:
    """The value of sample ``name{labels}`` in a Prometheus exposition (0 if absent)."""
    return prometheus.parse(text).value(name, **labels)


# Raw WebSocket client, for what a well-behaved client library refuses to do


class RawClient(RawWebSocket):
    """A RawWebSocket to a gateway on 127.0.0.1 that answered a valid 101; reads wait 5 units."""

    @classmethod
    async def connect(
        cls, port: int, path: str = "/ws", headers: Mapping[str, str] | None = None
    ) -> RawClient:
        return await cls.open(
            "127.0.0.1",
            port,
            path=path,
            host_header=f"127.0.0.1:{port}",
            headers=headers,
            within=units(5),
            strict=True,
        )


FRAME_PAYLOAD = 64 * 1024


class Flood:
    """A raw client that sends 64 KiB binary messages as fast as it can and never reads."""

    def __init__(self, raw: RawClient) -> None:
        self.raw = raw
        self.sent = 0
        self.task = asyncio.get_running_loop().create_task(self._pump())

    async def _pump(self) -> None:
        frame = encode(OP_BINARY, b"\x00" * FRAME_PAYLOAD, mask_key=ZERO_KEY)
        writer = self.raw.writer
        with contextlib.suppress(ConnectionError):
            while True:
                writer.write(frame)
                self.sent += 1
                await writer.drain()

    def blocked(self) -> bool:
        """The client cannot push more: its own transport buffer is over the high-water mark."""
        transport = self.raw.writer.transport
        return transport.get_write_buffer_size() >= transport.get_write_buffer_limits()[1]

    async def stop(self) -> None:
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task
        self.raw.abort()


# python -m server in a subprocess


def coverage_wrap_needed() -> bool:
    """Whether these tests measure coverage and subprocesses would not be measured by it."""
    try:
        import coverage
    except ImportError:  # pragma: no cover
        return False
    current = coverage.Coverage.current()
    if current is None:
        return False
    # With [tool.coverage.run] patch = ["subprocess"], coverage measures children itself.
    return "subprocess" not in (current.config.patch or [])


def server_command() -> list[str]:
    """``python -m server``; under ``coverage run -p`` when these tests measure coverage.

    pytest-cov 7 no longer instruments subprocesses by itself; a parallel data file written
    in the repository root is combined with the rest by pytest-cov at the end of the run.
    """
    if coverage_wrap_needed():
        rcfile = ROOT / "pyproject.toml"
        return [
            sys.executable, "-m", "coverage", "run", "--parallel-mode",
            f"--rcfile={rcfile}", "-m", "server",
        ]  # fmt: skip
    return [sys.executable, "-m", "server"]


def server_env(**env: str) -> dict[str, str]:
    base = {k: v for k, v in subprocess_env().items() if not k.startswith(("WS_", "LOG_"))}
    return {**base, "WS_HOST": "127.0.0.1", "WS_PORT": "0", "PYTHONUNBUFFERED": "1", **env}


def run_server_command(*args: str) -> subprocess.CompletedProcess[str]:
    """``python -m server ARGS`` to its end (``--help``, a bad argument), with its output."""
    return subprocess.run(
        [*server_command(), *args],
        cwd=ROOT,
        env=server_env(),
        capture_output=True,
        text=True,
        timeout=units(20),
        check=False,
    )


async def flood_until_closed(
    ws: Any, count: int = 50
) -> tuple[list[str | bytes], ConnectionClosedError]:
    """Send ``count`` messages at once, then read echoes until the server closes the
    connection: what was echoed, and how it was closed."""
    for i in range(count):
        await ws.send(f"m{i}")
    echoed: list[str | bytes] = []
    with pytest.raises(ConnectionClosedError) as raised:
        async with asyncio.timeout(units(5)):
            while True:
                echoed.append(await ws.recv())
    return echoed, raised.value


class ServerProcess:
    """``python -m server`` in a subprocess; its stdout is read continuously into ``lines``."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.lines: list[str] = []
        self.port: int | None = None
        self._started = asyncio.Event()
        self._reader = asyncio.get_running_loop().create_task(self._read())

    @classmethod
    async def start(cls, **env: str) -> ServerProcess:
        process = await asyncio.create_subprocess_exec(
            *server_command(),
            cwd=ROOT,
            env=server_env(**env),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        server = cls(process)
        try:
            async with asyncio.timeout(units(15)):
                await server._started.wait()
            await wait_until(server.ready, units(10), "/readyz to answer 200")
        except BaseException:
            await server.kill()
            raise
        return server

    async def _read(self) -> None:
        assert self.process.stdout is not None
        async for raw in self.process.stdout:
            line = raw.decode(errors="replace").rstrip("\n")
            self.lines.append(line)
            if self.port is None and '"server_started"' in line:
                url = json.loads(line)["url"]
                self.port = int(url.rsplit(":", 1)[1].split("/")[0])
                self._started.set()
        self._started.set()  # exited before starting: let start() fail fast

    async def ready(self) -> bool:
        assert self.port is not None, "\n".join(self.lines)
        try:
            status, _, _ = await http_request(self.port, "/readyz")
        except OSError:
            return False
        return status == 200

    def events(self, name: str) -> list[dict[str, Any]]:
        found = []
        for line in self.lines:
            if line.startswith("{"):
                record = json.loads(line)
                if record.get("event") == name:
                    found.append(record)
        return found

    def signal(self, signum: int) -> None:
        self.process.send_signal(signum)

    async def wait(self, within: float) -> int:
        """The exit status; fails if the process runs longer than ``within`` seconds."""
        async with asyncio.timeout(within):
            code = await self.process.wait()
            await self._reader
        return code

    async def kill(self) -> None:
        """SIGKILL the process and the workers it started (each in a process group of its own)."""
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGKILL)
        await self.process.wait()
        self._reader.cancel()
        kill_workers(self.events("supervisor_started"))


def worker_pids(output: str) -> list[int]:
    """The worker pids a supervisor announced in ``output`` (its JSON log)."""
    return [
        pid
        for line in output.splitlines()
        if '"supervisor_started"' in line
        for pid in json.loads(line).get("pids", [])
    ]


def kill_workers(announcements: Any) -> None:
    """SIGKILL every worker named by ``supervisor_started`` events (or a list of pids)."""
    for item in announcements:
        for pid in item.get("pids", []) if isinstance(item, dict) else [item]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
