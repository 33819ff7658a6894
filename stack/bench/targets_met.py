"""The targets of issue #5, judged against a bench run: figure, and whether each is met.

A row with ``met`` None states a figure without a target (the published port, scaling).
"""

# Figures read better unbroken.
# ruff: noqa: E501

from __future__ import annotations

from typing import Any

from stack.bench.bench_report import find_row


def _target(target: str, figure: str, met: bool | None) -> dict[str, Any]:
    """One row of the targets table (``met`` None: a figure stated, not a target)."""
    return {"target": target, "figure": figure, "met": met}


def _versus(row: dict, reference: dict, digits: int) -> tuple[float, str]:
    """``row``'s messages/s as a ratio of ``reference``'s, and that ratio in words."""
    ratio = row["messages_per_s"] / reference["messages_per_s"]
    return ratio, (
        f"{ratio:.{digits}f}x ({row['messages_per_s']:,.0f} vs "
        f"{reference['messages_per_s']:,.0f} msg/s)"
    )


def evaluate(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Each target of issue #5: the measured figure, whether it is met, what it was."""
    rows = results.get("throughput", [])
    return [
        *_throughput_targets(rows),
        *_memory_targets(results.get("memory") or {}),
        *_published_targets(results.get("published_capacity")),
        *_nginx_share_targets(rows),
        *_latency_targets(results.get("latency", [])),
        *_capacity_targets(results.get("capacity")),
        *_scaling_targets(rows),
    ]


def _throughput_targets(rows: list[dict]) -> list[dict[str, Any]]:
    """The gateway against the bare echo, logging's cost, and the published port's."""
    out = []
    base = find_row(rows, "bare websockets echo (asyncio)")
    direct = find_row(rows, "gateway direct")
    via = find_row(rows, "gateway via NGINX")
    if base and direct:
        ratio, figure = _versus(direct, base, 3)
        out.append(
            _target(
                "gateway direct >= 1.0x bare websockets echo (asyncio), logging off",
                figure,
                ratio >= 1.0,
            )
        )
    logging_on = find_row(rows, "gateway direct, message logging on")
    via_logging = find_row(rows, "gateway via NGINX, message logging on")
    for path, off, on in (("direct", direct, logging_on), ("via NGINX", via, via_logging)):
        if off and on:
            ratio, figure = _versus(on, off, 2)
            target = f"message logging on >= 0.6x logging off, {path} (Docker's log driver)"
            out.append(_target(target, figure, ratio >= 0.6))
    published = find_row(rows, "gateway via NGINX's published port (docker-proxy)")
    host_network = find_row(rows, "gateway via NGINX on the host's network (no docker-proxy)")
    for target, row, reference in (
        ("published port (docker-proxy) vs NGINX's own address", published, via),
        (
            "host networking (docker-compose.host-network.yaml) vs the published port",
            host_network,
            published,
        ),
    ):
        if row and reference:
            out.append(_target(f"{target} (stated)", _versus(row, reference, 2)[1], None))
    return out


def _memory_targets(mem: dict[str, Any]) -> list[dict[str, Any]]:
    """Memory per idle connection of the server and of NGINX, against their budgets."""
    out = []
    limits = {"gateway direct": ("server", 16), "NGINX (its own cgroup)": ("nginx", 20)}
    for row in mem.get("rows", []):
        if row["name"] in limits:
            role, kib = limits[row["name"]]
            per = row["bytes_per_connection"] / 1024
            out.append(
                _target(
                    f"memory per idle connection, {role} < {kib} KiB ({mem['connections']:,} idle)",
                    f"{per:.1f} KiB (cgroup), {row['anon_bytes_per_connection'] / 1024:.1f} KiB (RssAnon)",
                    per < kib,
                )
            )
    return out


def _published_targets(pub: dict[str, Any] | None) -> list[dict[str, Any]]:
    """Idle connections held through the published port (stated)."""
    if not (pub and "held" in pub):
        return []
    return [
        _target(
            f"idle connections through the published port, up to {pub['target']:,} (stated)",
            f"{pub['held']:,} held; port answers afterwards: "
            f"{'yes' if pub['port_answers_after_close'] else 'NO'}; {pub.get('limit') or 'no limit hit'}",
            None,
        )
    ]


def _nginx_share_targets(rows: list[dict]) -> list[dict[str, Any]]:
    """Throughput via NGINX against the gateway direct."""
    direct = find_row(rows, "gateway direct")
    via = find_row(rows, "gateway via NGINX")
    if not (direct and via):
        return []
    ratio, figure = _versus(via, direct, 3)
    return [_target("via NGINX >= 0.7x gateway direct", figure, ratio >= 0.7)]


def _latency_targets(latency: list[dict]) -> list[dict[str, Any]]:
    """p99 round trip via NGINX under 2 ms."""
    lat = find_row(latency, "gateway via NGINX")
    if not lat:
        return []
    return [
        _target(
            f"p99 < 2 ms via NGINX at {lat['rate']:,}/s, {lat['connections']} connections, {lat['size']} B",
            f"p99 {lat['p99_ms']:.2f} ms (p50 {lat['p50_ms']:.2f}, p99.9 {lat['p999_ms']:.2f}, max {lat['max_ms']:.1f})",
            lat["p99_ms"] < 2.0,
        )
    ]


def _capacity_targets(cap: dict[str, Any] | None) -> list[dict[str, Any]]:
    """20,000 idle connections held via NGINX, and what each costs at that count."""
    if not (cap and "held" in cap):
        return []
    ok = (
        cap["held"] >= 20000
        and cap.get("sample_failed", 1) == 0
        and not any(cap.get("oom_kills", {}).values())
    )
    out = [
        _target(
            "20,000 connections held via NGINX with heartbeats, sample echoes",
            f"{cap['held']:,} held, {cap['pings_during_hold']:,} pings answered, "
            f"sample {cap['sample_ok']}/{cap['sample_ok'] + cap['sample_failed']} echoed",
            ok,
        )
    ]
    for role in ("server", "nginx"):
        per = cap[f"{role}_bytes_per_connection"] / 1024
        out.append(
            _target(
                f"memory per idle connection at capacity, {role} (stated)",
                f"{per:.1f} KiB (cgroup), {cap[f'{role}_anon_bytes_per_connection'] / 1024:.1f} KiB (RssAnon)",
                None,
            )
        )
    return out


def _scaling_targets(rows: list[dict]) -> list[dict[str, Any]]:
    """Two workers or replicas against one process (stated)."""
    direct = find_row(rows, "gateway direct")
    via = find_row(rows, "gateway via NGINX")
    out = []
    for row in rows:
        if "WS_WORKERS=2" not in row["name"] and "replicas" not in row["name"]:
            continue
        ref = direct if row["via"] == "direct" else via
        if ref:
            out.append(
                _target(
                    f"use both cores: {row['name']}",
                    f"{row['messages_per_s'] / ref['messages_per_s']:.2f}x of one process "
                    f"({row['messages_per_s']:,.0f} msg/s)",
                    None,
                )
            )
    return out
