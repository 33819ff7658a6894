"""8. Rate limit and connection caps: per client IP at NGINX, per server at the server."""

from __future__ import annotations

import asyncio
import json
import math
import time
from pathlib import Path

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidStatus

from stack import helper_containers
from stack.gateway import StackOptions
from stack.scenarios.base import Context, Scenario

RATE_PER_MINUTE = 100  # WS_RATE_LIMIT=100r/m (the default, set explicitly)
BURST = 20  # WS_RATE_BURST (the default)
CONN_CAP = 3  # WS_CONN_LIMIT_PER_IP: open WebSockets per client address at NGINX
MAX_CONNECTIONS = 4  # WS_MAX_CONNECTIONS at the server, whoever the clients are

OPTIONS = StackOptions(
    server_env={"WS_MAX_CONNECTIONS": str(MAX_CONNECTIONS)},
    nginx_env={
        "WS_RATE_LIMIT": f"{RATE_PER_MINUTE}r/m",
        "WS_RATE_BURST": str(BURST),
        "WS_RATE_LIMIT_STATUS": "429",
        "WS_CONN_LIMIT_PER_IP": str(CONN_CAP),
        "WS_CONN_LIMIT_STATUS": "429",
    },
)

# Runs in a one-off container on the edge network: a client with an address of its own.
PROBE = Path(__file__).parent / "programs" / "other_address_probe.py"


async def _handshake(url: str, request_id: str) -> tuple[ClientConnection | None, int]:
    try:
        ws = await connect(
            url,
            proxy=None,
            compression=None,
            open_timeout=5,
            additional_headers={"X-Request-ID": request_id},
        )
    except InvalidStatus as e:
        return None, e.response.status_code
    return ws, 101


def _access_log(logs: str) -> dict[str, dict]:
    """NGINX's JSON access log lines by request_id."""
    out = {}
    for line in logs.splitlines():
        if line.startswith("{"):
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                continue
            out[entry.get("request_id", "")] = entry
    return out


async def run(ctx: Context) -> None:
    await _rate_limit(ctx)
    code = await _another_address(ctx)
    ctx.check("the probe ended cleanly", code == 0, f"exit {code}")
    await _who_is_who(ctx)


async def _rate_limit(ctx: Context) -> None:
    """1. The rate limit, from the host's address."""
    ctx.step(
        f"handshakes from the host, one after the other, until NGINX refuses one"
        f" (WS_RATE_LIMIT={RATE_PER_MINUTE}r/m, WS_RATE_BURST={BURST}, nodelay)"
    )
    admitted, first_refusal = 0, None
    started = time.monotonic()
    for n in range(1, 5 * BURST):
        ws, status = await _handshake(ctx.stack.url, f"host-rate-{n}")
        if ws is not None:
            admitted += 1
            await ws.close()
            continue
        first_refusal = status
        break
    elapsed = time.monotonic() - started
    refill = math.ceil(elapsed * RATE_PER_MINUTE / 60)
    ctx.figure("handshakes admitted before the first refusal", admitted)
    ctx.figure("first refusal", f"{first_refusal} after {elapsed:.2f} s")
    ctx.check(
        f"past the burst, the next handshake from the same address gets 429 (admitted:"
        f" {BURST} burst + 1, +{refill} refilled at the rate meanwhile, -1 if the stack's"
        " readiness check still counts)",
        first_refusal == 429 and BURST <= admitted <= BURST + 1 + refill,
        f"{admitted} admitted, then {first_refusal}",
    )


async def _knock(url: str, tries: list[tuple[float, int]], enough: asyncio.Event) -> None:
    """Handshakes from the host until ``enough``, each (time, status) into ``tries``."""
    # Bounded on its own too: at most 600 knocks (a minute at the pacing below).
    for n in range(1, 601):
        if enough.is_set():
            break
        ws, status = await _handshake(url, f"host-knock-{n}")
        tries.append((time.time(), status))
        if ws is not None:
            await ws.close()
        await asyncio.sleep(0.1)  # pacing of the knocking loop


async def _another_address(ctx: Context) -> int | None:
    """2. and 3.: a client with its own address is served while the host is refused; the
    per-IP cap; the server's own cap. The probe's exit code (None: it did not exit)."""
    stack = ctx.stack
    ctx.step(
        "a client in a container on the edge network (its own address) connects while"
        " the host keeps knocking"
    )
    host_tries: list[tuple[float, int]] = []
    enough = asyncio.Event()
    knocker = asyncio.get_running_loop().create_task(_knock(stack.url, host_tries, enough))
    probe = await ctx.blocking(
        helper_containers.program,
        stack,
        stack.edge,
        PROBE,
        "probe-other-ip",
        {"URL": "ws://nginx:8080/ws", "CAP": str(CONN_CAP)},
    )
    try:
        await ctx.expect(
            lambda: _has_step(ctx, probe, "holding"),
            f"the probe connected, then opened {CONN_CAP} + 1 connections",
            30,
        )
        enough.set()
        await knocker
        await _check_probe(ctx, probe, host_tries)
        await _server_cap(ctx)
    finally:
        enough.set()
        await asyncio.gather(knocker, return_exceptions=True)
        await ctx.blocking(probe.exec, ["touch", "/tmp/release"])
        code = await ctx.blocking(probe.wait_exit, 30)
        await ctx.blocking(probe.remove)
    return code


async def _check_probe(
    ctx: Context, probe: helper_containers.Helper, host_tries: list[tuple[float, int]]
) -> None:
    """The probe was served while the host was refused; its connections met the per-IP cap."""
    results = await ctx.blocking(probe.results)
    served = next(r for r in results if r["step"] == "served")
    probe_ip = probe.ip(ctx.stack.edge)
    window = [s for t, s in host_tries if t <= served["t"]]
    ctx.check(
        "a client from another address on the same network is served (101 and echo)"
        " while the host's handshakes are refused with 429",
        served["status"] == 101 and served["echo"] and 429 in window,
        f"probe {probe_ip}: {served['status']}; host meanwhile: {window.count(429)} x 429,"
        f" {window.count(101)} x 101 (the rate lets one through every"
        f" {60 / RATE_PER_MINUTE:.1f} s)",
    )
    caps = [r for r in results if r["step"] == "cap"]
    ctx.figure("probe's connections 1..N+1", " ".join(str(r["status"]) for r in caps))
    ctx.check(
        f"the per-IP connection cap: {CONN_CAP} open WebSockets admitted, the next one gets 429",
        [r["status"] for r in caps] == [101] * CONN_CAP + [429],
    )


async def _server_cap(ctx: Context) -> None:
    """3. The server's own cap: WS_MAX_CONNECTIONS, whatever the address."""
    ctx.step(
        f"the server holds {CONN_CAP} of the probe's; the host opens more"
        f" (WS_MAX_CONNECTIONS={MAX_CONNECTIONS})"
    )
    answers: list[int] = []
    held: list[ClientConnection] = []

    async def next_answer() -> bool:
        # Past the rate limit (429) the host waits for its next slot, as a client would.
        ws, status = await _handshake(ctx.stack.url, f"host-cap-{len(answers)}")
        if status == 429:
            return False
        answers.append(status)
        if ws is not None:
            held.append(ws)
        return True

    await ctx.expect(next_answer, "the host's next handshake past the rate limit", 10, poll=0.3)
    await ctx.expect(next_answer, "and the one after it", 10, poll=0.3)
    ctx.figure("host's handshakes with the server at its cap", " ".join(map(str, answers)))
    metrics = await ctx.metrics()
    active = metrics.value("ws_connections_active")
    rejected = metrics.flat("ws_connections_rejected_total")
    ctx.check(
        f"the server admits {MAX_CONNECTIONS} connections in all and answers the next"
        " with 503 (through NGINX)",
        answers == [101, 503] and active == MAX_CONNECTIONS,
        f"gauge {active:g}, {rejected}",
    )
    for ws in held:
        await ws.close()


async def _who_is_who(ctx: Context) -> None:
    """The addresses NGINX saw, and why each refusal happened."""
    logs = await ctx.blocking(ctx.stack.nginx.logs)
    access = _access_log(logs)
    host_addr = access.get("host-rate-1", {}).get("remote_addr")
    probe_addr = access.get("probe-served", {}).get("remote_addr")
    ctx.check(
        "NGINX saw two different client addresses (host via the edge gateway, probe container)",
        host_addr is not None and probe_addr is not None and host_addr != probe_addr,
        f"host {host_addr}, probe {probe_addr}",
    )
    ctx.check(
        "NGINX's error log names both limits: the handshake rate and the connection cap",
        "limiting requests" in logs and "limiting connections" in logs,
    )


async def _has_step(ctx: Context, probe: helper_containers.Helper, step: str) -> bool:
    return any(r.get("step") == step for r in await ctx.blocking(probe.results))


SCENARIO = Scenario(
    name="limits",
    number=8,
    title="Rate limit and connection caps",
    proves=(
        f"Past the burst ({BURST} at {RATE_PER_MINUTE}r/m), NGINX refuses the next handshake"
        " from one address with 429 while a client from another address on the same network"
        f" is served; an address with {CONN_CAP} open WebSockets (WS_CONN_LIMIT_PER_IP) gets"
        f" 429 for the next; the server itself admits WS_MAX_CONNECTIONS={MAX_CONNECTIONS}"
        " in all and answers the next with 503."
    ),
    run=run,
    stacks={"main": OPTIONS},
    deadline=90,
)
