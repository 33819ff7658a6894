"""The client's opening handshake (RFC 6455 section 4.1), by hand.

key = new_key()
writer.write(request("/ws", "127.0.0.1:8080", key))
head = await reader.readuntil(b"\\r\\n\\r\\n")
check_response(head, key)                # HandshakeError unless a valid 101
"""

from __future__ import annotations

import base64
import hashlib
import os
import socket
from collections.abc import Mapping

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


class HandshakeError(Exception):
    """The server did not switch protocols; ``status`` is its HTTP status (0: no answer)."""

    def __init__(self, status: int, detail: str = "") -> None:
        super().__init__(f"HTTP {status} {detail}".strip())
        self.status = status


def new_key() -> bytes:
    """A fresh Sec-WebSocket-Key: 16 random bytes in base64."""
    return base64.b64encode(os.urandom(16))


def accept_for(key: bytes) -> bytes:
    """The Sec-WebSocket-Accept a server must answer to ``key``."""
    return base64.b64encode(hashlib.sha1(key + GUID).digest())


def request(path: str, host: str, key: bytes, headers: Mapping[str, str] | None = None) -> bytes:
    """The upgrade request for ``path`` on ``host`` (the Host header), with extra ``headers``."""
    lines = [
        f"GET {path} HTTP/1.1",
        f"Host: {host}",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Key: {key.decode()}",
        "Sec-WebSocket-Version: 13",
        *(f"{name}: {value}" for name, value in (headers or {}).items()),
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def parse_response(head: bytes) -> tuple[int, dict[bytes, bytes]]:
    """(status, headers with lower-case names) of a response head; status 0 if unreadable."""
    status_line, *lines = head.rstrip(b"\r\n").split(b"\r\n")
    parts = status_line.split(b" ", 2)
    status = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0
    headers = {}
    for line in lines:
        name, _, value = line.partition(b":")
        headers[name.strip().lower()] = value.strip()
    return status, headers


def check_response(head: bytes, key: bytes) -> int:
    """The status of a valid 101 answer to ``key``; HandshakeError for anything else."""
    status, headers = parse_response(head)
    if status != 101:
        raise HandshakeError(status, "instead of 101")
    if headers.get(b"sec-websocket-accept") != accept_for(key):
        raise HandshakeError(status, "with a wrong Sec-WebSocket-Accept")
    return status


def answer_head(address: tuple[str, int], request: bytes, timeout: float) -> bytes:
    """Send ``request`` (bytes as they are, valid or not) on a new TCP connection; what
    comes back up to the end of a response head, or all of it if the peer closes first
    (b"" when it closes without answering)."""
    with socket.create_connection(address, timeout=timeout) as sock:
        sock.sendall(request)
        answer = b""
        while b"\r\n\r\n" not in answer:
            chunk = sock.recv(65536)
            if not chunk:
                break
            answer += chunk
        return answer
