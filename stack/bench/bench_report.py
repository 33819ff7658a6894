"""The bench's outputs: a terminal table, JSON, Markdown and an SVG latency plot."""

# Markdown and SVG templates read better unbroken.
# ruff: noqa: E501

from __future__ import annotations

import array
import json
import math
from pathlib import Path
from typing import Any

from rich.table import Table

CURVE_POINTS = (0, 10, 25, 50, 75, 90, 95, 99, 99.5, 99.9, 99.95, 99.99, 100)


def percentile(sorted_values: list[float] | array.array, q: float) -> float:
    """The q-th percentile (0..100) of sorted values, nearest rank."""
    if not sorted_values:
        return math.nan
    rank = max(1, math.ceil(q / 100 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def curve(ordered: list[float]) -> list[tuple[float, float]]:
    """(percentile, milliseconds) points of a sorted sample, for the plot."""
    if not ordered:
        return []
    return [(q, percentile(ordered, q) * 1e3) for q in CURVE_POINTS]


def find_row(rows: list[dict], name: str) -> dict | None:
    """The row called ``name``, or None."""
    return next((r for r in rows if r["name"] == name), None)


def _cpu(cpu: dict[str, float]) -> str:
    parts = [f"{k} {v:.0%}" for k, v in cpu.items() if k != "host"]
    if "host" in cpu:
        parts.append(f"host busy {cpu['host']:.0%}")
    return ", ".join(parts)


def _throttled(throttled: dict[str, float]) -> str:
    """Containers held back by their CPU quota for more than 1% of the window."""
    parts = [f"{k} {v:.0%}" for k, v in throttled.items() if v > 0.01]
    return f"; throttled: {', '.join(parts)}" if parts else ""


def markdown(results: dict[str, Any]) -> str:
    """The whole report in Markdown: the machine, then each phase's table, the targets."""
    lines = [
        *_machine_section(results),
        *_throughput_section(results),
        *_latency_section(results),
        *_memory_section(results),
        *_capacity_section(results),
        *_published_section(results),
        *_targets_section(results),
    ]
    for note in results.get("notes", []):
        lines.append(f"- {note}")
    return "\n".join(lines) + "\n"


def _machine_section(results: dict[str, Any]) -> list[str]:
    """Where and with what settings the figures were measured."""
    m = results.get("machine", {})
    lines = [
        f"# websocket-gateway bench, {results.get('started', '')}",
        "",
        f"Machine: {m.get('cpu', '?')}, {m.get('cores', '?')} cores shared by the load generator, "
        f"NGINX and the server; {m.get('memory', '?')} RAM; Linux {m.get('kernel', '?')}; "
        f"Docker {m.get('docker', '?')}. Server image: Python {m.get('server_python', '?')}, "
        f"websockets {m.get('websockets', '?')}, uvloop {m.get('uvloop', '?')}; {m.get('nginx', '?')}. "
        f"Container limits (docker-compose.yaml): {m.get('container_limits', '?')}. "
        f"Load average at start {m.get('load_average', '?')}, at end {m.get('load_average_end', '?')}. "
        f"Code: {m.get('code', '?')}.",
        "",
        "NGINX per-IP limits raised for the bench (all load comes from one address): "
        + ", ".join(f"{k}={v}" for k, v in results.get("nginx_env", {}).items())
        + ". Server: "
        + ", ".join(f"{k}={v}" for k, v in results.get("server_env", {}).items())
        + " unless a row says otherwise.",
        "",
    ]
    return lines


def _throughput_section(results: dict[str, Any]) -> list[str]:
    """Messages per second of each run, against the bare echo."""
    s = results.get("settings", {})
    rows = results.get("throughput", [])
    if not rows:
        return []
    lines = [
        f"## Throughput: {s.get('connections')} connections, {s.get('size')} B "
        f"{'text' if s.get('text') else 'binary'} messages, {s.get('inflight')} in flight each, "
        f"{s.get('duration')} s after {s.get('warmup')} s warm-up, {s.get('clients')} client processes; "
        f"median of {s.get('rounds', 1)} rounds taken in turn",
        "",
        "| run | msg/s | MB/s | vs bare (asyncio) | client CPU | server / NGINX / host CPU | each round | errors |",
        "| --- | ---: | ---: | ---: | ---: | --- | --- | --- |",
    ]
    base = find_row(rows, "bare websockets echo (asyncio)")
    for r in rows:
        ratio = f"{r['messages_per_s'] / base['messages_per_s']:.2f}x" if base else "-"
        problems = r["failed_connections"] + r["mismatches"] + r["lost"]
        errs = (
            "none"
            if not problems and not r["errors"]
            else (
                f"{r['failed_connections']} failed, {r['mismatches']} mismatched, {r['lost']} lost {r['errors'] or ''}"
            )
        )
        lines.append(
            f"| {r['name']} | {r['messages_per_s']:,.0f} | {r['mb_per_s']:.1f} | {ratio} | "
            f"{r['client_cpu']:.0%} | {_cpu(r['cpu'])}{_throttled(r.get('throttled', {}))} | "
            f"{' / '.join(f'{x:,}' for x in r.get('rounds', []))} | {errs} |"
        )
    lines.append("")
    lines.append(
        "MB/s counts echoed payload bytes received by the clients. CPU is a share of one "
        "core over the measured window: cgroup CPU time for containers, process time for "
        "the client processes, /proc/stat for the whole host (all cores: 200% is both "
        "busy; what the host adds beyond client, server and NGINX is other work on the "
        "machine, Docker's own included)."
    )
    lines.append("")
    return lines


def _latency_section(results: dict[str, Any]) -> list[str]:
    """Round-trip percentiles of each run, and the plot."""
    s = results.get("settings", {})
    lat = results.get("latency", [])
    if not lat:
        return []
    lines = [
        f"## Latency: {s.get('rate'):,} messages/s in total over {s.get('latency_connections')} "
        f"connections, {s.get('size')} B, round trip as the client sees it; the round with the median p99 of {s.get('rounds', 1)}",
        "",
        "| run | achieved/s | p50 ms | p90 ms | p99 ms | p99.9 ms | max ms | client CPU | server / NGINX / host CPU | p99 of each round |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- |",
    ]
    for r in lat:
        lines.append(
            f"| {r['name']} | {r['achieved_rate']:,.0f} | {r['p50_ms']:.2f} | {r['p90_ms']:.2f} | "
            f"{r['p99_ms']:.2f} | {r['p999_ms']:.2f} | {r['max_ms']:.2f} | {r['client_cpu']:.0%} | "
            f"{_cpu(r['cpu'])} | {' / '.join(f'{x:.2f}' for x in r.get('rounds_p99_ms', []))} |"
        )
    lines += ["", "![latency percentiles](latency.svg)", ""]
    return lines


def _memory_section(results: dict[str, Any]) -> list[str]:
    """Memory per idle connection."""
    mem = results.get("memory")
    if not (mem and mem.get("rows")):
        return []
    lines = [
        f"## Memory per idle connection ({mem['connections']:,} connections; NGINX's row counts NGINX only)",
        "",
        "| server | per connection (cgroup) | per connection (RssAnon) | sample echoed |",
        "| --- | ---: | ---: | ---: |",
    ]
    for r in mem["rows"]:
        lines.append(
            f"| {r['name']} | {r['bytes_per_connection'] / 1024:.1f} KiB | "
            f"{r['anon_bytes_per_connection'] / 1024:.1f} KiB | {r['sample_ok']} |"
        )
    lines.append("")
    return lines


def _capacity_section(results: dict[str, Any]) -> list[str]:
    """Idle connections held through NGINX, step by step."""
    cap = results.get("capacity")
    if not (cap and "held" in cap):
        return []
    lines = [
        f"## Capacity: idle connections through NGINX ({cap['setup']})",
        "",
        f"Target {cap['target']:,}; reached {cap['reached']:,}; held {cap['held']:,} for "
        f"{cap['hold_seconds']:.0f} s with {cap['pings_during_hold']:,} heartbeat pings answered; "
        f"sample of {cap['sample_ok'] + cap['sample_failed']:,} connections: {cap['sample_ok']:,} echoed intact. "
        f"Limit: {cap.get('limit') or 'none hit (target reached)'}. "
        f"Processes killed for memory: {cap.get('oom_kills', {})}.",
        "",
        "| | idle | at the end | per connection (cgroup) | per connection (RssAnon) | container limit |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for role in ("server", "nginx"):
        lines.append(
            f"| {role} | {cap['idle_memory'][role] / 2**20:.1f} MiB | {cap['memory'][role] / 2**20:.1f} MiB | "
            f"{cap[f'{role}_bytes_per_connection'] / 1024:.1f} KiB | "
            f"{cap[f'{role}_anon_bytes_per_connection'] / 1024:.1f} KiB | "
            f"{cap['memory_limits'][role] / 2**20:.0f} MiB |"
        )
    compose = cap.get("compose_memory_limits", {})
    raised = [k for k, v in compose.items() if v != cap["memory_limits"].get(k)]
    if raised:
        lines += [
            "",
            "Memory limit raised for this run (docker update) to fit the target: "
            + ", ".join(
                f"{k} {compose[k] / 2**20:.0f} MiB (compose) to "
                f"{cap['memory_limits'][k] / 2**20:.0f} MiB"
                for k in raised
            )
            + ".",
        ]
    lines += [
        "",
        "| connections | server MiB | NGINX MiB | failed in step |",
        "| ---: | ---: | ---: | --- |",
    ]
    for step in cap["steps"]:
        lines.append(
            f"| {step['connections']:,} | {step['server_bytes'] / 2**20:.1f} | "
            f"{step['nginx_bytes'] / 2**20:.1f} | {step['failed']} {step['errors'] or ''}"
            f"{', ' + str(step.get('retried_ok', 0)) + ' passed on retry' if step['failed'] else ''} |"
        )
    lines.append("")
    return lines


def _published_section(results: dict[str, Any]) -> list[str]:
    """Idle connections through the published port, step by step."""
    pub = results.get("published_capacity")
    if not (pub and "held" in pub):
        return []
    lines = [
        f"## Capacity: idle connections through NGINX's published port 127.0.0.1:{pub['port']}",
        "",
        f"Target {pub['target']:,}; reached {pub['reached']:,}; {pub['held']:,} still open at the end. "
        f"Limit: {pub.get('limit') or 'none hit (target reached)'}. A new connection through the port "
        f"echoed while they were open: {'yes' if pub['port_answers'] else 'no'}; after they closed: "
        f"{'yes' if pub['port_answers_after_close'] else 'no'}.",
        "",
        "| connections | failed in step |",
        "| ---: | --- |",
    ]
    for step in pub["steps"]:
        lines.append(f"| {step['connections']:,} | {step['failed']} {step['errors'] or ''} |")
    lines.append("")
    return lines


def _targets_section(results: dict[str, Any]) -> list[str]:
    """Each target, its figure, whether it is met."""
    tg = results.get("targets", [])
    if not tg:
        return []
    lines = ["## Targets", "", "| target | measured | met |", "| --- | --- | --- |"]
    for t in tg:
        met = "n/a" if t["met"] is None else ("yes" if t["met"] else "**no**")
        lines.append(f"| {t['target']} | {t['figure']} | {met} |")
    lines.append("")
    return lines


def svg(results: dict[str, Any]) -> str:
    """Round trip (log scale) against percentile, one line per latency run."""
    rows = [r for r in results.get("latency", []) if r.get("curve")]
    width, height, left, bottom, top, right = 720, 360, 60, 40, 20, 220
    colors = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd"]
    qs = list(CURVE_POINTS)
    all_ms = [ms for r in rows for _, ms in r["curve"] if ms > 0]
    lo = 10 ** math.floor(math.log10(min(all_ms))) if all_ms else 0.01
    hi = 10 ** math.ceil(math.log10(max(all_ms))) if all_ms else 100

    def x(i: int) -> float:
        return left + i * (width - left - right) / (len(qs) - 1)

    def y(ms: float) -> float:
        ms = max(ms, lo)
        frac = (math.log10(ms) - math.log10(lo)) / (math.log10(hi) - math.log10(lo))
        return height - bottom - frac * (height - bottom - top)

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        'font-family="sans-serif" font-size="11">',
        f'<rect width="{width}" height="{height}" fill="white"/>',
    ]
    decade = lo
    while decade <= hi * 1.0001:
        out.append(
            f'<line x1="{left}" x2="{width - right}" y1="{y(decade):.1f}" y2="{y(decade):.1f}" stroke="#ddd"/>'
        )
        out.append(
            f'<text x="{left - 6}" y="{y(decade) + 4:.1f}" text-anchor="end">{decade:g} ms</text>'
        )
        decade *= 10
    for i, q in enumerate(qs):
        out.append(
            f'<text x="{x(i):.1f}" y="{height - bottom + 16}" text-anchor="middle">p{q:g}</text>'
        )
    for n, r in enumerate(rows):
        color = colors[n % len(colors)]
        points = " ".join(f"{x(i):.1f},{y(ms):.1f}" for i, (_, ms) in enumerate(r["curve"]))
        out.append(f'<polyline fill="none" stroke="{color}" stroke-width="2" points="{points}"/>')
        out.append(
            f'<text x="{width - right + 10}" y="{top + 16 * (n + 1)}" fill="{color}">{r["name"]}</text>'
        )
    out.append(
        f'<text x="{left}" y="{top - 6}">round trip at {rows[0]["rate"]:,}/s' if rows else "<text>"
    )
    out[-1] += "</text>"
    out.append("</svg>")
    return "\n".join(out) + "\n"


def write(results: dict[str, Any], folder: Path, stamp: str) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name in (f"bench-{stamp}", "latest"):
        json_path = folder / f"{name}.json"
        json_path.write_text(json.dumps(results, indent=2, default=str) + "\n")
        md_path = folder / f"{name}.md"
        md_path.write_text(markdown(results))
        paths += [json_path, md_path]
    if results.get("latency"):
        svg_path = folder / "latency.svg"
        svg_path.write_text(svg(results))
        paths.append(svg_path)
    return paths


def table(results: dict[str, Any]) -> Table:
    t = Table(title="websocket-gateway bench")
    for col in ("run", "msg/s", "MB/s", "client CPU", "server / NGINX CPU"):
        t.add_column(col, justify="right" if col != "run" else "left")
    for r in results.get("throughput", []):
        t.add_row(
            r["name"],
            f"{r['messages_per_s']:,.0f}",
            f"{r['mb_per_s']:.1f}",
            f"{r['client_cpu']:.0%}",
            _cpu(r["cpu"]),
        )
    for r in results.get("latency", []):
        t.add_row(
            f"latency {r['name']}",
            f"p50 {r['p50_ms']:.2f} ms",
            f"p99 {r['p99_ms']:.2f} ms",
            f"{r['client_cpu']:.0%}",
            _cpu(r["cpu"]),
        )
    for tg in results.get("targets", []):
        met = "n/a" if tg["met"] is None else ("met" if tg["met"] else "NOT met")
        t.add_row(tg["target"], met, "", "", tg["figure"])
    return t
