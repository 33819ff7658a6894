"""WS_WORKERS: several worker processes share one port (SO_REUSEPORT) under `python -m server`.

The regression this guards: spawned workers must find their target by an importable name;
as ``__main__`` of ``python -m server`` they could not, and every worker died at start.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

from websockets.sync.client import connect

from stack import prometheus
from stack.harness_config import subprocess_env
from stack.ports import free_port
from stack.waits import until

from .helpers import kill_workers, worker_pids

ROOT = Path(__file__).resolve().parents[2]


def echo(url: str, message: str) -> str:
    with connect(url, open_timeout=5, close_timeout=2) as ws:
        ws.send(message)
        return ws.recv(timeout=5)


def received(samples: prometheus.Samples) -> dict[str, float]:
    """Text messages received, by worker."""
    out: dict[str, float] = {}
    for labels, value in samples.labelled("ws_messages_total"):
        if labels["direction"] == "in":
            out[labels["worker"]] = out.get(labels["worker"], 0) + value
    return out


def wait_for_both_workers(port: int) -> None:
    """Until /metrics has answered from worker 0 and worker 1 (each request lands on one).

    A worker still starting has no SIGTERM handler yet: tests stop only after this.
    """
    seen: set[str] = set()

    def answered() -> set[str]:
        samples = prometheus.fetch(f"http://127.0.0.1:{port}/metrics", timeout=5)
        seen.update(labels["worker"] for labels, _ in samples.labelled("ws_process_info"))
        return seen

    until(answered, "/metrics answered from both workers", timeout=20, accept=lambda s: len(s) == 2)


def test_two_workers_serve_one_port_and_stop_cleanly_on_sigterm() -> None:
    port = free_port()
    env = {
        **subprocess_env(),
        "WS_WORKERS": "2",
        "WS_PORT": str(port),
        "WS_HOST": "127.0.0.1",
        "WS_LOG_MESSAGES": "false",
        "LOG_FORMAT": "json",
        "PYTHONPATH": str(ROOT),
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "server"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        url = f"ws://127.0.0.1:{port}/ws"

        def first_echo() -> str:
            assert proc.poll() is None, "the supervisor exited"
            return echo(url, "first")

        until(first_echo, "a worker echoes", timeout=20, accept=lambda text: text == "first")
        wait_for_both_workers(port)
        for n in range(20):  # the kernel spreads these over both workers
            assert echo(url, f"message {n}") == f"message {n}"
        # Any worker's /metrics counts every worker's messages, labelled by worker.
        until(
            lambda: received(prometheus.fetch(f"http://127.0.0.1:{port}/metrics")),
            "21 messages in one scrape of /metrics",
            timeout=10,
            accept=lambda by_worker: sum(by_worker.values()) == 21 and len(by_worker) == 2,
        )
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            output, _ = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            output, _ = proc.communicate()
            kill_workers(worker_pids(output))
            raise
    assert proc.returncode == 0, output
    events = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
    started = {e["worker"] for e in events if e["event"] == "server_started"}
    assert started == {0, 1}, output
    opened_by = {e["pid"] for e in events if e["event"] == "connection_open"}
    assert len(opened_by) == 2, f"connections went to {opened_by} only"
    assert not [e for e in events if e["event"] == "worker_failed"], output


def test_supervisor_relays_sigterm_to_its_workers_in_process(capsys) -> None:
    """main() with WS_WORKERS=2 in this process (for coverage of the supervisor)."""
    from server.__main__ import STOP_SIGNALS, main

    port = free_port()
    url = f"ws://127.0.0.1:{port}/ws"
    root = logging.getLogger()
    saved_logging = (list(root.handlers), root.level)
    saved_signals = {sig: signal.getsignal(sig) for sig in STOP_SIGNALS}
    echoed: list[str] = []

    def drive() -> None:
        try:
            echoed.append(until(lambda: echo(url, "in process"), "a worker echoes", timeout=20))
            wait_for_both_workers(port)
        finally:
            os.kill(os.getpid(), signal.SIGTERM)  # the supervisor relays it to the workers

    driver = threading.Thread(target=drive)
    try:
        driver.start()
        status = main(
            {"WS_WORKERS": "2", "WS_PORT": str(port), "WS_HOST": "127.0.0.1", "LOG_FORMAT": "text"}
        )
    finally:
        driver.join(timeout=30)
        for sig, handler in saved_signals.items():
            signal.signal(sig, handler)
        root.handlers[:] = saved_logging[0]
        root.setLevel(saved_logging[1])
    assert echoed == ["in process"]
    assert status == 0
    assert "supervisor_stopped" in capsys.readouterr().out
