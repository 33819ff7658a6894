"""The hostile-clients attack, run as a program in each helper container (not imported).

Every attack at once, bounded in count and time, then the figures on ``PROBE {json}``
lines: slow readers and ping flooders (websockets' own clients, kept from reading at
all), aborted and unfinished handshakes (raw sockets; the upgrade requests come from
``stack.wire.handshake``, copied in beside this file). Its settings come from the
environment (stack/scenarios/hostile_clients.py sets them); it connects everything, says
so, waits for /tmp/go, attacks, says how far it got, and lets go at /tmp/stop or after
LIFETIME s.
"""

import asyncio
import itertools
import json
import os
import socket
import time
from collections import Counter

from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from stack.wire.handshake import new_key, request

E = os.environ
NAME, HOST, PORT = E["NAME"], E["HOST"], int(E["PORT"])
SLOW, PINGERS = int(E["SLOW"]), int(E["PINGERS"])
ABORTED, UNFINISHED = int(E["ABORTED"]), int(E["UNFINISHED"])
MESSAGE, PUSH_CAP, PINGS = int(E["MESSAGE"]), int(E["PUSH_CAP"]), int(E["PINGS"])
TRIES = int(E["TRIES"])
HELD, PLACE_WITHIN, LIFETIME = float(E["HELD"]), float(E["PLACE_WITHIN"]), float(E["LIFETIME"])
SEND_BUFFER = 64 * 1024  # bytes an attacker's socket queues (the kernel doubles it)
URL = f"ws://{HOST}:{PORT}/ws"
AUTHORITY = f"{HOST}:{PORT}"
# Resolved once: 300 lookups at once overwhelm Docker's DNS and the resolver's threads.
IP = socket.gethostbyname(HOST)
PAYLOAD = os.urandom(MESSAGE)
started = time.monotonic()
conns, sockets = [], []
numbers = itertools.count()


def out(**fields):
    print("PROBE " + json.dumps(fields), flush=True)


async def flood(ws):
    await ws.ping(next(numbers).to_bytes(8, "big") + b"p" * 117)  # 125 bytes: a ping's most
    await asyncio.sleep(0)  # ping() does not yield while it can write: let the others run


async def hostile(kind, n, push, cap, record):
    # Connect (a few tries: a busy gateway may refuse or time out), never read a byte,
    # push until the cap or the end; record[n] says how far it got.
    state = record[n]
    while True:
        state["tries"] += 1
        try:
            ws = await connect(
                URL,
                host=IP,
                port=PORT,
                proxy=None,
                compression=None,
                ping_interval=None,
                open_timeout=10,
                max_queue=1,
                additional_headers={"X-Request-ID": f"{NAME}-{kind}-{n}"},
            )
            break
        except InvalidStatus as e:
            failure = f"refused {e.response.status_code}"
        except Exception as e:
            failure = f"failed {type(e).__name__}"
        if state["tries"] >= TRIES or time.monotonic() - started > PLACE_WITHIN - 5:
            state["outcome"] = failure
            return
        await asyncio.sleep(0.5 * state["tries"])  # backoff before the next try
    ws.transport.pause_reading()
    # What it sends waits in its own kernel at most SEND_BUFFER: the gateway sees the same
    # attack (as fast as it takes it in), and the cores it shares with the gateway here
    # are not spent queueing megabytes of pings and frames that no one will read.
    sock = ws.transport.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER)
    conns.append(ws)
    state["outcome"] = "connected"
    await go.wait()
    state["outcome"], state["since"] = "pushing", time.monotonic()
    try:
        while state["pushed"] < cap:
            state["since"] = time.monotonic()
            await push(ws)
            state["pushed"] += 1
        state["outcome"] = "never held back"
    except ConnectionClosed:
        state["outcome"] = "closed while pushing"


def connected(record):
    # Connected, or given up.
    return all(r["outcome"] != "connecting" for r in record.values())


def in_place(record, now):
    # Pushed once or held back already, or ended.
    return all(
        r["outcome"] != "pushing" or r["pushed"] or now - r["since"] >= HELD
        for r in record.values()
    )


async def until(condition, limit, every=0.1):
    # condition() or limit s from now, polling
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if condition():
            return
        await asyncio.sleep(every)


def told(word):
    # The scenario's word to this helper: a file it creates in /tmp.
    return os.path.exists(f"/tmp/{word}")


def tally(record, now):
    outcomes = Counter(
        "held back" if r["outcome"] == "pushing" and now - r["since"] >= HELD else r["outcome"]
        for r in record.values()
    )
    return {
        "outcomes": dict(outcomes),
        "pushed": [r["pushed"] for r in record.values()],
        "tries": sum(r["tries"] for r in record.values()),
    }


async def aborted(n, gate):
    async with gate:
        _reader, writer = await asyncio.wait_for(asyncio.open_connection(IP, PORT), 5)
        writer.write(request("/ws", AUTHORITY, new_key(), {"X-Request-ID": f"{NAME}-aborted-{n}"}))
        await writer.drain()
        if n % 3 == 0:
            writer.transport.abort()
            return "sent, then RST"
        if n % 3 == 1:
            writer.close()
            return "sent, then FIN"
        writer.write_eof()  # still reading; dropped at the end
        sockets.append(writer)
        return "sent, then SHUT_WR"


async def unfinished(n, gate):
    # No request at all, or half of one; returns when the peer hung up, in s.
    async with gate:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(IP, PORT), 5)
    opened = time.monotonic()
    sockets.append(writer)
    if n % 2:
        whole = request("/ws", AUTHORITY, new_key(), {"X-Request-ID": f"{NAME}-unfinished-{n}"})
        writer.write(whole[: len(whole) // 2])
    try:
        while await reader.read(4096):
            pass
    except OSError:
        pass  # reset: hung up on all the same
    return time.monotonic() - opened


def outcomes(results):
    return dict(Counter(r if isinstance(r, str) else f"failed {type(r).__name__}" for r in results))


async def main():
    global go
    go = asyncio.Event()
    loop = asyncio.get_running_loop()
    slow, pings = (
        {n: {"outcome": "connecting", "pushed": 0, "tries": 0} for n in range(count)}
        for count in (SLOW, PINGERS)
    )
    tasks = [
        loop.create_task(hostile("slow", n, lambda ws: ws.send(PAYLOAD), PUSH_CAP, slow))
        for n in range(SLOW)
    ]
    tasks += [loop.create_task(hostile("ping", n, flood, PINGS, pings)) for n in range(PINGERS)]
    # First every connection, while the gateway is calm; then the attack, on the word.
    await until(lambda: connected(slow) and connected(pings), PLACE_WITHIN)
    now = time.monotonic()
    out(step="connected", name=NAME, t=now - started, slow=tally(slow, now), ping=tally(pings, now))
    await until(lambda: told("go"), LIFETIME, 0.05)
    go.set()
    attack = time.monotonic()
    gate, aborting = asyncio.Semaphore(100), asyncio.Semaphore(20)
    unfinished_tasks = [loop.create_task(unfinished(n, gate)) for n in range(UNFINISHED)]
    aborts = [loop.create_task(aborted(n, aborting)) for n in range(ABORTED)]
    await until(
        lambda: (
            all(t.done() for t in aborts)
            and in_place(slow, time.monotonic())
            and in_place(pings, time.monotonic())
        ),
        PLACE_WITHIN,
    )
    now = time.monotonic()
    out(
        step="attacking",
        name=NAME,
        t=now - attack,
        slow=tally(slow, now),
        ping=tally(pings, now),
        aborted=outcomes(
            [t.exception() or t.result() if t.done() else "in flight" for t in aborts]
        ),
        unfinished=outcomes(
            [t.exception() or "opened" if t.done() else "opened" for t in unfinished_tasks]
        ),
    )
    await until(lambda: told("stop"), LIFETIME - (time.monotonic() - started), 0.05)
    now = time.monotonic()
    dropped = [
        t.result() for t in unfinished_tasks if t.done() and not t.cancelled() and not t.exception()
    ]
    for ws in conns:
        ws.transport.abort()
    for writer in sockets:
        writer.transport.abort()
    for t in [*unfinished_tasks, *aborts, *tasks]:
        t.cancel()
    out(
        step="done",
        t=now - started,
        stopped_by_lifetime=not told("stop"),
        slow=tally(slow, now),
        ping=tally(pings, now),
        unfinished_dropped=sorted(round(s, 2) for s in dropped),
    )


if __name__ == "__main__":
    asyncio.run(main())
