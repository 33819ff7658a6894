"""Is NGINX's published port alive? Checked from the host, the way a user reaches it.

On an engine with its userland proxy on (Docker's default), a published port is a
``docker-proxy`` process on the host. It can die (it keeps about six descriptors per
connection against its own limit: ~3,000 connections here) while both containers stay
healthy: the port then refuses every connection until the stack is recreated. Container
health checks run inside the containers and cannot see it; this check can.
"""

from __future__ import annotations

import contextlib
import http.client
import socket

from stack.docker_client import client

NGINX_PORT = 8080


def check(host: str, port: int, timeout: float = 2.0) -> str | None:
    """None if ``GET /healthz`` through ``host:port`` answers 200; otherwise what went wrong."""
    connection = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        connection.request("GET", "/healthz", headers={"Host": "localhost"})
        status = connection.getresponse().status
    except (OSError, http.client.HTTPException) as exc:
        return f"{type(exc).__name__}: {exc}"
    finally:
        connection.close()
    return None if status == 200 else f"/healthz answered {status}"


def nginx_ports() -> list[tuple[str, str, int]]:
    """(container, host address, host port) of every running NGINX's published 8080."""
    found = []
    for container in client().containers.list(filters={"status": "running"}):
        bindings = container.attrs["NetworkSettings"]["Ports"].get(f"{NGINX_PORT}/tcp") or []
        for binding in bindings:
            host = binding["HostIp"] or "0.0.0.0"
            found.append((container.name, host, int(binding["HostPort"])))
    return found


def report(only_port: int | None = None) -> list[str]:
    """One line per published NGINX port (or only host port ``only_port``): does it answer?"""
    lines = []
    for name, host, port in nginx_ports():
        if only_port is not None and port != only_port:
            continue
        target = "127.0.0.1" if host in ("0.0.0.0", "") else "::1" if host == "::" else host
        problem = check(target, port)
        verdict = "answers" if problem is None else f"DEAD ({problem})"
        hint = (
            ""
            if problem is None
            else "; the containers may still be healthy: if docker-proxy exited, recreate "
            "the stack (see docs/deployment.md, published port)"
        )
        lines.append(f"published port {host}:{port} of {name}: {verdict}{hint}")
    return lines


def main(wait: float = 0.0, port: int | None = None) -> int:
    """Print :func:`report`; with ``wait``, first wait that long for ``port`` to be published."""
    from stack.waits import until

    if wait:
        with contextlib.suppress(Exception):  # reported below, port by port
            until(
                lambda: (
                    any(port in (None, p) for _, _, p in nginx_ports())
                    and check("127.0.0.1", port or NGINX_PORT) is None
                ),
                f"published port {port or NGINX_PORT} to answer",
                wait,
                errors=(OSError, socket.timeout),
            )
    lines = report(port)
    for line in lines or ["no published NGINX port running"]:
        print(line, flush=True)
    return 0 if lines and all(" answers" in line for line in lines) else 1
