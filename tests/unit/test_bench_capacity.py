"""The capacity bench's sizing, its docs table and its heartbeat accounting, without Docker."""

from __future__ import annotations

import dataclasses
import errno
import math
import socket
from pathlib import Path
from typing import Any

import pytest

from stack import compose_file
from stack.bench import capacity_sizing, capacity_table
from stack.bench.bench_settings import Settings
from stack.bench.loadgen import _Worker

from .helpers import running_gateway, units, wait_until

pytestmark = pytest.mark.unit

DESCRIPTORS = 20000  # the engine's hard limit per container process here
# connect() scans the even half of the default range (32768-60999) first
FAST_PORTS = (60999 - 32768 + 1) // 2


def settings(target: int) -> Settings:
    """The bench's settings as ``--capacity target`` gives them (the rest at defaults)."""
    return Settings(
        phases=("capacity",),
        only=(),
        duration=4.0,
        rounds=1,
        memory_connections=5000,
        warmup=1.5,
        connections=100,
        size=1024,
        text=False,
        inflight=8,
        clients=2,
        rate=5000,
        latency_connections=100,
        capacity=target,
        capacity_step=5000,
        capacity_sample=1000,
        ping_interval=10.0,
        published_capacity=5000,
        server_env=(),
        nginx_env=(),
        keep_limits=False,
    )


def plan(target: int, monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """setup_for's numbers for ``target``, with NGINX's nofile at this engine's limit."""
    monkeypatch.setattr(
        capacity_sizing.compose_file,
        "runtime_kwargs",
        lambda name: {"ulimits": [{"Name": "nofile", "Soft": DESCRIPTORS, "Hard": DESCRIPTORS}]},
    )
    setup = capacity_sizing.setup_for(settings(target))
    return {
        "replicas": setup.replicas,
        "server_processes": setup.replicas * int(setup.server_env["WS_WORKERS"]),
        "cap": int(setup.server_env["WS_MAX_CONNECTIONS"]),
        "nginx_workers": int(setup.nginx_env["WORKER_PROCESSES"]),
        "worker_connections": int(setup.nginx_env["WORKER_CONNECTIONS"]),
        "addresses": math.ceil(target * (1 + capacity_sizing.OVERFLOW) / capacity_sizing.PER_PAIR),
        "client_processes": math.ceil(target / capacity_sizing.CLIENT_PROCESS),
    }


@pytest.mark.parametrize("target", [20000, 30000, 100000, 150000])
def test_every_process_and_address_pair_stays_under_its_limit(
    target: int, monkeypatch: pytest.MonkeyPatch
):
    """Descriptors per process, ports per address pair: the plan for ``target`` fits them,
    and the servers' caps together hold the target with room."""
    p = plan(target, monkeypatch)
    assert p["cap"] + 100 < DESCRIPTORS  # one descriptor per connection, plus its own
    assert p["server_processes"] * p["cap"] >= target * 1.04  # the uneven spread fits
    assert math.ceil(target * 1.1 / p["replicas"]) < FAST_PORTS  # NGINX -> a server
    assert 2 * math.ceil(target * 1.1 / p["nginx_workers"]) + 100 < p["worker_connections"]
    assert p["worker_connections"] <= DESCRIPTORS
    assert math.ceil(target * 1.1 / p["addresses"]) < FAST_PORTS  # host -> NGINX
    assert math.ceil(target * 1.1 / p["client_processes"]) + 100 < DESCRIPTORS


def test_past_the_target_the_servers_cap_answers_before_nginx(monkeypatch: pytest.MonkeyPatch):
    """At 100,000 the servers' caps (503) end within 10 % above, NGINX's room well after."""
    p = plan(100000, monkeypatch)
    servers = p["server_processes"] * p["cap"]
    nginx = p["nginx_workers"] * (p["worker_connections"] // 2)
    assert 100000 < servers <= 100000 * (1 + capacity_sizing.OVERFLOW) < nginx


@pytest.mark.parametrize("interval", [10.0, 20.0, 30.0, 60.0, 300.0])
def test_nginx_outwaits_the_longest_silence_of_an_idle_tunnel(
    interval: float, monkeypatch: pytest.MonkeyPatch
):
    """An idle tunnel hears from its server only when it pings, up to a sweep tick late
    (a quarter of the interval or of the pong timeout). NGINX's PROXY_READ_TIMEOUT of the
    run outlasts that with room: a 60 s interval against the default 60 s let NGINX close
    3,019 connections of a 100,000 run."""
    plan(20000, monkeypatch)  # NGINX's nofile at this engine's limit
    setup = capacity_sizing.setup_for(dataclasses.replace(settings(20000), ping_interval=interval))
    ping_timeout = float(compose_file.environment("server")["WS_PING_TIMEOUT"])
    silence = interval + min(interval, ping_timeout) / 4
    assert float(setup.server_env["WS_PING_INTERVAL"]) == interval
    assert int(setup.nginx_env["PROXY_READ_TIMEOUT"].removesuffix("s")) >= 1.5 * silence


def result() -> dict[str, Any]:
    """A finished capacity run's result, as capacity.run records it."""
    step = {
        "connections": 50000,
        "open_seconds": 20.0,
        "cpu_seconds": {"server": 20.0, "nginx": 5.0, "clients": 9.0, "machine": 40.0},
    }
    return {
        "setup": "gateway, 5 server container(s)",
        "target": 100000,
        "held": 100000,
        "unpinged": 0,
        "lost_during_hold": 0,
        "pings_during_hold": 600000,
        "hold_seconds": 61.0,
        "sample_ok": 1000,
        "sample_failed": 0,
        "memory": {"server": 1536 * 2**20, "nginx": 2048 * 2**20},
        "server_bytes_per_connection": 13.5 * 1024,
        "nginx_bytes_per_connection": 19.5 * 1024,
        "ramp_seconds": 70.0,
        "reached": 100000,
        "steps": [step, {**step, "connections": 100000}],
        "beyond": {"first_limit": "the servers' cap", "opened": 4000, "tried": 10000},
        "oom_kills": {"server": 0, "nginx": 0},
    }


def test_docs_table_replaces_its_own_block_and_nothing_else(tmp_path: Path):
    """The run's table goes between its markers; text before and after stays as it was."""
    page = tmp_path / "benchmarks.md"
    page.write_text(
        f"# Benchmarks\n\n## 100,000 connections\n\nprose\n\n{capacity_table.DOCS_BEGIN}\nold\n"
        f"{capacity_table.DOCS_END}\n\nafter\n"
    )
    capacity_table.write_docs(result(), page)
    text = page.read_text()
    assert text.startswith("# Benchmarks\n\n## 100,000 connections\n\nprose\n\n")
    assert text.endswith(f"{capacity_table.DOCS_END}\n\nafter\n")
    assert "old" not in text
    assert "| server + NGINX | 3.50 GiB (36.7 KiB per connection) |" in text
    assert "2,500 new WebSockets/s" in text
    # both steps' CPU over the 100,000 they opened
    assert "| CPU per new WebSocket | server 400 us, NGINX 100 us, load generator 180 us; " in text
    assert "the machine 800 us" in text
    assert text.count(capacity_table.DOCS_BEGIN) == 1


def test_docs_table_is_appended_once_and_skipped_for_a_run_that_stopped(tmp_path: Path):
    """Without markers the section is appended; a run that never held writes nothing."""
    page = tmp_path / "benchmarks.md"
    page.write_text("# Benchmarks\n")
    stopped = {k: v for k, v in result().items() if k not in ("held", "memory")}
    capacity_table.write_docs(stopped, page)
    assert page.read_text() == "# Benchmarks\n"
    capacity_table.write_docs(result(), page)
    capacity_table.write_docs(result(), page)
    text = page.read_text()
    assert text.count("## 100,000 connections") == 1
    assert text.count(capacity_table.DOCS_BEGIN) == 1


async def test_status_counts_connections_silent_to_the_heartbeat_since_the_mark():
    """After 'mark', a connection counts as silent until it answers a ping, and as lost
    once it closes: what the capacity hold proves for every connection."""
    async with running_gateway(WS_PING_INTERVAL="0.2", WS_PING_TIMEOUT="5") as gateway:
        worker = _Worker(conn=None, index=0, counters=[0.0] * 4)  # type: ignore[arg-type]
        opened = await worker._open([("127.0.0.1", gateway.port, "localhost")], count=3)
        assert opened["opened"] == 3
        await worker._mark()
        assert (await worker._status())["unpinged"] == 3

        async def all_pinged() -> bool:
            return (await worker._status())["unpinged"] == 0

        await wait_until(all_pinged, units(5), "every connection pinged since the mark")
        worker.clients[0].close()
        await wait_until(lambda: worker.clients[0].closed.done(), units(5), "one closed")
        status = await worker._status()
        assert (status["open"], status["lost"], status["unpinged"]) == (2, 1, 0)
        assert worker.stats.open == 2  # what the progress display shows, counted as they go
        await worker._close(within=units(5))
        assert worker.stats.open == 0


async def test_open_takes_each_connection_once_however_few_openers():
    """'open' spreads ``count`` over its targets in turn with ``concurrency`` openers: each
    connection is tried once, and each failure is counted by kind."""
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        closed_port = unused.getsockname()[1]  # bound, not listening: refused
        async with running_gateway() as gateway:
            worker = _Worker(conn=None, index=0, counters=[0.0] * 4)  # type: ignore[arg-type]
            targets = [("127.0.0.1", gateway.port, "localhost"), ("127.0.0.1", closed_port, "x")]
            opened = await worker._open(targets, count=7, concurrency=2)
            assert (opened["opened"], opened["failed"], opened["open"]) == (4, 3, 4)
            assert opened["errors"] == {f"ConnectionRefusedError errno {errno.ECONNREFUSED}": 3}
            await worker._close(within=units(5))
