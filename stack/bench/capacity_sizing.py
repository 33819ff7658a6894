"""The capacity run's limits, sized from its target (:func:`setup_for`), and its pace.

- descriptors: the engine grants each container process at most its own hard limit
  (20,000 here). A server process holds one per connection, an NGINX worker two: a server
  process gets at most PER_SERVER_PROCESS connections (WS_WORKERS, SO_REUSEPORT), an NGINX
  worker PER_NGINX_WORKER (WORKER_PROCESSES, reuseport);
- ports: one (source, destination address:port) pair carries PER_PAIR connections before
  connect() turns slow (see PER_PAIR). NGINX reaches a server container from one address:
  PER_SERVER per container, more containers (compose --scale server=N) past it, which
  NGINX balances (least_conn). The load generator connects from the host's address on each
  network NGINX is on, PER_PAIR each (networks of the stack's own are added for more),
  from one client process per CLIENT_PROCESS connections;
- admission: WS_MAX_CONNECTIONS is each server process's share plus CAP_ROOM, so past the
  target the servers' cap answers 503 first, while NGINX's workers still have room.
"""

from __future__ import annotations

import math

from stack import compose_file
from stack.bench.bench_settings import Settings
from stack.bench.setups import Setup

# Room per idle connection when the capacity run raises memory limits: measured here at
# about 21 KiB (server) and 28 KiB (NGINX, both sockets of a tunnel), plus a quarter.
BYTES_PER_CONNECTION = {"server": 27 * 1024, "nginx": 34 * 1024}
# Ports: connect() takes its ephemeral port from the even half of the range (32768-60999)
# first, and scans all of that half before the odd one: past ~14,000 connections per
# (source, destination address:port) pair every connect() walks 14,000 ports in the kernel,
# and the ramp stalls in system time (measured: from about 70,000 with 15,000 per pair).
PER_PAIR = 12500  # connections per (source address, destination address:port)
PER_SERVER = PER_PAIR  # per server container: NGINX reaches it from one address
PER_SERVER_PROCESS = 15000  # connections per server process (20,000 descriptors)
PER_NGINX_WORKER = 7500  # WebSockets per NGINX worker (two descriptors each)
# Connections per load generator process: room in its 20,000 descriptors for its share of
# the target and of the overflow past it. Fewer, fuller processes cost less CPU per
# WebSocket (a 25,000 ramp of the 100,000 setup: 7 processes 2,370-2,540/s, 9 2,260-2,410/s).
CLIENT_PROCESS = 16000
CAP_ROOM = 1.05  # WS_MAX_CONNECTIONS: a server process's share of the target, plus 5 %
# Handshakes in flight at once, over all client processes, as many independent clients
# arriving at 2,000/s with a few hundred ms each would have. With 200, the 31 processes of
# a 100,000 run left the cores 15 % idle between their turns (measured ramps of 25,000 with
# the 100,000 setup: 200 in flight 1,970-2,050/s, 600 2,120-2,360/s, 1,200 2,260-2,410/s).
HANDSHAKES_IN_FLIGHT = 1000
OVERFLOW = 0.1  # past the target, this share of it more is tried
# ... each given this long for its answer: a refusal that takes longer counts as a hang
# (NGINX's own bound: PROXY_CONNECT_TIMEOUT 5 s per try, 3 tries).
BEYOND_WITHIN = 30.0
HOLD_SECONDS = 60  # at the top, every connection answers heartbeats this long at least
# Heartbeats are CPU: every ping crosses NGINX twice. The interval grows with the target so
# that pings stay under this many a second (100,000 connections: 20 s, the compose default).
PINGS_PER_SECOND = 5000
# Handshakes per second per client address NGINX allows: the ramp's 2,000 and more per
# second come from a few host addresses, so the per-IP rate limit is set for that (with
# room), not switched off; per-IP open connections: each address brings PER_PAIR.
RAMP_RATE_PER_ADDRESS = 5000


def setup_for(settings: Settings) -> Setup:
    """Server containers, processes, NGINX workers, caps and rate limits for the target."""
    target = settings.capacity
    ping_interval = ping_interval_for(settings)
    replicas = max(1, math.ceil(target / PER_SERVER))
    server_workers = max(1, math.ceil(target / replicas / PER_SERVER_PROCESS))
    cap = math.ceil(target / replicas / server_workers * CAP_ROOM)
    nginx_workers = max(2, math.ceil(target / PER_NGINX_WORKER))
    nofile = min(
        int(u["Soft"])
        for u in compose_file.runtime_kwargs("nginx")["ulimits"]
        if u["Name"] == "nofile"
    )
    return Setup(
        "capacity",
        f"gateway, {replicas} server container(s) of WS_WORKERS={server_workers} "
        f"(WS_MAX_CONNECTIONS={cap}), NGINX {nginx_workers} workers "
        f"(PROXY_BUFFER_SIZE=1k), ping every {ping_interval:g} s",
        {
            "WS_WORKERS": str(server_workers),
            "WS_PING_INTERVAL": f"{ping_interval:g}",
            "WS_MAX_CONNECTIONS": str(cap),
        },
        {
            "WORKER_PROCESSES": str(nginx_workers),
            "WORKER_CONNECTIONS": str(min(nofile, 65536)),
            "WORKER_RLIMIT_NOFILE": str(min(nofile, 65536)),
            # Many idle, small-message clients: 2 KiB less per WebSocket (docs/benchmarks.md).
            "PROXY_BUFFER_SIZE": "1k",
            "WS_RATE_LIMIT": f"{RAMP_RATE_PER_ADDRESS}r/s",
            "WS_RATE_BURST": str(RAMP_RATE_PER_ADDRESS),
            "WS_CONN_LIMIT_PER_IP": str(min(65535, 2 * PER_PAIR)),
            "PROXY_READ_TIMEOUT": f"{read_timeout_for(ping_interval)}s",
        },
        replicas=replicas,
    )


def read_timeout_for(ping_interval: float) -> int:
    """PROXY_READ_TIMEOUT (seconds) for ``ping_interval``: NGINX closes a tunnel the server
    leaves silent that long, and an idle tunnel's server speaks only to ping, up to a sweep
    tick (a quarter of the interval or of WS_PING_TIMEOUT) late. Twice that, at least the
    compose default of 60 s: a longer ``--ping-interval`` must not be cut by NGINX first."""
    timeout = float(compose_file.environment("server")["WS_PING_TIMEOUT"])
    return max(60, math.ceil(2 * (ping_interval + min(ping_interval, timeout) / 4)))


def ping_interval_for(settings: Settings) -> float:
    """WS_PING_INTERVAL of the run: ``--ping-interval``, or longer to keep pings per second
    under PINGS_PER_SECOND."""
    return max(settings.ping_interval, math.ceil(settings.capacity / PINGS_PER_SECOND))
