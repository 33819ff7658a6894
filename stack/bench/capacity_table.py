"""The capacity run's table in docs/benchmarks.md (section "100,000 connections"),
between its markers, written by a run of 100,000 or more."""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

DOCS = Path(__file__).resolve().parents[2] / "docs" / "benchmarks.md"
DOCS_BEGIN, DOCS_END = "<!-- capacity-100k -->", "<!-- /capacity-100k -->"


def docs_section(result: dict[str, Any]) -> str:
    """The capacity run as the table of docs/benchmarks.md's "100,000 connections"."""
    mem, held = result["memory"], result["held"]
    beyond = result.get("beyond") or {}
    total = mem["server"] + mem["nginx"]
    opening = sum(step["open_seconds"] for step in result["steps"])
    rates, before = [], 0
    for step in result["steps"]:
        rates.append((step["connections"] - before) / max(step["open_seconds"], 1e-9))
        before = step["connections"]
    fastest, last = max(rates), rates[-1]
    rows = [
        ("setup", result["setup"]),
        (
            "connections",
            f"{held:,} of {result['target']:,} held {result['hold_seconds']:.0f} s; "
            f"{held - result['unpinged']:,} answered the heartbeat in that time "
            f"({result['pings_during_hold']:,} pings), {result['lost_during_hold']:,} lost; "
            f"sample {result['sample_ok']:,} of "
            f"{result['sample_ok'] + result['sample_failed']:,} echoed intact",
        ),
        (
            "server memory (cgroup)",
            f"{mem['server'] / 2**20:,.0f} MiB; "
            f"{result['server_bytes_per_connection'] / 1024:.1f} KiB per connection",
        ),
        (
            "NGINX memory (cgroup)",
            f"{mem['nginx'] / 2**20:,.0f} MiB; "
            f"{result['nginx_bytes_per_connection'] / 1024:.1f} KiB per connection",
        ),
        (
            "server + NGINX",
            f"{total / 2**30:.2f} GiB ({total / max(1, held) / 1024:.1f} KiB per connection)",
        ),
        (
            "time to ramp",
            f"{result['ramp_seconds']:.0f} s in all, memory read after every "
            f"{result['steps'][0]['connections']:,}; handshakes alone {opening:.0f} s "
            f"({result['reached'] / max(opening, 1e-9):,.0f} new WebSockets/s; fastest "
            f"step {fastest:,.0f}/s, last {last:,.0f}/s)",
        ),
        ("CPU per new WebSocket", _cpu_per_websocket(result["steps"])),
        ("first limit above the target", beyond.get("first_limit", "not tried")),
        (
            "past the target",
            f"{beyond.get('opened', 0):,} of {beyond.get('tried', 0):,} more opened, "
            f"the rest: {_kinds(beyond.get('errors', {}))}; held before: "
            f"{beyond.get('held_lost', 0):,} lost, {beyond.get('held_silent', 0):,} silent",
        ),
        ("processes killed for memory", str(result.get("oom_kills", {}))),
    ]
    lines = [
        DOCS_BEGIN,
        f"Written by `python -m stack bench --phases capacity --capacity {result['target']}` "
        f"on {time.strftime('%Y-%m-%d')}.",
        "",
        "| | |",
        "| --- | --- |",
        *(f"| {name} | {value} |" for name, value in rows),
        DOCS_END,
    ]
    return "\n".join(lines)


def _cpu_per_websocket(steps: list[dict[str, Any]]) -> str:
    """What the ramp's steps cost per connection opened, by side and for the machine."""
    cpu: dict[str, float] = {}
    for step in steps:
        for side, seconds in step.get("cpu_seconds", {}).items():
            cpu[side] = cpu.get(side, 0.0) + seconds
    if not cpu:
        return "not measured"
    per = {side: 1e6 * seconds / max(1, steps[-1]["connections"]) for side, seconds in cpu.items()}
    return (
        f"server {per['server']:,.0f} us, NGINX {per['nginx']:,.0f} us, load generator "
        f"{per['clients']:,.0f} us; the machine {per['machine']:,.0f} us (all cores, the "
        "kernel's work too), during the ramp's steps, heartbeats included"
    )


def _kinds(counts: dict[str, int]) -> str:
    """``{"HTTP 503": 4969}`` as "4,969 HTTP 503" (most first), or "none"."""
    ordered = sorted(counts.items(), key=lambda kv: -kv[1])
    return ", ".join(f"{n:,} {kind}" for kind, n in ordered) or "none"


def write_docs(result: dict[str, Any], path: Path = DOCS) -> None:
    """Put the run's table between its markers in ``path`` (appended when they are missing)."""
    if "held" not in result or "memory" not in result:
        return  # the run stopped before the top: nothing to write
    text = path.read_text()
    block = re.compile(re.escape(DOCS_BEGIN) + ".*?" + re.escape(DOCS_END), re.S)
    section = docs_section(result)
    if block.search(text):
        text = block.sub(lambda _: section, text)
    else:
        text = text.rstrip("\n") + "\n\n## 100,000 connections\n\n" + section
    path.write_text(text.rstrip("\n") + "\n")
