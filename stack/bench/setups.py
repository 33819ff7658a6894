"""What the bench compares: server setups (one stack each) and the runs measured on them."""

from __future__ import annotations

from dataclasses import dataclass, field

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
    via: str  # direct | nginx | published | host-network | baseline-asyncio | baseline-uvloop
    note: str = ""

    @property
    def words(self) -> str:
        """What ``--only`` matches against."""
        return f"{self.setup}:{self.via}:{self.name}"


SETUPS = {
    "default": Setup("default", "gateway, message logging off"),
    "asyncio": Setup(
        "asyncio", "gateway on the default asyncio loop", {"WS_EVENT_LOOP": "asyncio"}
    ),
    "logging": Setup(
        "logging",
        "gateway, every message logged",
        {"WS_LOG_MESSAGES": "true", "WS_LOG_MESSAGES_PER_SECOND": "0"},
    ),
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
    Run("gateway via NGINX's published port (docker-proxy)", "default", "published"),
    Run("gateway via NGINX on the host's network (no docker-proxy)", "default", "host-network"),
    Run("gateway direct, asyncio loop", "asyncio", "direct"),
    Run("gateway direct, message logging on", "logging", "direct"),
    Run("gateway via NGINX, message logging on", "logging", "nginx"),
    Run("gateway via NGINX's published port, message logging on", "logging", "published"),
    Run("gateway direct, WS_WORKERS=2", "workers2", "direct"),
    Run("gateway via NGINX, WS_WORKERS=2", "workers2", "nginx"),
    Run("gateway via NGINX, 2 replicas", "replicas2", "nginx"),
]
LATENCY_RUNS = [
    Run("bare websockets echo (asyncio)", "default", "baseline-asyncio"),
    Run("gateway direct", "default", "direct"),
    Run("gateway via NGINX", "default", "nginx"),
]
