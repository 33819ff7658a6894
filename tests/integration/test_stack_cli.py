"""python -m stack: a person starts the same stack by hand, sees it, and takes it down."""

from __future__ import annotations

import subprocess
import sys
import uuid

from websockets.sync.client import connect

from stack import docker_host, gateway


def stack_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "stack", *args], capture_output=True, text=True, timeout=300
    )


def test_up_status_logs_down(gateway_images: dict[str, str]) -> None:
    """`up` gives a URL that echoes; `status` shows the stack and its port answering; `down`."""
    name = f"wsgw-cli-{uuid.uuid4().hex[:8]}"
    try:
        up = stack_cli("up", "--name", name)
        assert up.returncode == 0, up.stderr
        url = next(w for w in up.stdout.split() if w.startswith(f"ws://{docker_host.address()}:"))
        with connect(url, open_timeout=10) as ws:
            ws.send("by hand")
            assert ws.recv(timeout=10) == "by hand"
        status = stack_cli("status")
        assert f"{name}-server=running" in status.stdout
        assert f"{name}-nginx=running" in status.stdout
        assert f"of {name}-nginx: answers" in status.stdout  # checked from the host
        logs = stack_cli("logs", name, "server")
        assert "connection_open" in logs.stdout
    finally:
        down = stack_cli("down", name)
    assert down.returncode == 0, down.stderr
    assert name not in gateway.stack_names()


def test_down_without_a_name_is_refused() -> None:
    """`down` with neither a name nor --all exits 2 and says what to pass."""
    result = stack_cli("down")
    assert result.returncode == 2
    assert "--all" in result.stderr
