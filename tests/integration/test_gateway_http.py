"""Plain HTTP on the gateway: health, readiness, metrics, and what /ws says to non-WebSockets.

NGINX is asked through its published port; the server, which publishes none, from inside
its container (``stack.server_get``).
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request

from stack import prometheus
from stack.waits import until


def get(url: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def test_nginx_answers_its_own_health_check(stack) -> None:
    """NGINX's /healthz is 200 JSON, without a version in the Server header."""
    status, headers, body = get(f"{stack.http}/healthz")
    assert status == 200
    assert json.loads(body)
    assert "nginx/" not in headers.get("Server", "")  # server_tokens off: no version


def test_server_health_and_readiness_are_200_json(stack) -> None:
    """The server's /healthz and /readyz answer 200 with JSON while it accepts connections."""
    for path in ("/healthz", "/readyz"):
        status, _, body = stack.server_get(path)
        assert status == 200, path
        assert isinstance(json.loads(body), dict)


# Run inside the server container: listeners that answer the health check badly, made
# before the check runs (nothing to wait for), then the check against each.
_BAD_HEALTH = """
import os, socket, subprocess, threading, time
silent, wrong = socket.create_server(("127.0.0.1", 0)), socket.create_server(("127.0.0.1", 0))
def answer():
    peer, _ = wrong.accept()
    peer.recv(4096)
    peer.sendall(b"HTTP/1.1 503 Service Unavailable\\r\\nContent-Length: 0\\r\\n\\r\\n")
threading.Thread(target=answer, daemon=True).start()
for name, port in (("nothing", 1), ("silent", silent.getsockname()[1]),
                   ("503", wrong.getsockname()[1])):
    started = time.monotonic()
    env = {**os.environ, "WS_PORT": str(port)}
    code = subprocess.run(["/app/healthcheck.sh"], env=env, capture_output=True).returncode
    print(name, code, round(time.monotonic() - started, 1))
"""


def test_server_health_check_passes_on_200_only(stack) -> None:
    """The image's HEALTHCHECK script: 0 while /healthz answers 200; otherwise non-zero, and
    within Docker's 3 s timeout also when a listener never answers."""
    assert stack.server.exec(["/app/healthcheck.sh"]) == (0, "")
    code, output = stack.server.exec(["python3", "-c", _BAD_HEALTH])
    assert code == 0, output
    results = {name: (int(rc), float(s)) for name, rc, s in map(str.split, output.splitlines())}
    assert set(results) == {"nothing", "silent", "503"}, output
    assert all(rc != 0 for rc, _ in results.values()), output
    assert results["silent"][1] < 3.0, output


def test_server_metrics_are_prometheus_text(stack) -> None:
    """/metrics is Prometheus text format with HELP and TYPE lines."""
    status, headers, body = stack.server_get("/metrics")
    assert status == 200
    assert headers["Content-Type"].startswith("text/plain")
    samples = prometheus.parse(body.decode())
    assert samples.types and all(samples.help.values())
    assert "unknown" not in samples.types.values()


def test_plain_http_request_to_ws_gets_426_through_nginx_and_direct(stack) -> None:
    """A GET /ws without the WebSocket upgrade is told 426 Upgrade Required, both ways."""
    answers = {"nginx": get(f"{stack.http}/ws"), "direct": stack.server_get("/ws")}
    for way, (status, _, body) in answers.items():
        assert status == 426, way
        assert body


def test_unknown_path_is_answered_by_nginx_without_reaching_the_server(stack) -> None:
    """NGINX answers 404 for a path it does not route, and the server never sees it."""
    marker = "/no-such-path-7f3a"
    status, _, _ = get(f"{stack.http}{marker}")
    assert status == 404
    # Then a request the server does log (426 for /ws without Upgrade): lines are written in
    # order, so once its line is in the log, one about the marker would be there too.
    later = "later-7f3a"
    assert get(f"{stack.http}/ws", {"X-Request-ID": later})[0] == 426
    logs = until(
        stack.server.logs,
        "the later request in the server log",
        10,
        accept=lambda text: later in text,
    )
    assert marker not in logs
