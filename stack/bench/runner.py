"""``python -m stack bench``: throughput, latency and capacity of the gateway, in one run.

Every figure is measured in this run, against the bare ``websockets`` echo (baseline.py) in
a container with the server's own image and limits, so ratios hold even on a busy machine.
Load comes from client processes (loadgen.py) on the host; their CPU, the server's and
NGINX's are reported beside each figure. Everything started here is one private stack per
server configuration, taken down before the next (and on any error or Ctrl-C).

Addresses: "direct" is the server's address on the stack's backend network, "nginx" is
NGINX's address on the edge network (port 8080, Host: localhost). Both are networks of
this stack only; the published 127.0.0.1 port is not used because Docker relays it through
a userland proxy on this engine, which would add its own CPU cost to every NGINX figure.
"""

from __future__ import annotations

import array
import math
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from testcontainers.core.config import testcontainers_config

from stack import compose_file, images, prometheus
from stack.bench import baseline, probes, report
from stack.bench.loadgen import ClientPool, Target, raise_fd_limit, split
from stack.docker_client import client
from stack.gateway import LABEL, NGINX_PORT, SERVER_PORT, GatewayStack, StackOptions
from stack.waits import http_ok, settled, until

ROOT = Path(__file__).resolve().parents[2]
REPORTS = ROOT / "reports" / "bench"

# Every connection of the bench comes from one source address (the host's address on the
# stack's networks), so NGINX's per-client-IP abuse limits would throttle the load
# generator and fake a failure or a ceiling. The bench raises them to their maxima on
# purpose (nginx/entrypoint.sh validates these names and ranges) and says so in the report.
NGINX_BENCH_ENV = {
    "WS_RATE_LIMIT": "100000r/s",
    "WS_RATE_BURST": "100000",
    "WS_CONN_LIMIT_PER_IP": "65535",
}
# Message logging off unless a setup says otherwise: what it costs is a row of its own.
SERVER_BENCH_ENV = {"WS_LOG_MESSAGES": "false", "WS_MAX_CONNECTIONS": "1000000"}


PHASES = ("throughput", "latency", "memory", "capacity")


def replica_connections(ip: str) -> float:
    """``ws_connections_total`` of the server replica at ``ip`` (its own /metrics)."""
    return prometheus.fetch(f"http://{ip}:{SERVER_PORT}/metrics").value("ws_connections_total")


@dataclass
class Setup:
    """One server configuration: a stack of its own."""

    key: str
    title: str
    server_env: dict[str, str] = field(default_factory=dict)
    nginx_env: dict[str, str] = field(default_factory=dict)
    server_cpus: float | None = None  # CPU limit of the server container (compose: 1.0)
    replicas: int = 1  # server containers behind NGINX (compose --scale server=N)


@dataclass
class Run:
    """One throughput measurement: where to send the load, under which setup."""

    name: str
    setup: str
    via: str  # direct | nginx | baseline-asyncio | baseline-uvloop
    note: str = ""


SETUPS = {
    "default": Setup("default", "gateway, message logging off"),
    "asyncio": Setup(
        "asyncio", "gateway on the default asyncio loop", {"WS_EVENT_LOOP": "asyncio"}
    ),
    "logging": Setup("logging", "gateway, message logging on", {"WS_LOG_MESSAGES": "true"}),
    "workers2": Setup(
        "workers2", "gateway, WS_WORKERS=2 (CPU limit 2.0)", {"WS_WORKERS": "2"}, server_cpus=2.0
    ),
    "replicas2": Setup("replicas2", "gateway, 2 replicas (compose --scale server=2)", replicas=2),
}

THROUGHPUT_RUNS = [
    Run("bare websockets echo (asyncio)", "default", "baseline-asyncio"),
    Run("bare websockets echo (uvloop)", "default", "baseline-uvloop"),
    Run("gateway direct", "default", "direct"),
    Run("gateway via NGINX", "default", "nginx"),
    Run("gateway direct, asyncio loop", "asyncio", "direct"),
    Run("gateway direct, message logging on", "logging", "direct"),
    Run("gateway via NGINX, message logging on", "logging", "nginx"),
    Run("gateway direct, WS_WORKERS=2", "workers2", "direct"),
    Run("gateway via NGINX, WS_WORKERS=2", "workers2", "nginx"),
    Run("gateway via NGINX, 2 replicas", "replicas2", "nginx"),
]
LATENCY_RUNS = [
    Run("bare websockets echo (asyncio)", "default", "baseline-asyncio"),
    Run("gateway direct", "default", "direct"),
    Run("gateway via NGINX", "default", "nginx"),
]


def _pairs(items: list[str]) -> dict[str, str]:
    """NAME=VALUE strings as a dict."""
    return dict(item.split("=", 1) for item in items)


def percentile(sorted_values: list[float] | array.array, q: float) -> float:
    """The q-th percentile (0..100) of sorted values, nearest rank."""
    if not sorted_values:
        return math.nan
    rank = max(1, math.ceil(q / 100 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


class Bench:
    def __init__(self, args: Any, console: Console | None = None) -> None:
        self.args = args
        self.console = console or Console()
        self.phases = [p.strip() for p in args.phases.split(",") if p.strip()]
        unknown = set(self.phases) - set(PHASES)
        if unknown:
            raise SystemExit(f"unknown phase(s) {', '.join(sorted(unknown))}: choose from {PHASES}")
        self.results: dict[str, Any] = {
            "started": datetime.now(UTC).isoformat(timespec="seconds"),
            "settings": {
                k: v for k, v in vars(args).items() if k not in ("run",) and not callable(v)
            },
            "nginx_env": NGINX_BENCH_ENV,
            "server_env": SERVER_BENCH_ENV,
            "throughput": [],
            "latency": [],
            "capacity": None,
            "notes": [],
        }
        self.stack_prefix = f"wsgw-bench-{int(time.time()) % 100000}"

    # ---- orchestration ---------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        testcontainers_config.ryuk_disabled = True  # our own teardown removes everything
        fd_limit = raise_fd_limit()
        self.console.print(f"[bold]websocket-gateway bench[/]: phases {', '.join(self.phases)}")
        tags = images.ensure_all()
        self.results["machine"] = probes.machine(tags["server"], tags["nginx"])
        self.results["machine"]["host_fd_limit"] = str(fd_limit)
        self.results["machine"]["code"] = probes.code_version(ROOT)
        self.results["machine"]["container_limits"] = self._limits_text()
        throughput_runs = [r for r in THROUGHPUT_RUNS if self._wanted(r)]
        latency_runs = [r for r in LATENCY_RUNS if self._wanted(r)]
        with Progress(
            SpinnerColumn(),
            TextColumn("{task.description:<48}"),
            BarColumn(bar_width=24),
            TimeElapsedColumn(),
            TextColumn("{task.fields[info]}"),
            console=self.console,
            transient=False,
        ) as progress:
            self.progress = progress
            for key in dict.fromkeys(r.setup for r in throughput_runs + latency_runs):
                runs_t = [r for r in throughput_runs if r.setup == key]
                runs_l = [r for r in latency_runs if r.setup == key]
                if "throughput" not in self.phases:
                    runs_t = []
                if "latency" not in self.phases:
                    runs_l = []
                if runs_t or runs_l:
                    self._with_setup(SETUPS[key], runs_t, runs_l)
            if "memory" in self.phases:
                self._memory()
            if "capacity" in self.phases:
                self._capacity()
        self.results["finished"] = datetime.now(UTC).isoformat(timespec="seconds")
        self.results["machine"]["load_average_end"] = probes.load_average()
        self.results["targets"] = report.targets(self.results)
        return self.results

    def _wanted(self, run: Run) -> bool:
        only = self.args.only
        return not only or any(word in f"{run.setup}:{run.via}:{run.name}" for word in only)

    def _limits_text(self) -> str:
        server = compose_file.runtime_kwargs("server")
        nginx = compose_file.runtime_kwargs("nginx")

        def one(kw: dict) -> str:
            nofile = next((u["Soft"] for u in kw["ulimits"] if u["Name"] == "nofile"), "?")
            cpus, mib = kw["nano_cpus"] / 1e9, kw["mem_limit"] / 2**20
            return f"{cpus:.1f} CPU, {mib:.0f} MiB, nofile {nofile}"

        return f"server {one(server)}; NGINX {one(nginx)}"

    def _stack(
        self, setup: Setup, extra_server: dict | None = None, extra_nginx: dict | None = None
    ):
        name = f"{self.stack_prefix}-{setup.key}"
        options = StackOptions(
            server_env={
                **SERVER_BENCH_ENV,
                **setup.server_env,
                **_pairs(self.args.server_env),
                **(extra_server or {}),
            },
            nginx_env={
                **NGINX_BENCH_ENV,
                **setup.nginx_env,
                **_pairs(self.args.nginx_env),
                **(extra_nginx or {}),
            },
        )
        task = self.progress.add_task(f"start stack {name}", total=None, info="")
        stack = GatewayStack.up(name, options)
        try:
            if setup.server_cpus:
                set_cpus(stack.server.docker.id, setup.server_cpus)
            for n in range(2, setup.replicas + 1):
                self._add_replica(stack, n)
        except BaseException:
            stack.down()
            raise
        self.progress.update(task, total=1, completed=1, info="up")
        return stack

    def _add_replica(self, stack: GatewayStack, n: int) -> None:
        """Another server container under the network alias "server" (compose --scale)."""
        env = {**compose_file.environment("server"), **stack.options.server_env}
        kwargs = compose_file.runtime_kwargs("server")
        container = client().containers.create(
            images.ensure(images.SERVER),
            name=f"{stack.name}-server-{n}",
            environment=env,
            labels=dict(stack.labels),
            network=stack.backend.name,
            networking_config={
                stack.backend.name: client().api.create_endpoint_config(aliases=["server"])
            },
            **kwargs,
        )
        container.start()
        container.reload()
        ip = container.attrs["NetworkSettings"]["Networks"][stack.backend.name]["IPAddress"]
        http_ok(f"http://{ip}:{SERVER_PORT}/readyz", f"replica {n} ready")

        # NGINX re-resolves "server" every RESOLVER_VALID (5 s): handshake through it until
        # the new replica has taken one.
        def routed() -> bool:
            GatewayStack.echo_once(stack.url)
            return replica_connections(ip) > 0

        until(routed, f"NGINX routes to replica {n}", 30, errors=(Exception,))

    @staticmethod
    def _server_ids(stack: GatewayStack) -> list[str]:
        """Every server container of the stack (replicas included)."""
        return [
            c.id
            for c in client().containers.list(filters={"label": f"{LABEL}={stack.name}"})
            if c.name.startswith(f"{stack.name}-server")
        ]

    def _with_setup(self, setup: Setup, runs_t: list[Run], runs_l: list[Run]) -> None:
        stack = self._stack(setup)
        baselines: dict[str, Any] = {}
        try:
            for run in runs_t + runs_l:
                if run.via.startswith("baseline-") and run.via not in baselines:
                    loop = run.via.split("-", 1)[1]
                    container = baseline.start(stack, loop)
                    ip = baseline.address(container, stack.backend.name)
                    until(
                        lambda ip=ip: GatewayStack.echo_once(f"ws://{ip}:{baseline.PORT}/"),
                        f"baseline {loop} echoes",
                        30,
                        errors=(OSError, TimeoutError, Exception),
                    )
                    baselines[run.via] = container
            for row in self._median_rounds(
                runs_t,
                lambda run: self._throughput(stack, setup, run, baselines),
                "messages_per_s",
                "rounds",
                0,
            ):
                self.results["throughput"].append(row)
            for row in self._median_rounds(
                runs_l,
                lambda run: self._latency(stack, setup, run, baselines),
                "p99_ms",
                "rounds_p99_ms",
                2,
            ):
                self.results["latency"].append(row)
        finally:
            stack.down()

    def _median_rounds(
        self, runs: list[Run], measure: Any, key: str, rounds_key: str, digits: int
    ) -> list[dict[str, Any]]:
        """Each run measured ``--rounds`` times in turn; per run, the round with the median ``key``.

        Rounds run in turn so that a burst of other work on the machine hits every run alike.
        """
        rounds: dict[str, list[dict[str, Any]]] = {run.name: [] for run in runs}
        for _ in range(max(1, self.args.rounds)):
            for run in runs:
                rounds[run.name].append(measure(run))
        rows = []
        for run in runs:
            ordered = sorted(rounds[run.name], key=lambda r: r[key])
            row = dict(ordered[(len(ordered) - 1) // 2])  # the median (lower, if even)
            row[rounds_key] = [round(r[key], digits or None) for r in rounds[run.name]]
            rows.append(row)
        return rows

    def _target(
        self, stack: GatewayStack, via: str, baselines: dict
    ) -> tuple[list[Target], dict[str, str]]:
        """Where the load goes, and which containers' CPU to report."""
        if via.startswith("baseline-"):
            container = baselines[via]
            ip = baseline.address(container, stack.backend.name)
            return [Target(ip, baseline.PORT)], {"server": container.id}
        servers = self._server_ids(stack)
        cpu = {f"server{i + 1 if len(servers) > 1 else ''}": cid for i, cid in enumerate(servers)}
        if via == "direct":
            return [Target(stack.server_ip, SERVER_PORT)], cpu
        cpu["nginx"] = stack.nginx.docker.id
        return [Target(stack.nginx.ip(stack.edge), NGINX_PORT)], cpu

    # ---- throughput ------------------------------------------------------------------------
    def _throughput(
        self, stack: GatewayStack, setup: Setup, run: Run, baselines: dict
    ) -> dict[str, Any]:
        a = self.args
        targets, containers = self._target(stack, run.via, baselines)
        with ClientPool(a.clients) as pool:
            row = self._measure_throughput(pool, run, targets, containers)
        row["setup"] = setup.title
        return row

    def _measure_throughput(
        self, pool: ClientPool, run: Run, targets, containers
    ) -> dict[str, Any]:
        a = self.args
        task = self.progress.add_task(
            f"throughput: {run.name}", total=a.warmup + a.duration, info="connecting"
        )
        tlist = [(t.host, t.port, t.host_header) for t in targets]
        opened = pool.call(
            [{"op": "open", "targets": tlist, "count": n} for n in split(a.connections, a.clients)],
            timeout=120,
        )
        failed = sum(r["failed"] for r in opened)
        errors: dict[str, int] = {}
        for r in opened:
            for k, v in r["errors"].items():
                errors[k] = errors.get(k, 0) + v
        start_at = time.time() + 0.5
        meter = probes.CpuMeter(containers)
        window = (start_at + a.warmup, start_at + a.warmup + a.duration)
        last = [time.monotonic(), pool.total(0)]

        def tick() -> None:
            now = time.time()
            if not meter.start and now >= window[0]:
                meter.begin(time.monotonic())
            if meter.start and not meter.result and now >= window[1]:
                meter.end(time.monotonic())
            t, m = time.monotonic(), pool.total(0)
            if t - last[0] >= 0.5:
                rate = (m - last[1]) / (t - last[0])
                last[:] = [t, m]
                self.progress.update(
                    task,
                    completed=min(a.warmup + a.duration, max(0.0, now - start_at)),
                    info=f"{rate:>9,.0f} msg/s",
                )

        results = pool.call(
            {
                "op": "throughput",
                "size": a.size,
                "text": a.text,
                "inflight": a.inflight,
                "start_at": start_at,
                "warmup": a.warmup,
                "duration": a.duration,
            },
            timeout=a.warmup + a.duration + 60,
            tick=tick,
        )
        if meter.start and not meter.result:
            meter.end(time.monotonic())
        pool.call({"op": "close"}, timeout=60)
        seconds = max(r["seconds"] for r in results)
        messages = sum(r["messages"] for r in results)
        payload = sum(r["bytes"] for r in results)
        for r in results:
            for k, v in r["errors"].items():
                errors[k] = errors.get(k, 0) + v
        row = {
            "name": run.name,
            "via": run.via,
            "connections": a.connections,
            "size": a.size,
            "inflight": a.inflight,
            "messages_per_s": messages / seconds,
            "mb_per_s": payload / seconds / 1e6,
            "client_cpu": sum(r["cpu_seconds"] for r in results) / seconds,
            "client_processes": a.clients,
            "cpu": meter.result,
            "throttled": meter.throttled,
            "failed_connections": failed,
            "mismatches": sum(r["mismatches"] for r in results),
            "lost": sum(r["lost"] for r in results),
            "errors": errors,
        }
        self.progress.update(
            task,
            completed=a.warmup + a.duration,
            info=f"{row['messages_per_s']:>9,.0f} msg/s  {row['mb_per_s']:.1f} MB/s  "
            f"client {row['client_cpu']:.0%}  "
            + "  ".join(f"{k} {v:.0%}" for k, v in meter.result.items()),
        )
        return row

    # ---- latency ---------------------------------------------------------------------------
    def _latency(
        self, stack: GatewayStack, setup: Setup, run: Run, baselines: dict
    ) -> dict[str, Any]:
        a = self.args
        targets, containers = self._target(stack, run.via, baselines)
        task = self.progress.add_task(
            f"latency {a.rate:,}/s: {run.name}", total=a.warmup + a.duration, info="connecting"
        )
        tlist = [(t.host, t.port, t.host_header) for t in targets]
        with ClientPool(a.clients) as pool:
            pool.call(
                [
                    {"op": "open", "targets": tlist, "count": n}
                    for n in split(a.latency_connections, a.clients)
                ],
                timeout=120,
            )
            start_at = time.time() + 0.5
            meter = probes.CpuMeter(containers)
            window = (start_at + a.warmup, start_at + a.warmup + a.duration)

            def tick() -> None:
                now = time.time()
                if not meter.start and now >= window[0]:
                    meter.begin(time.monotonic())
                if meter.start and not meter.result and now >= window[1]:
                    meter.end(time.monotonic())
                self.progress.update(
                    task, completed=min(a.warmup + a.duration, max(0.0, now - start_at)), info=""
                )

            shares = split(a.rate, a.clients)
            results = pool.call(
                [
                    {
                        "op": "latency",
                        "size": a.size,
                        "text": a.text,
                        "rate": share,
                        "start_at": start_at,
                        "warmup": a.warmup,
                        "duration": a.duration,
                    }
                    for share in shares
                ],
                timeout=a.warmup + a.duration + 60,
                tick=tick,
            )
            if meter.start and not meter.result:
                meter.end(time.monotonic())
            pool.call({"op": "close"}, timeout=60)
        samples = array.array("d")
        for r in results:
            samples.frombytes(r["samples"])
        ordered = sorted(samples)
        seconds = max(r["seconds"] for r in results) or a.duration
        row = {
            "name": run.name,
            "via": run.via,
            "setup": setup.title,
            "rate": a.rate,
            "achieved_rate": sum(r["sent"] for r in results) / seconds,
            "connections": a.latency_connections,
            "size": a.size,
            "samples": len(ordered),
            "p50_ms": percentile(ordered, 50) * 1e3,
            "p90_ms": percentile(ordered, 90) * 1e3,
            "p99_ms": percentile(ordered, 99) * 1e3,
            "p999_ms": percentile(ordered, 99.9) * 1e3,
            "max_ms": (ordered[-1] if ordered else math.nan) * 1e3,
            "client_cpu": sum(r["cpu_seconds"] for r in results) / seconds,
            "client_max_send_lag_ms": max(r["max_send_lag"] for r in results) * 1e3,
            "cpu": meter.result,
            "lost": sum(r["lost"] for r in results),
            "mismatches": sum(r["mismatches"] for r in results),
            # for the plot: the percentile curve
            "curve": report.curve(ordered),
        }
        self.progress.update(
            task,
            completed=a.warmup + a.duration,
            info="  ".join(
                f"{k} {row[f'{k}_ms']:.2f}" for k in ("p50", "p90", "p99", "p999", "max")
            )
            + " ms",
        )
        return row

    # ---- memory per connection, gateway against the bare echo -----------------------------
    def _memory(self) -> None:
        """Idle connections straight to the server and to the bare echo: memory of each."""
        a = self.args
        count = a.memory_connections
        stack = self._stack(SETUPS["default"])
        rows: list[dict[str, Any]] = []
        self.results["memory"] = {"connections": count, "rows": rows}
        try:
            container = baseline.start(stack, "asyncio")
            ip = baseline.address(container, stack.backend.name)
            until(
                lambda: GatewayStack.echo_once(f"ws://{ip}:{baseline.PORT}/"),
                "baseline echoes",
                30,
                errors=(OSError, TimeoutError, Exception),
            )
            for name, target, cid in (
                ("bare websockets echo (asyncio)", (ip, baseline.PORT), container.id),
                ("gateway direct", (stack.server_ip, SERVER_PORT), stack.server.docker.id),
            ):
                task = self.progress.add_task(
                    f"memory: {count:,} idle to {name}", total=count, info=""
                )
                with ClientPool(a.clients) as pool:
                    settled(lambda cid=cid: probes.memory_bytes(cid), f"{name}: memory at rest")
                    before = probes.memory_bytes(cid), probes.rss_anon_bytes(cid)
                    answers = pool.call(
                        [
                            {
                                "op": "open",
                                "targets": [(*target, "localhost")],
                                "count": n,
                                "concurrency": 50,
                            }
                            for n in split(count, a.clients)
                        ],
                        timeout=300,
                        tick=lambda task=task, pool=pool: self.progress.update(
                            task, completed=pool.total(2)
                        ),
                    )
                    opened = sum(r["open"] for r in answers)
                    settled(
                        lambda cid=cid: probes.memory_bytes(cid),
                        f"{name}: memory with {opened:,} open",
                    )
                    after = probes.memory_bytes(cid), probes.rss_anon_bytes(cid)
                    sample = pool.call({"op": "sample", "count": 50}, timeout=60)
                    pool.call({"op": "close"}, timeout=120)
                row = {
                    "name": name,
                    "connections": opened,
                    "bytes_per_connection": (after[0] - before[0]) / max(1, opened),
                    "anon_bytes_per_connection": (after[1] - before[1]) / max(1, opened),
                    "sample_ok": sum(r["ok"] for r in sample),
                }
                rows.append(row)
                self.progress.update(
                    task,
                    completed=count,
                    info=f"{row['bytes_per_connection'] / 1024:.1f} KiB/conn (cgroup), "
                    f"{row['anon_bytes_per_connection'] / 1024:.1f} KiB (RssAnon)",
                )
        finally:
            stack.down()

    # ---- capacity --------------------------------------------------------------------------
    def _capacity(self) -> None:
        """Ramp idle connections through NGINX; memory per connection; heartbeats; samples."""
        a = self.args
        target = a.capacity
        # Descriptors: the engine grants each container at most its own hard limit (20,000
        # here), per process. The server gets one worker per 15,000 connections and NGINX
        # one worker per 7,500 (two descriptors per WebSocket), so no process hits it.
        # Ports: NGINX reaches a server from one address, so one server address:port takes
        # at most ~28,000 tunnels (the ephemeral port range): past 25,000 the run adds
        # replicas (compose --scale server=N), which NGINX balances by DNS.
        replicas = max(1, math.ceil(target / 25000))
        server_workers = max(1, math.ceil(target / replicas / 15000))
        nginx_workers = max(2, math.ceil(target / 7500))
        nofile = min(
            int(u["Soft"])
            for u in compose_file.runtime_kwargs("nginx")["ulimits"]
            if u["Name"] == "nofile"
        )
        setup = Setup(
            "capacity",
            f"gateway, {replicas} server container(s) of WS_WORKERS={server_workers}, "
            f"NGINX {nginx_workers} workers, ping every {a.ping_interval:g} s",
            {"WS_WORKERS": str(server_workers), "WS_PING_INTERVAL": f"{a.ping_interval:g}"},
            {
                "WORKER_PROCESSES": str(nginx_workers),
                "WORKER_CONNECTIONS": str(min(nofile, 65536)),
                "WORKER_RLIMIT_NOFILE": str(min(nofile, 65536)),
                # The heartbeat keeps tunnels busy; NGINX must not time them out meanwhile.
                "PROXY_READ_TIMEOUT": "300s",
            },
            replicas=replicas,
        )
        stack = self._stack(setup)
        processes = max(a.clients, math.ceil(target / 12000))
        result: dict[str, Any] = {
            "setup": setup.title,
            "target": target,
            "steps": [],
            "client_processes": processes,
        }
        self.results["capacity"] = result
        try:
            ids = {"server": self._server_ids(stack), "nginx": [stack.nginx.docker.id]}
            limits = {role: compose_file.memory_limit(role) for role in ("server", "nginx")}
            result["compose_memory_limits"] = dict(limits)
            if not a.keep_limits:
                # The compose limits are sized for everyday use; the capacity run gives each
                # container room for the target (and says so), so the figure shows where the
                # connections stop, not where a default limit was set.
                for role, cids in ids.items():
                    share = target / len(cids)
                    need = int(64 * 2**20 + share * CAPACITY_BYTES_PER_CONNECTION[role])
                    if need > limits[role]:
                        limits[role] = need
                        for cid in cids:
                            set_memory(cid, need)

            def memory() -> dict[str, int]:
                return {r: sum(probes.memory_bytes(c) for c in cids) for r, cids in ids.items()}

            def anon() -> dict[str, int]:
                return {r: sum(probes.rss_anon_bytes(c) for c in cids) for r, cids in ids.items()}

            # Several destination addresses: one (source, destination) pair has ~28,000
            # ephemeral ports. NGINX listens on both its networks; the host reaches both.
            targets = [
                (stack.nginx.ip(stack.edge), NGINX_PORT, "localhost"),
                (stack.nginx.ip(stack.backend), NGINX_PORT, "localhost"),
            ]
            if target <= 25000:
                targets = targets[:1]
            result["targets"] = [f"{h}:{p}" for h, p, _ in targets]
            settled(lambda: sum(memory().values()), "capacity: memory at rest")
            base = memory()
            base_anon = anon()
            result["idle_memory"] = base
            task = self.progress.add_task(
                f"capacity: ramp to {target:,} via NGINX", total=target, info=""
            )
            with ClientPool(processes) as pool:
                opened = 0
                limit_reason = None
                steps_left = math.ceil(target / a.capacity_step) + 2  # bounded, whatever fails
                while opened < target and steps_left > 0:
                    steps_left -= 1
                    before = opened
                    step = min(a.capacity_step, target - opened)
                    shares = split(step, processes)
                    t0 = time.monotonic()
                    answers = pool.call(
                        [
                            {
                                "op": "open",
                                "targets": targets,
                                "count": n,
                                "concurrency": 50,
                                "first": opened + i,
                            }
                            for i, n in enumerate(shares)
                        ],
                        timeout=300,
                        tick=lambda: self.progress.update(
                            task, completed=pool.total(2), info=f"open {pool.total(2):,.0f}"
                        ),
                    )
                    failed = sum(r["failed"] for r in answers)
                    errors: dict[str, int] = {}
                    for r in answers:
                        for k, v in r["errors"].items():
                            errors[k] = errors.get(k, 0) + v
                    retried_ok = 0
                    if failed:
                        # Once more, slower, for the handshakes that failed: a transient
                        # overload (SYN backlog, CPU) passes, a hard limit fails again.
                        time.sleep(2)
                        again = pool.call(
                            [
                                {
                                    "op": "open",
                                    "targets": targets,
                                    "count": r["failed"],
                                    "concurrency": 10,
                                    "within": 20.0,
                                    "first": opened + i,
                                }
                                for i, r in enumerate(answers)
                            ],
                            timeout=300,
                        )
                        retried_ok = sum(r["opened"] for r in again)
                        answers = again
                    ramp_s = time.monotonic() - t0
                    opened = sum(r["open"] for r in answers)
                    settled(lambda: sum(memory().values()), f"capacity: memory at {opened:,}")
                    mem = memory()
                    result["steps"].append(
                        {
                            "connections": opened,
                            "failed": failed,
                            "errors": errors,
                            "retried_ok": retried_ok,
                            "seconds": ramp_s,
                            "server_bytes": mem["server"],
                            "nginx_bytes": mem["nginx"],
                        }
                    )
                    self.progress.update(
                        task,
                        completed=opened,
                        info=f"open {opened:,}  server {mem['server'] / 2**20:.0f} MiB  "
                        f"nginx {mem['nginx'] / 2**20:.0f} MiB"
                        + (f"  failed {failed} {errors}" if failed else ""),
                    )
                    kills = {
                        role: sum(probes.oom_kills(c) for c in cids) for role, cids in ids.items()
                    }
                    dropped = before + (step - failed) + retried_ok - opened
                    if any(kills.values()) or dropped > max(10, step // 200):
                        limit_reason = (
                            f"{max(0, dropped):,} open connections dropped; processes killed "
                            f"for memory: {kills} (limits "
                            + ", ".join(f"{k} {v / 2**20:.0f} MiB" for k, v in limits.items())
                            + ")"
                        )
                        break
                    if failed - retried_ok > max(10, step // 200):
                        limit_reason = (
                            f"{failed} of {step} handshakes failed ({errors}), "
                            f"{retried_ok} passed when retried"
                        )
                        break
                if limit_reason is None and opened < target:
                    limit_reason = f"the ramp stopped at {opened:,} (handshakes kept failing)"
                result["reached"] = opened
                result["limit"] = limit_reason
                # Hold: every connection must see the server's heartbeat at least once.
                pings0 = sum(r["pings"] for r in pool.call({"op": "status"}, timeout=60))
                hold = a.ping_interval * 1.5 + 2
                htask = self.progress.add_task(
                    f"capacity: hold {opened:,} with heartbeats", total=hold, info=""
                )
                t0 = time.monotonic()
                while time.monotonic() - t0 < hold:
                    time.sleep(0.5)
                    self.progress.update(
                        htask,
                        completed=time.monotonic() - t0,
                        info=f"pings answered {pool.total(3) - pings0:,.0f}  "
                        f"open {pool.total(2):,.0f}",
                    )
                status = pool.call({"op": "status"}, timeout=60)
                mem = memory()
                anon = anon()
                still_open = sum(r["open"] for r in status)
                result["held"] = still_open
                result["pings_during_hold"] = sum(r["pings"] for r in status) - pings0
                result["hold_seconds"] = hold
                sample_n = min(a.capacity_sample, still_open)
                samples = pool.call(
                    [{"op": "sample", "count": n} for n in split(sample_n, processes)], timeout=60
                )
                result["sample_ok"] = sum(r["ok"] for r in samples)
                result["sample_failed"] = sum(r["failed"] for r in samples)
                result["memory"] = mem
                for role in ("server", "nginx"):
                    result[f"{role}_bytes_per_connection"] = (mem[role] - base[role]) / max(
                        1, still_open
                    )
                    result[f"{role}_anon_bytes_per_connection"] = (
                        anon[role] - base_anon[role]
                    ) / max(1, still_open)
                result["memory_limits"] = limits
                result["oom_kills"] = {
                    r: sum(probes.oom_kills(c) for c in cids) for r, cids in ids.items()
                }
                self.progress.update(
                    htask,
                    completed=hold,
                    info=f"held {still_open:,}; pings {result['pings_during_hold']:,}; "
                    f"sample {result['sample_ok']}/{sample_n} echoed; "
                    f"{result['server_bytes_per_connection'] / 1024:.1f} KiB/conn server, "
                    f"{result['nginx_bytes_per_connection'] / 1024:.1f} KiB/conn NGINX",
                )
                ctask = self.progress.add_task("capacity: close all", total=None, info="")
                pool.call({"op": "close", "within": 30}, timeout=120)
                self.progress.update(ctask, total=1, completed=1)
        finally:
            stack.down()


def _update(container_id: str, resources: dict[str, int]) -> None:
    """``docker update`` of a running container (docker-py has no NanoCpus there)."""
    api = client().api
    response = api._post_json(api._url("/containers/{0}/update", container_id), data=resources)
    api._raise_for_status(response)


def set_cpus(container_id: str, cpus: float) -> None:
    """Change a running container's CPU limit (docker update --cpus)."""
    _update(container_id, {"NanoCpus": int(cpus * 1e9)})


def set_memory(container_id: str, limit: int) -> None:
    """Change a running container's memory limit (docker update --memory, no swap)."""
    _update(container_id, {"Memory": limit, "MemorySwap": limit})


# Room per idle connection when the capacity run raises memory limits: measured here at
# about 21 KiB (server) and 28 KiB (NGINX, both sockets of a tunnel), plus a quarter.
CAPACITY_BYTES_PER_CONNECTION = {"server": 27 * 1024, "nginx": 34 * 1024}


def main(args: Any) -> int:
    console = Console()
    bench = Bench(args, console)
    try:
        results = bench.run()
    except KeyboardInterrupt:
        console.print("[red]interrupted[/]: stacks are being removed")
        return 130
    REPORTS.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    paths = report.write(results, REPORTS, stamp)
    console.print(report.table(results))
    for path in paths:
        console.print(f"wrote {path.relative_to(ROOT)}")
    return 0


__all__ = ["SETUPS", "Bench", "main", "percentile"]
