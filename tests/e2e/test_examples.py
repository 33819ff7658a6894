"""The client examples (docs/client-examples.md) run, and every byte they echo is checked.

- examples/python_client.py: run as a user runs it, with messages as arguments or on stdin,
  and across a server restart (it must reconnect and re-send).
- `python -m websockets URL`: the library's interactive client, fed on stdin.
- examples/broadcast_room: the room handler mounted into the server image as compose.yaml
  there does, run through NGINX by two clients.
- examples/browser.html: its script runs unchanged under Node with Node's WHATWG WebSocket
  (the browser API) and a stand-in for the few DOM elements it touches; see
  browser_page_harness.js. No browser is installed here, so layout and the browser's own
  Origin header are not covered.
"""

from __future__ import annotations

import json
import queue
import re
import shutil
import subprocess
import sys
import threading
from pathlib import Path

from websockets.sync.client import connect

from stack import images
from stack.docker_client import client
from stack.harness_config import current, subprocess_env
from stack.waits import seconds, until

ROOT = Path(__file__).resolve().parents[2]
PYTHON_CLIENT = ROOT / "examples" / "python_client.py"
BROWSER_PAGE = ROOT / "examples" / "browser.html"
HARNESS = Path(__file__).with_name("browser_page_harness.js")
ENV = subprocess_env(PYTHONUTF8="1", PYTHONIOENCODING="utf-8")

# Text a user might send: non-ASCII, markup, quotes, control-free whitespace, 64 KiB.
MESSAGES = [
    "hello",
    "héllo wörld ✓ 🌍 世界",
    "<script>alert('x')</script> & \"quotes\" \\ backslash",
    "  spaces at both ends  ",
    "z" * 65536,
]


class LineReader:
    """Reads a subprocess's stdout in a thread; lines are awaited with a deadline."""

    def __init__(self, stream) -> None:
        self.lines: queue.Queue[str] = queue.Queue()
        self.text: list[str] = []
        threading.Thread(target=self._pump, args=(stream,), daemon=True).start()

    def _pump(self, stream) -> None:
        for line in stream:
            self.text.append(line)
            self.lines.put(line)

    def next_line(self, timeout: float = 30) -> str:
        try:
            return self.lines.get(timeout=seconds(timeout))
        except queue.Empty:
            raise AssertionError(f"no output line within {seconds(timeout):.0f} s") from None


def run_python_client(url: str, *args: str, stdin: str | None = None) -> str:
    result = subprocess.run(
        [sys.executable, str(PYTHON_CLIENT), "--url", url, *args],
        input=stdin,
        capture_output=True,
        text=True,
        encoding="utf-8",
        env=ENV,
        timeout=seconds(60),
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_python_example_echoes_arguments(stack) -> None:
    """The Python example prints the echo of each argument, byte for byte, in order."""
    assert run_python_client(stack.url, *MESSAGES) == "".join(f"{m}\n" for m in MESSAGES)


def test_python_example_echoes_stdin_lines(stack) -> None:
    """Without arguments, each line of standard input is one message, echoed exactly."""
    stdin = "".join(f"{m}\n" for m in MESSAGES)
    assert run_python_client(stack.url, stdin=stdin) == stdin


def test_python_example_reconnects_after_server_restart(make_stack) -> None:
    """After the server restarts, the example reconnects and the next message is echoed."""
    private = make_stack()
    client = subprocess.Popen(
        [sys.executable, str(PYTHON_CLIENT), "--url", private.url, "--max-delay", "2"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        encoding="utf-8",
        env=ENV,
    )
    try:
        echoes = LineReader(client.stdout)
        client.stdin.write("before restart ⏮\n")
        client.stdin.flush()
        assert echoes.next_line() == "before restart ⏮\n"
        private.server.restart()
        client.stdin.write("after restart ⏭\n")
        client.stdin.flush()
        assert echoes.next_line(timeout=60) == "after restart ⏭\n"
        client.stdin.close()
        assert client.wait(timeout=seconds(30)) == 0
        status = client.stderr.read()
        assert "connection closed: " in status, status
        assert status.count("connected to ") == 2, status
    finally:
        client.kill()
        client.wait()


# The interactive client draws with terminal escapes (save/restore cursor, insert line).
TERMINAL_ESCAPE = re.compile(r"\x1b(?:\[[0-9;]*[A-Za-z]|[78])")


def received_lines(output: str) -> list[str]:
    """The messages `python -m websockets` printed as received ("< message")."""
    lines = TERMINAL_ESCAPE.sub("", output).replace("\r", "\n").split("\n")
    return [
        line.removeprefix("> ")[2:] for line in lines if line.removeprefix("> ").startswith("< ")
    ]


def test_cli_client_echoes(stack) -> None:
    """`python -m websockets <url>` sends each stdin line and prints its echo exactly."""
    messages = MESSAGES[:4]
    cli = subprocess.Popen(
        [sys.executable, "-m", "websockets", stack.url],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        encoding="utf-8",
        env=ENV,
    )
    try:
        output = LineReader(cli.stdout)
        assert output.next_line().startswith("Connected to ")
        for message in messages:
            cli.stdin.write(f"{message}\n")
        cli.stdin.flush()
        # It quits at end of input without waiting for echoes: close stdin once all arrived.
        until(
            lambda: len(received_lines("".join(output.text))) >= len(messages),
            "every echo printed by the CLI",
            timeout=30,
        )
        cli.stdin.close()
        assert cli.wait(timeout=seconds(30)) == 0
        assert received_lines("".join(output.text)) == messages
        assert "Connection closed: 1000 (OK)." in TERMINAL_ESCAPE.sub("", "".join(output.text))
    finally:
        cli.kill()
        cli.wait()


def node_command() -> list[str]:
    """Node with the WHATWG WebSocket: global from Node 22, behind a flag in Node 20."""
    node = shutil.which("node")
    if node is None:
        current().unavailable("Node.js (>= 20.10)", "to run the browser example")
    probe = [node, "-e", "process.exit(typeof WebSocket === 'function' ? 0 : 1)"]
    if subprocess.run(probe, check=False).returncode == 0:
        return [node]
    return [node, "--experimental-websocket", "--no-warnings"]


def test_browser_page_echoes_and_reconnects(stack) -> None:
    """The page's script echoes typed messages exactly; after the server closes it with
    1009 (a message over 1 MiB) it reconnects by itself and echoes again."""
    plan = {
        "messages": MESSAGES,
        "oversize": 2**20 + 1,
        "after": "after reconnect ✓",
        "timeout_ms": int(seconds(30) * 1000),
    }
    result = subprocess.run(
        [*node_command(), str(HARNESS), str(BROWSER_PAGE), stack.url, json.dumps(plan)],
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=seconds(90),
        check=False,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    report = json.loads(result.stdout)
    assert report["echoes"] == [*MESSAGES, "after reconnect ✓"]
    statuses = report["statuses"]
    closed = next(i for i, s in enumerate(statuses) if s.startswith("closed (1009"))
    assert statuses[closed + 1 :][-1] == f"connected to {stack.url}"


def test_broadcast_room_example_through_nginx(make_stack) -> None:
    """The room handler, mounted into the server as its compose.yaml does and named by
    WS_HANDLER, relays each message through NGINX to every member of the room."""
    private = make_stack(
        server_env={"WS_HANDLER": "examples.broadcast_room.room:handler"},
        server_volumes={str(ROOT / "examples"): "/app/examples"},
    )
    with connect(private.url) as alice, connect(private.url) as bob:
        # Bob's message reaches both: both are in the room.
        bob.send("bob joined")
        assert bob.recv(timeout=seconds(5)) == "bob joined"
        assert alice.recv(timeout=seconds(5)) == "bob joined"
        alice.send("hello bob ✓")
        assert bob.recv(timeout=seconds(5)) == "hello bob ✓"
        assert alice.recv(timeout=seconds(5)) == "hello bob ✓"
        bob.send(b"\x00\xffbinary")
        assert alice.recv(timeout=seconds(5)) == b"\x00\xffbinary"
    # Log lines reach `docker logs` a moment later (written together, up to 50 ms apart).
    until(
        private.server.events,
        "the room's connections and messages in the server log",
        10,
        accept=lambda es: {"connection_open", "message_received"} <= {e["event"] for e in es},
    )


def test_broadcast_room_image_from_the_server_image_through_nginx(make_stack, gateway_images):
    """examples/broadcast_room/Dockerfile builds FROM the server image; the room it adds is
    importable there and, named by WS_HANDLER, serves through NGINX."""
    tag = images.ensure_on_server(ROOT / "examples" / "broadcast_room", gateway_images["server"])
    env = client().images.get(tag).attrs["Config"]["Env"]
    assert "WS_HANDLER=broadcast_room:handler" in env
    # Compose passes WS_HANDLER through (empty by default), which replaces the image's own
    # value: set it, as docs/handlers.md tells compose users to.
    private = make_stack(server_image=tag, server_env={"WS_HANDLER": "broadcast_room:handler"})
    with connect(private.url) as alice, connect(private.url) as bob:
        bob.send("bob joined")
        assert bob.recv(timeout=seconds(5)) == "bob joined"
        assert alice.recv(timeout=seconds(5)) == "bob joined"
    started = private.server.events("server_started")
    assert started[0]["config"]["handler"] == "broadcast_room:handler"
