"""Which Host headers NGINX serves: by default any (clients use whatever name or address
reaches the machine); with SERVER_NAMES as an allow-list, others get UNKNOWN_HOST_STATUS."""

from __future__ import annotations

from stack import compose_file
from stack.waits import seconds
from stack.wire.handshake import answer_head


def exchange(host: str, port: int, host_header: str) -> bytes:
    """Send a WebSocket upgrade for /ws with ``host_header``; all NGINX answers until it
    closes or sends the end of a response head (b"" when it closes without answering)."""
    request = (
        "GET /ws HTTP/1.1\r\n"
        f"Host: {host_header}\r\n"
        "Upgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    return answer_head((host, port), request.encode(), seconds(10))


def test_the_default_serves_any_host(make_stack) -> None:
    """With the compose file's SERVER_NAMES, a name or address NGINX was never told about
    gets 101, as a client on the LAN using the machine's address or its own DNS name does."""
    default = compose_file.environment("nginx")["SERVER_NAMES"]
    assert default == "*"
    private = make_stack(nginx_env={"SERVER_NAMES": default})
    for name in ("gateway.lan.example", "192.0.2.200:8080", "localhost"):
        answer = exchange(private.host, private.port, name)
        assert answer.startswith(b"HTTP/1.1 101 "), (name, answer)


def test_an_allow_list_closes_other_hosts_without_an_answer(stack) -> None:
    """SERVER_NAMES as a list (hardening): a listed Host gets 101, any other Host is
    closed without a response (444), and never reaches the server."""
    assert exchange(stack.host, stack.port, "localhost").startswith(b"HTTP/1.1 101 ")
    assert exchange(stack.host, stack.port, "evil.example") == b""
