"""python -m stack: run the gateway's deployables by hand.

python -m stack images            build (or find) both images, print their tags
python -m stack up [--name N]     start a stack and leave it running; prints its URLs
python -m stack status            list the stacks on this machine, and whether the
                                  published NGINX ports answer from the host
python -m stack check-port [--wait S] [--port P]
                                  just the published-port check (exit 1: one is dead)
python -m stack logs N [server|nginx]
python -m stack down [N | --all]  remove a stack (or every stack)
python -m stack compose-env       shell exports that make `docker compose` build offline
"""

from __future__ import annotations

import argparse
import shlex
import sys

from testcontainers.core.config import testcontainers_config

from stack import gateway, images, published
from stack.docker_client import client


def _images(args: argparse.Namespace) -> int:
    for name, tag in images.ensure_all().items():
        print(f"{name}: {tag}")
    return 0


def _up(args: argparse.Namespace) -> int:
    # A stack started by hand outlives this process: no reaper may take it down.
    testcontainers_config.ryuk_disabled = True
    stack = gateway.GatewayStack.up(args.name)
    print(f"stack {stack.name} is up")
    print(f"  through NGINX:  {stack.url}")
    print(f"  NGINX health:   {stack.http}/healthz")
    # The server publishes no port: its address is reachable from the host only with
    # rootful Docker on Linux; exec works wherever the Docker API does.
    print(f"  server direct:  ws://{stack.server_ip}:{gateway.SERVER_PORT}/ws   (from the host)")
    print(
        f"  server metrics: docker exec {stack.server.name} python3 -c "
        "\"import urllib.request as u; print(u.urlopen('http://127.0.0.1:3000/metrics')"
        '.read().decode())"'
    )
    print(f"  stop it with:   python -m stack down {stack.name}")
    return 0


def _status(args: argparse.Namespace) -> int:
    names = gateway.stack_names()
    if not names:
        print("no stacks running")
    for name in names:
        containers = client().containers.list(
            all=True, filters={"label": f"{gateway.LABEL}={name}"}
        )
        states = ", ".join(f"{c.name}={c.status}" for c in containers)
        print(f"{name}: {states}")
    for line in published.report():
        print(line)
    return 0


def _check_port(args: argparse.Namespace) -> int:
    return published.main(args.wait, args.port)


def _logs(args: argparse.Namespace) -> int:
    for role in [args.role] if args.role else ["server", "nginx"]:
        for c in client().containers.list(
            all=True,
            filters={"label": f"{gateway.LABEL}={args.name}", "name": f"{args.name}-{role}"},
        ):
            print(f"==> {c.name} <==")
            print(c.logs().decode(errors="replace"), end="")
    return 0


def _down(args: argparse.Namespace) -> int:
    if not args.name and not args.all:
        print("name a stack or pass --all (see: python -m stack status)", file=sys.stderr)
        return 2
    removed = gateway.remove_all(None if args.all else args.name)
    print(f"removed {removed} container(s)")
    return 0


def _compose_env(args: argparse.Namespace) -> int:
    for key, value in images.env_for_compose().items():
        print(f"export {key}={shlex.quote(value)}")
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m stack", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("images", help="build (or find) both images").set_defaults(run=_images)
    up = sub.add_parser("up", help="start a stack and leave it running")
    up.add_argument("--name", help="stack name (default: wsgw-<random>)")
    up.set_defaults(run=_up)
    sub.add_parser("status", help="list the stacks on this machine").set_defaults(run=_status)
    check = sub.add_parser(
        "check-port", help="whether every published NGINX port answers from the host"
    )
    check.add_argument("--wait", type=float, default=0.0, help="seconds to wait for it (0)")
    check.add_argument("--port", type=int, help="only this host port (default: every one)")
    check.set_defaults(run=_check_port)
    logs = sub.add_parser("logs", help="print a stack's container logs")
    logs.add_argument("name")
    logs.add_argument("role", nargs="?", choices=["server", "nginx"])
    logs.set_defaults(run=_logs)
    down = sub.add_parser("down", help="remove a stack")
    down.add_argument("name", nargs="?")
    down.add_argument("--all", action="store_true", help="remove every stack on this machine")
    down.set_defaults(run=_down)
    sub.add_parser(
        "compose-env", help="exports for an offline `docker compose build`"
    ).set_defaults(run=_compose_env)
    # Failure scenarios (issue #4): `python -m stack scenario --list | NAME | all`.
    from stack.scenarios.command import register as register_scenario

    register_scenario(sub)
    # Load and performance (issue #5): `python -m stack bench --help`.
    from stack.bench import register as register_bench

    register_bench(sub)
    # Docker Swarm (issue #13): `python -m stack swarm up|status|down`.
    from stack.swarm import register as register_swarm

    register_swarm(sub)
    # Observability (issue #14): `python -m stack observe-graph`, the picture in the docs.
    from stack.observability import register as register_observe_graph

    register_observe_graph(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    return args.run(args)
