"""Pieces several scenarios share: client accounting, tallies, NGINX's processes."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

from stack.echo_client.fleet import Fleet
from stack.echo_client.reconnecting import Session
from stack.gateway import GatewayStack
from stack.scenarios.base import Context


def account(ctx: Context, fleet: Fleet, *, failures_expected: bool = True) -> bool:
    """Check the ledger of every client after they stopped: nothing lost silently.

    Every message must have come back intact (resent after a reconnect if need be), or
    have been given up on and reported with the reason. None corrupted, none pending, none
    without echo on a live connection, no echo that matches nothing (a late duplicate of
    a resent message is counted, not an error). ``failures_expected=False``: none given up.
    """
    totals = fleet.totals()
    ctx.figure("messages sent", totals["sent"])
    ctx.figure("messages echoed intact", totals["echoed"])
    ctx.figure("messages resent after a reconnect", totals["resent"])
    ctx.figure("late duplicate echoes (recognised)", totals["duplicates"])
    ctx.figure("messages failed: given up, reported", totals["failed"])
    failed = fleet.failed_messages()
    reasons = Counter(_reason_kind(m.reason) for m in failed)
    if reasons:
        ctx.note("failures by reason: " + ", ".join(f"{r}: {n}" for r, n in reasons.items()))
    ok = ctx.check(
        "every message accounted for: echoed intact or given up and reported",
        totals["echoed"] + totals["failed"] == totals["sent"]
        and totals["pending"] == 0
        and totals["corrupted"] == 0
        and totals["lost_at_stop"] == 0
        and totals["stray"] == 0
        and all(m.reason for m in failed),
        ", ".join(f"{k}={v}" for k, v in totals.items()),
    )
    if not failures_expected:
        ok &= ctx.check(
            "no message lost: every one in flight at a drop was resent and echoed",
            totals["failed"] == 0 and totals["echoed"] == totals["sent"],
            f"failed={totals['failed']}, resent={totals['resent']}",
        )
    return ok


def _reason_kind(reason: str) -> str:
    """'connection broke before its echo: close 1006 by network (session 1)' -> the middle."""
    head = reason.split(": ", 1)[-1]
    return head.rsplit(" (session", 1)[0]


def codes(sessions: Iterable[Session]) -> str:
    """A tally of close codes and who closed, e.g. '1006/network x50'."""
    tally = Counter(f"{s.code}/{s.closed_by}" for s in sessions if not s.open)
    return ", ".join(f"{k} x{n}" for k, n in sorted(tally.items())) or "none"


def spread(values: list[float]) -> str:
    """min / median / max of ``values`` in seconds."""
    if not values:
        return "n/a"
    ordered = sorted(values)
    return (
        f"min {ordered[0]:.2f} s, median {ordered[len(ordered) // 2]:.2f} s,"
        f" max {ordered[-1]:.2f} s"
    )


# Every process of a container as "pid title" lines (NGINX images may have no ps).
_PROCESSES = (
    'for p in /proc/[0-9]*; do printf "%s %s\\n" "${p#/proc/}"'
    ' "$(tr "\\0" " " < "$p/cmdline")"; done'
)


def nginx_workers(stack: GatewayStack) -> dict[int, str]:
    """NGINX worker processes in the container: {pid: title} (blocking: Docker exec)."""
    _, out = stack.nginx.exec(["sh", "-c", _PROCESSES + " 2>/dev/null; true"])
    workers = {}
    for line in out.splitlines():
        pid, _, title = line.partition(" ")
        if "nginx: worker process" in title and pid.isdigit():
            workers[int(pid)] = title.strip()
    return workers


def nginx_master_pid_started(stack: GatewayStack) -> tuple[str, str]:
    """(container id, start time) of the NGINX container: unchanged means not restarted."""
    attrs = stack.nginx.inspect()
    return attrs["Id"], attrs["State"]["StartedAt"]
