"""Memory per idle connection: the bare echo and the server direct, then NGINX's own share.

The NGINX row counts NGINX's cgroup only (its two sockets and tunnel buffers per
WebSocket); the server's share of those connections is the "gateway direct" row.
"""

from __future__ import annotations

from typing import Any

from stack.bench import baseline, resource_usage
from stack.bench.loadgen import ClientPool, split
from stack.bench.setups import SETUPS
from stack.bench.stacks import Session, start_baseline
from stack.gateway import NGINX_PORT, SERVER_PORT
from stack.waits import settled


def run(session: Session) -> dict[str, Any]:
    """Idle connections to the bare echo, the gateway, then through NGINX: what each costs."""
    s, progress = session.settings, session.progress
    count = s.memory_connections
    stack = session.stack(SETUPS["default"])
    rows: list[dict[str, Any]] = []
    try:
        container = start_baseline(stack, "asyncio")
        ip = container.ip(stack.backend)
        for name, target, cid in (
            ("bare websockets echo (asyncio)", (ip, baseline.PORT), container.id),
            ("gateway direct", (stack.server_ip, SERVER_PORT), stack.server.id),
            ("NGINX (its own cgroup)", (stack.nginx.ip(stack.edge), NGINX_PORT), stack.nginx.id),
        ):
            task = progress.add_task(f"memory: {count:,} idle to {name}", total=count, info="")
            with ClientPool(s.clients) as pool:
                settled(lambda cid=cid: resource_usage.memory_bytes(cid), f"{name}: memory at rest")
                before = resource_usage.memory_bytes(cid), resource_usage.rss_anon_bytes(cid)
                answers = pool.call(
                    [
                        {
                            "op": "open",
                            "targets": [(*target, "localhost")],
                            "count": n,
                            "concurrency": 50,
                        }
                        for n in split(count, s.clients)
                    ],
                    timeout=300,
                    tick=lambda task=task, pool=pool: progress.update(
                        task, completed=pool.total(2)
                    ),
                )
                opened = sum(r["open"] for r in answers)
                settled(
                    lambda cid=cid: resource_usage.memory_bytes(cid),
                    f"{name}: memory with {opened:,} open",
                )
                after = resource_usage.memory_bytes(cid), resource_usage.rss_anon_bytes(cid)
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
            progress.update(
                task,
                completed=count,
                info=f"{row['bytes_per_connection'] / 1024:.1f} KiB/conn (cgroup), "
                f"{row['anon_bytes_per_connection'] / 1024:.1f} KiB (RssAnon)",
            )
    finally:
        stack.down()
    return {"connections": count, "rows": rows}
