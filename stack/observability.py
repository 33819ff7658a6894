"""The observability profile run by hand, and the picture of Prometheus's graph in the docs.

    python -m stack observe-graph     # ~90 s of load -> docs/img/prometheus-graph.png

Brings up the Compose profile under a unique project name (scraping every second), ramps
WebSocket clients up and down through NGINX, asks Prometheus's ``query_range`` API for the
first queries of docs/observability.md, and draws them as inline SVG in an HTML page that
headless Chromium screenshots. Debian's ``prometheus`` package (the offline image) ships no
web UI, so the drawing is ours; the numbers are Prometheus's.
"""

from __future__ import annotations

import argparse
import asyncio
import html
import json
import math
import subprocess
import tempfile
import time
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from stack import compose_file, docker_host, harness_config, images
from stack.compose_file import COMPOSE_FILE, ROOT
from stack.ports import free_port
from stack.waits import until

PICTURE = ROOT / "docs" / "img" / "prometheus-graph.png"
# (title, unit, query): the first queries of docs/observability.md, with windows short
# enough for a run of a minute or two (the docs use 1m and 5m).
PANELS = (
    ("Open WebSockets", "connections", "sum(ws_connections_active)"),
    ("Messages per second", "msg/s", "sum by (direction) (rate(ws_messages_total[10s]))"),
    (
        "p99 message size",
        "bytes",
        "histogram_quantile(0.99, sum by (le) (rate(ws_message_size_bytes_bucket[30s])))",
    ),
    ("Closes per second, by code", "closes/s", "sum by (code) (rate(ws_closes_total[10s]))"),
)
COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd")


@contextmanager
def profile(scrape_interval: str = "1s", **settings: str) -> Iterator[tuple[int, int]]:
    """``up --wait`` of the observability profile under a unique project name, on free
    loopback ports; yields (gateway port, Prometheus port); always ``down -v`` after.

    ``settings`` are extra Compose variables (e.g. ``WS_RATE_LIMIT="600r/m"``).
    """
    name = f"wsgw-observe-{uuid.uuid4().hex[:8]}"
    gateway_port, prometheus_port = free_port(), free_port()
    env = harness_config.subprocess_env(
        **images.env_for_compose(observability=True),
        COMPOSE_PROFILES="observability",
        GATEWAY_BIND=docker_host.publish_address(),
        SERVER_NAMES=docker_host.server_names(),
        PROMETHEUS_BIND=docker_host.publish_address(),
        GATEWAY_PORT=str(gateway_port),
        PROMETHEUS_PORT=str(prometheus_port),
        PROMETHEUS_SCRAPE_INTERVAL=scrape_interval,
        DOCKER_BUILDKIT="0",
        **settings,
    )
    base = ["docker", "compose", "-f", str(COMPOSE_FILE), "-p", name]
    try:
        up = subprocess.run(
            [*base, "up", "--build", "--wait", "--wait-timeout", "180"],
            env=env,
            capture_output=True,
            text=True,
            cwd=COMPOSE_FILE.parent,
        )
        if up.returncode != 0:
            raise RuntimeError(f"compose up of {name} failed:\n{up.stdout}{up.stderr}")
        yield gateway_port, prometheus_port
    finally:
        compose_file.down(name, env)


def api(port: int, path: str, **params: str) -> dict:
    """GET ``/api/v1/<path>`` of the Prometheus on ``port``; its ``data``."""
    query = f"?{urllib.parse.urlencode(params)}" if params else ""
    url = f"http://{docker_host.address()}:{port}/api/v1/{path}{query}"
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.load(response)["data"]


def target_health(port: int) -> dict[str, str]:
    """Job -> health of its target, as Prometheus reports them."""
    return {t["labels"]["job"]: t["health"] for t in api(port, "targets")["activeTargets"]}


async def ramp(url: str, steps: int = 8, per_step: int = 5, every: float = 5.0) -> None:
    """Clients through NGINX: ``per_step`` more every ``every`` s for ``steps`` steps (each
    step's clients send longer messages), a hold, then the same steps down (closes 1000).

    The pauses set the shape of the load, they wait for nothing.
    """
    from stack.echo_client.fleet import Fleet

    fleets = []
    for step in range(steps):
        fleet = Fleet.of(per_step, url, prefix=f"s{step}-", interval=0.2, size=32 * 2**step)
        fleet.start()
        fleets.append(fleet)
        await asyncio.sleep(every)
    await asyncio.sleep(2 * every)
    for fleet in reversed(fleets):
        await fleet.stop()
        await asyncio.sleep(every)


def _ticks(top: float) -> list[float]:
    """About five round steps from 0 to at least ``top``."""
    if top <= 0:
        return [0.0, 1.0]
    raw = top / 5
    step = 10 ** math.floor(math.log10(raw))
    step *= next(m for m in (1, 2, 5, 10) if m * step >= raw)
    return [i * step for i in range(math.ceil(top / step) + 1)]


def panel(title: str, unit: str, query: str, series: list[dict], start: float, end: float) -> str:
    """One chart as SVG: ``series`` is query_range's ``result`` (a matrix)."""
    width, height, left, right, top, bottom = 480, 250, 58, 12, 44, 34
    values = [float(v) for s in series for _, v in s["values"] if math.isfinite(float(v))]
    ticks = _ticks(max(values, default=0.0))

    def x(t: float) -> float:
        return left + (t - start) / (end - start) * (width - left - right)

    def y(v: float) -> float:
        return height - bottom - v / ticks[-1] * (height - top - bottom)

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}">',
        f'<text x="{left}" y="16" class="title">{html.escape(title)} ({unit})</text>',
        f'<text x="{left}" y="32" class="query">{html.escape(query)}</text>',
    ]
    for v in ticks:
        out.append(f'<line x1="{left}" x2="{width - right}" y1="{y(v):.1f}" y2="{y(v):.1f}"/>')
        out.append(f'<text x="{left - 5}" y="{y(v) + 4:.1f}" text-anchor="end">{v:g}</text>')
    for t in range(0, int(end - start) + 1, 20):
        out.append(
            f'<text x="{x(start + t):.1f}" y="{height - bottom + 15}" '
            f'text-anchor="middle">{t}</text>'
        )
    out.append(
        f'<text x="{width - right}" y="{height - 4}" text-anchor="end">s into the run</text>'
    )
    for n, s in enumerate(series):
        color = COLORS[n % len(COLORS)]
        points = " ".join(
            f"{x(float(t)):.1f},{y(float(v)):.1f}"
            for t, v in s["values"]
            if math.isfinite(float(v))
        )
        dash = ' stroke-dasharray="6 4"' if n else ""  # a second line on top of the first
        out.append(
            f'<polyline fill="none" stroke="{color}" stroke-width="2"{dash} points="{points}"/>'
        )
        label = ", ".join(f"{k}={v}" for k, v in sorted(s["metric"].items()))
        if label:
            out.append(
                f'<text x="{width - right - 4}" y="{top + 14 * (n + 1)}" fill="{color}" '
                f'text-anchor="end">{html.escape(label)}</text>'
            )
    if not series:
        out.append(f'<text x="{left + 10}" y="{top + 20}">no data</text>')
    return "\n".join([*out, "</svg>"])


def page(results: list[list[dict]], start: float, end: float, heading: str) -> str:
    """The HTML page: a heading and the panels, two by two."""
    panels = "\n".join(
        panel(title, unit, query, series, start, end)
        for (title, unit, query), series in zip(PANELS, results, strict=True)
    )
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><style>
body {{ margin: 12px 16px; font: 12px sans-serif; background: white; }}
h1 {{ font-size: 15px; margin: 0 0 2px; }} p {{ margin: 0 0 8px; color: #555; }}
div {{ display: grid; grid-template-columns: 480px 480px; gap: 4px 20px; }}
svg {{ font: 11px sans-serif; overflow: visible; }} svg line {{ stroke: #e2e2e2; }}
svg .title {{ font-weight: bold; font-size: 12px; }}
svg .query {{ font-family: monospace; fill: #555; font-size: 9.5px; }}
</style></head><body>
<h1>{html.escape(heading)}</h1>
<p>Data: Prometheus's query_range API (scrape interval and step 1 s). Drawn by
<code>python -m stack observe-graph</code>: Debian's prometheus package has no web UI.</p>
<div>
{panels}
</div></body></html>
"""


def screenshot(page_html: str, png: Path, size: str = "1010,600") -> None:
    """Render ``page_html`` to ``png`` with headless Chromium."""
    png.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as folder:
        source = Path(folder) / "graph.html"
        source.write_text(page_html)
        subprocess.run(
            [
                harness_config.current().chromium_binary,
                "--headless=new",
                "--no-sandbox",
                "--hide-scrollbars",
                f"--screenshot={png}",
                f"--window-size={size}",
                source.as_uri(),
            ],
            check=True,
            capture_output=True,
            timeout=120,
        )


def commit() -> str:
    """The short commit checked out, with ``-dirty`` when the tree has changes."""
    described = subprocess.run(
        ["git", "describe", "--always", "--dirty", "--abbrev=7"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    return described.stdout.strip() or "unknown"


def _graph(args: argparse.Namespace) -> int:
    version = commit()  # what was checked out when the run began
    with profile() as (gateway_port, prometheus_port):
        until(
            lambda: target_health(prometheus_port),
            "server and nginx targets up in Prometheus",
            timeout=60,
            accept=lambda h: h.get("server") == "up" and h.get("nginx") == "up",
        )
        start = time.time()
        asyncio.run(ramp(f"ws://{docker_host.address()}:{gateway_port}/ws", steps=args.steps))
        end = time.time()
        # The last scrape after the load, so the graph ends where the load did.
        until(
            lambda: api(prometheus_port, "query", query="min(timestamp(up))")["result"],
            "a scrape of every target after the load",
            timeout=30,
            accept=lambda r: bool(r) and float(r[0]["value"][1]) >= end,
        )
        # A target down mid-run (seen when the engine's DNS lost "server" under other
        # stacks' churn) would draw a gap as if the load stopped: no picture then.
        span = f"{math.ceil(end - start)}s"
        gaps = api(prometheus_port, "query", query=f"min_over_time(up[{span}])")["result"]
        down = [r["metric"]["job"] for r in gaps if float(r["value"][1]) < 1]
        if down:
            raise RuntimeError(f"target(s) {down} missed scrapes during the run; run it again")
        results = [
            api(
                prometheus_port,
                "query_range",
                query=query,
                start=f"{start:.3f}",
                end=f"{end:.3f}",
                step="1",
            )["result"]
            for _, _, query in PANELS
        ]
    heading = (
        f"websocket-gateway {version}: {args.steps * 5} clients ramped up and down "
        f"through NGINX, {time.strftime('%Y-%m-%d', time.gmtime(start))}"
    )
    screenshot(page(results, start, end, heading), args.out)
    print(f"wrote {args.out}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``observe-graph`` subcommand to ``python -m stack``."""
    p = subparsers.add_parser(
        "observe-graph",
        help="run load under the observability profile; draw Prometheus's first queries",
        description=__doc__.splitlines()[0],
    )
    p.add_argument("--steps", type=int, default=8, help="ramp steps of 5 clients, 5 s each (8)")
    p.add_argument(
        "--out", type=Path, default=PICTURE, help="PNG to write (docs/img/prometheus-graph.png)"
    )
    p.set_defaults(run=_graph)
    return p
