"""Echo client for websocket-gateway: send messages, print their echoes, survive restarts.

    python examples/python_client.py hello "two words"        # sends two messages
    printf 'one\\ntwo\\n' | python examples/python_client.py  # one message per stdin line
    python examples/python_client.py --url ws://gateway.example:8080/ws hello

Each echo is printed on stdout exactly as received, one per line; status goes to stderr.
When the connection drops (server restart, NGINX reload, network trouble, 429/502/503 on
the handshake) the client reconnects with exponential backoff and jitter, and re-sends the
message whose echo had not arrived yet. It needs only `pip install websockets`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import sys
import threading
from collections.abc import AsyncIterator

from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

# Close codes that refuse the message itself: sending it again would only repeat them.
REFUSED = {1007: "not valid UTF-8", 1009: "larger than the server's limit (1 MiB)"}


def status(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


async def read_messages(words: list[str]) -> AsyncIterator[str]:
    """The command-line messages, or else one message per line of standard input."""
    if words:
        for word in words:
            yield word
        return
    # A daemon thread reads stdin, so Ctrl+C never waits for a line that may not come.
    loop = asyncio.get_running_loop()
    lines: asyncio.Queue[str | None] = asyncio.Queue()

    def reader() -> None:
        with contextlib.suppress(RuntimeError):  # the loop closed first: nothing to do
            for line in sys.stdin:
                loop.call_soon_threadsafe(lines.put_nowait, line.rstrip("\r\n"))
            loop.call_soon_threadsafe(lines.put_nowait, None)

    threading.Thread(target=reader, daemon=True).start()
    while (line := await lines.get()) is not None:
        yield line


async def echo(url: str, messages: AsyncIterator[str], max_delay: float) -> int:
    """Send every message and print its echo; reconnect until all are echoed."""
    pending: str | None = None  # sent (or about to be) but not echoed yet
    failures = 0
    while True:
        try:
            async with connect(url, open_timeout=10, max_size=2**20) as ws:
                status(f"connected to {url}")
                failures = 0
                while True:
                    if pending is None:
                        pending = await anext(messages, None)
                        if pending is None:
                            return 0  # every message echoed
                    await ws.send(pending)
                    reply = await ws.recv()
                    if reply != pending:
                        status(f"error: sent {pending!r} but the echo was {reply!r}")
                        return 1
                    print(reply, flush=True)
                    pending = None
        except InvalidURI as e:
            status(f"error: {e}")
            return 2
        except ConnectionClosed as e:
            code = e.rcvd.code if e.rcvd else 1006
            reason = e.rcvd.reason if e.rcvd else "no close frame"
            status(f"connection closed: {code} {reason}".rstrip())
            if code in REFUSED and pending is not None:
                status(f"dropping a message the server refused: {REFUSED[code]}")
                pending = None
        except (OSError, TimeoutError, InvalidHandshake) as e:
            status(f"cannot connect: {e}")
        # Full jitter: a random delay up to 0.5 s, 1 s, 2 s ... capped at max_delay, so
        # clients dropped together do not all come back at the same instant.
        failures = min(failures + 1, 16)
        delay = random.uniform(0, min(max_delay, 0.5 * 2 ** (failures - 1)))
        status(f"reconnecting in {delay:.1f} s")
        await asyncio.sleep(delay)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("messages", nargs="*", help="messages to send (default: stdin lines)")
    parser.add_argument("--url", default="ws://localhost:8080/ws", help="%(default)s")
    parser.add_argument(
        "--max-delay", type=float, default=30.0, help="longest wait between reconnects, s"
    )
    args = parser.parse_args()
    try:
        return asyncio.run(echo(args.url, read_messages(args.messages), args.max_delay))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
