"""One echo exchange on one connection, run here or inside a helper container.

The same code runs both ways: in the test process towards NGINX's published port, and as a
script (``python3 echo_exchange.py spec.json``, one JSON line out) in a helper container on
the backend network towards the server, which the test process may not reach. It needs only
the standard library and websockets (both in the server image).
"""

from __future__ import annotations

import base64
import json
import sys
from typing import Any

from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

DEFAULT_MAX_SIZE = 2**20  # websockets' own default


def encode(message: str | bytes) -> dict[str, str]:
    """A message as JSON, keeping its frame type: {"text": ...} or {"binary": base64}."""
    if isinstance(message, str):
        return {"text": message}
    return {"binary": base64.b64encode(message).decode()}


def decode(encoded: dict[str, str]) -> str | bytes:
    return encoded["text"] if "text" in encoded else base64.b64decode(encoded["binary"])


def exchange(
    url: str,
    messages: list[str | bytes],
    max_size: int = DEFAULT_MAX_SIZE,
    timeout: float = 10,
) -> dict[str, Any]:
    """Send every message, then receive as many answers (each within ``timeout`` s).

    Returns {"echoed": [answers so far], "close_code": the code the peer closed with, or
    None while the connection stayed open}.
    """
    echoed: list[str | bytes] = []
    close_code = None
    with connect(url, open_timeout=10, max_size=max_size) as ws:
        for message in messages:
            ws.send(message)
        try:
            for _ in messages:
                echoed.append(ws.recv(timeout=timeout))
        except ConnectionClosed as e:
            close_code = e.rcvd.code if e.rcvd is not None else None
    return {"echoed": echoed, "close_code": close_code}


def main(spec_path: str) -> None:
    with open(spec_path) as f:
        spec = json.load(f)
    result = exchange(
        spec["url"], [decode(m) for m in spec["messages"]], spec["max_size"], spec["timeout"]
    )
    result["echoed"] = [encode(m) for m in result["echoed"]]
    print(json.dumps(result))


if __name__ == "__main__":
    main(sys.argv[1])
