"""The limits scenario's client with an address of its own, run in a helper container.

It connects through NGINX from the edge network, echoes once, then opens CAP + 1
connections and holds those admitted until /tmp/release (60 s at most), reporting each
step on a ``PROBE {json}`` line (stack/scenarios/limits.py reads them).
"""

import asyncio
import json
import os
import time

from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

URL, CAP = os.environ["URL"], int(os.environ["CAP"])


def out(**fields):
    print("PROBE " + json.dumps(fields), flush=True)


async def handshake(request_id):
    try:
        ws = await connect(
            URL, proxy=None, open_timeout=5, additional_headers={"X-Request-ID": request_id}
        )
        return ws, 101
    except InvalidStatus as e:
        return None, e.response.status_code


def released():
    # The scenario's word to let go: a file it creates.
    return os.path.exists("/tmp/release")


async def main():
    ws, status = await handshake("probe-served")
    echo = False
    if ws is not None:
        await ws.send("from another address")
        echo = await ws.recv() == "from another address"
        await ws.close()
    out(step="served", status=status, echo=echo, t=time.time())
    held = []
    for n in range(1, CAP + 2):
        ws, status = await handshake(f"probe-cap-{n}")
        out(step="cap", n=n, status=status)
        if ws is not None:
            held.append(ws)
    out(step="holding", held=len(held))
    deadline = time.time() + 60
    while time.time() < deadline:
        if released():
            break
        await asyncio.sleep(0.05)
    for ws in held:
        await ws.close()
    out(step="released")


if __name__ == "__main__":
    asyncio.run(main())
