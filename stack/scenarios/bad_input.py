"""6. Bad input: each malformed connection is closed as RFC 6455 says; others don't notice."""

from __future__ import annotations

import asyncio
import time
import uuid
from urllib.parse import urlsplit

from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from stack.echo_client.reconnecting import ReconnectingClient
from stack.gateway import StackOptions
from stack.scenarios.base import Context, Scenario
from stack.waits import seconds
from stack.wire.frames import OP_TEXT, encode
from stack.wire.raw import RawWebSocket

HEADER_TIMEOUT = 2  # CLIENT_HEADER_TIMEOUT: NGINX drops an unfinished request header after it
MAX_MESSAGE = 2**20  # WS_MAX_MESSAGE_BYTES (default)

OPTIONS = StackOptions(nginx_env={"CLIENT_HEADER_TIMEOUT": f"{HEADER_TIMEOUT}s"})

# name -> (what is sent, frame bytes, the close code RFC 6455 prescribes)
FRAMES = {
    "reserved-opcode": (
        "a frame with reserved opcode 0x3 (malformed)",
        encode(0x3, b"what am I?"),
        1002,
    ),
    "invalid-utf8": ("a text frame that is not UTF-8", encode(OP_TEXT, b"caf\xc3(\xff\xfe"), 1007),
    "unmasked": ("an unmasked client frame", encode(OP_TEXT, b"no mask", mask=False), 1002),
}


async def _bad_frame(host: str, port: int, request_id: str, data: bytes) -> tuple:
    ws = await RawWebSocket.open(host, port, request_id=request_id)
    try:
        if ws.status != 101:
            return None, f"handshake answered {ws.status}", False
        await ws.send(data)
        code, reason = await ws.read_close(within=5)
        return code, reason, await ws.wait_eof(5)
    finally:
        await ws.close()


async def _too_big(url: str, request_id: str) -> tuple:
    """A real client sends a message one byte over the limit."""
    async with connect(
        url,
        proxy=None,
        compression=None,
        open_timeout=5,
        additional_headers={"X-Request-ID": request_id},
    ) as ws:
        try:
            await ws.send("x" * (MAX_MESSAGE + 1))
            await asyncio.wait_for(ws.recv(), 10)
        except ConnectionClosed:
            pass
        await asyncio.wait_for(ws.wait_closed(), 5)
        rcvd = ws.protocol.close_rcvd
        return (rcvd.code if rcvd else None), (rcvd.reason if rcvd else ""), True


async def _slowloris(host: str, port: int) -> tuple[float, bytes, str]:
    """Send half a request header and never finish it; when and how does NGINX hang up?"""
    reader, writer = await asyncio.open_connection(host, port)
    started = time.monotonic()
    writer.write(b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n")
    await writer.drain()
    got, how = b"", "EOF"
    try:
        while chunk := await asyncio.wait_for(reader.read(4096), HEADER_TIMEOUT + 10):
            got += chunk
    except (ConnectionError, OSError) as e:
        how = type(e).__name__
    except TimeoutError:
        how = "still open"
    finally:
        writer.close()
    return time.monotonic() - started, got, how


# The close code each bad WebSocket must get, by name.
EXPECTED = {**{name: code for name, (_, _, code) in FRAMES.items()}, "too-big": 1009}


async def run(ctx: Context) -> None:
    stack = ctx.stack
    tag = uuid.uuid4().hex[:6]
    ids = {name: f"bad-{name}-{tag}" for name in EXPECTED}
    healthy = ReconnectingClient(stack.url, name="healthy", interval=0.02, window=4)
    try:
        ctx.step("starting a healthy client that echoes all along")
        healthy.start()
        await ctx.expect(lambda: healthy.ledger.echoed >= 10, "the healthy client echoes", 10)
        echoed_before = healthy.ledger.echoed
        accepted_before = (await ctx.metrics()).value("ws_connections_total")
        await _send_bad_input(ctx, ids)
        ctx.check(
            "the healthy client kept echoing without an error meanwhile",
            healthy.connected
            and len(healthy.sessions) == 1
            and not healthy.handshake_failures
            and healthy.ledger.failed == 0
            and healthy.ledger.echoed > echoed_before,
            f"{healthy.ledger.echoed - echoed_before} echoes during the bad input,"
            f" {len(healthy.sessions)} connection(s)",
        )
        await _check_server_saw(ctx, ids, accepted_before)
    finally:
        ctx.step("stopping the healthy client")
        await healthy.stop()
    ctx.check(
        "the healthy client's messages all came back intact",
        healthy.ledger.summary()["echoed"] == healthy.ledger.sent,
        str(healthy.ledger.summary()),
    )


async def _send_bad_input(ctx: Context, ids: dict[str, str]) -> None:
    """Every bad input at once, each on its connection through NGINX; how each ended."""
    nginx = urlsplit(ctx.stack.url)
    ctx.step("sending bad input on separate connections, all at once, through NGINX")
    for name, (what, _, code) in FRAMES.items():
        ctx.note(f"{name}: {what} (expect close {code})")
    ctx.note(f"too-big: a message of {MAX_MESSAGE + 1} bytes (expect close 1009)")
    ctx.note(
        f"slowloris: a request header never finished (expect NGINX to hang up"
        f" after CLIENT_HEADER_TIMEOUT={HEADER_TIMEOUT}s)"
    )
    results = await asyncio.gather(
        *(
            _bad_frame(nginx.hostname, nginx.port, ids[name], data)
            for name, (_, data, _) in FRAMES.items()
        ),
        _too_big(ctx.stack.url, ids["too-big"]),
        _slowloris(nginx.hostname, nginx.port),
        return_exceptions=True,
    )
    for (name, code), result in zip(EXPECTED.items(), results, strict=False):
        if isinstance(result, BaseException):
            ctx.check(f"{name}: closed with {code}", False, repr(result))
            continue
        got, reason, eof = result
        ctx.check(
            f"{name}: the server closed it with {code}, then the TCP connection",
            got == code and eof,
            f"close {got} {reason!r}, TCP closed: {eof}",
        )
    slow = results[-1]
    if isinstance(slow, BaseException):
        ctx.check("slowloris: NGINX hung up", False, repr(slow))
        return
    took, got, how = slow
    ctx.figure("slowloris connection dropped by NGINX after", took, "s")
    ctx.check(
        f"slowloris: NGINX dropped the unfinished handshake after its header timeout"
        f" ({HEADER_TIMEOUT} s), without answering",
        how != "still open" and HEADER_TIMEOUT - 0.5 <= took <= HEADER_TIMEOUT + seconds(3),
        f"{how} after {took:.2f} s, {len(got)} bytes received",
    )


async def _check_server_saw(ctx: Context, ids: dict[str, str], accepted_before: float) -> None:
    """The server logged each bad connection once, accepted no more, logged no ERROR."""
    closed = await ctx.server_events(event="connection_closed")
    for name, code in EXPECTED.items():
        mine = [e for e in closed if e.get("request_id") == ids[name]]
        ctx.check(
            f"the server logged {name} once, with code {code}",
            len(mine) == 1 and mine[0].get("code") == code,
            "; ".join(
                f"{e.get('level')} code={e.get('code')} error={e.get('error')!r}" for e in mine
            )
            or "no log line",
        )
    metrics = await ctx.metrics()
    accepted = metrics.value("ws_connections_total") - accepted_before
    ctx.check(
        "the unfinished handshake never reached the server (it accepted only the 4 bad WebSockets)",
        accepted == len(EXPECTED),
        f"{accepted:g} accepted",
    )
    events = await ctx.server_events()
    ctx.check(
        "no ERROR line in the server's log",
        not [e for e in events if e.get("level") == "ERROR"],
    )
    ctx.note(
        "server error counters: "
        + ", ".join(f"{labels['kind']}={v:g}" for labels, v in metrics.labelled("ws_errors_total"))
    )


SCENARIO = Scenario(
    name="bad-input",
    number=6,
    title="Bad input on raw sockets",
    proves=(
        "A frame with a reserved opcode and an unmasked client frame are closed with 1002,"
        " invalid UTF-8 with 1007, a message of 1 MiB + 1 byte with 1009, each followed by"
        " the TCP close; NGINX drops a never-finished handshake after its header timeout"
        " without bothering the server; a healthy client on the same gateway keeps echoing"
        " without a single error, and the server logs each bad connection exactly once."
    ),
    run=run,
    stacks={"main": OPTIONS},
    deadline=60,
)
