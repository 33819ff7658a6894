"""The gateway on a one-node Docker Swarm: deploy/swarm/stack.yaml with the current images.

    python -m stack swarm up [--replicas N] [--port P]   init a swarm if needed, deploy
    python -m stack swarm status                         services, replicas, task health
    python -m stack swarm down                           remove the stack; leave the swarm
                                                         only if `up` initialised it

`up` labels the node it initialised (``wsgw.created-by``), so `down` knows, from any
process, whether the swarm is ours to leave. A test run holds one swarm for all its swarm
tests (:func:`hold_for_run`, :func:`release_for_run`): made before its first stack starts
and left after its last is down, since init and leave rewire Docker's networking under
every stack beside them. Swarm virtual IPs and the ingress mesh need
IPVS, which this kind of host lacks: the stack file uses dnsrr and host-mode publishing.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

from websockets.exceptions import WebSocketException
from websockets.sync.client import connect

from stack import compose_file, docker_host, harness_config, images
from stack.machine_locks import lock
from stack.ports import free_port
from stack.waits import until

ROOT = Path(__file__).resolve().parents[1]
STACK_FILE = ROOT / "deploy" / "swarm" / "stack.yaml"
STACK = harness_config.current().swarm_stack
CREATED_LABEL = "wsgw.created-by"  # node label set when `up` initialised the swarm
RUN_LABEL = "wsgw.test-run"  # one node label per test run holding the swarm: <prefix>.<run>
MADE_BY_A_RUN = "pytest-run-"  # CREATED_LABEL's value when a test run initialised it
TIMEOUT = 180.0  # units (stack/waits.py) for a deploy to echo, or a removal to finish
FORCE_AFTER = 30.0  # seconds after `stack rm` when what is left is removed by force
ECHO = "swarm-up ✓"  # what wait_for_echo sends, and must get back


def docker(*args: str, check: bool = True, env: dict[str, str] | None = None) -> str:
    """Run the docker CLI; return stdout (raise with stderr on failure when ``check``)."""
    result = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=120, env=env)
    if check and result.returncode != 0:
        raise RuntimeError(f"docker {' '.join(args)}: {result.stderr.strip()}")
    return result.stdout


def node_state() -> str:
    """This host's swarm state: 'inactive', 'active', 'pending', 'error', 'locked'."""
    return docker("info", "--format", "{{.Swarm.LocalNodeState}}").strip()


def node_labels() -> dict[str, str]:
    """This swarm node's labels ({} outside a swarm)."""
    if node_state() != "active":
        return {}
    labels = docker("node", "inspect", "self", "--format", "{{json .Spec.Labels}}")
    return json.loads(labels) or {}


def created_by_us() -> bool:
    """True when this swarm was initialised by `up` (its node carries our label)."""
    return CREATED_LABEL in node_labels()


def _node_id() -> str:
    return docker("info", "--format", "{{.Swarm.NodeID}}").strip()


def init(created_by: str = "python-m-stack") -> bool:
    """Make this host a one-node swarm unless it is in one; return True if we did.

    ``created_by``: the value of the node's CREATED_LABEL, saying who may leave it.
    """
    if node_state() == "active":
        return False
    try:
        docker("swarm", "init")
    except RuntimeError as e:  # several addresses: Docker wants one named
        if "advertise" not in str(e):
            raise
        docker("swarm", "init", "--advertise-addr", "127.0.0.1")
    try:
        docker("node", "update", "--label-add", f"{CREATED_LABEL}={created_by}", _node_id())
    except BaseException:
        docker("swarm", "leave", "--force")
        raise
    return True


def hold_for_run(run: str) -> bool:
    """Make this host a swarm for test run ``run`` (unless it is in one) and note the run
    on the node; return True if this call initialised it.

    Call it before the run starts any stack: init rewires Docker's networking (the
    ingress network, docker_gwbridge, iptables), which made stacks running beside it
    answer 502. Idempotent, so each pytest-xdist worker may call it.
    """
    with lock("swarm"):
        created = init(created_by=f"{MADE_BY_A_RUN}{run}")
        docker("node", "update", "--label-add", f"{RUN_LABEL}.{run}=held", _node_id())
    return created


def release_for_run(run: str) -> bool:
    """Drop test run ``run``'s hold; when a test run made the swarm and no run holds it any
    more, remove what is left of the stack and leave it. Return True if it left.

    Call it after the run's last stack is down (it waits for any swarm deployment of
    another process to end: the same machine-wide lock).
    """
    with lock("swarm"):
        labels = node_labels()
        mine = f"{RUN_LABEL}.{run}"
        if mine not in labels:
            return False
        docker("node", "update", "--label-rm", mine, _node_id())
        held = [k for k in labels if k.startswith(f"{RUN_LABEL}.") and k != mine]
        if held or not labels.get(CREATED_LABEL, "").startswith(MADE_BY_A_RUN):
            return False
        return down(leave=True)


def url(port: int) -> str:
    return f"ws://{docker_host.address()}:{port}/ws"


def echo_once(target: str) -> str:
    """One echo through NGINX; return it, or raise unless it comes back intact."""
    with connect(target, open_timeout=3, close_timeout=2, proxy=None) as ws:
        ws.send(ECHO)
        answer = ws.recv(timeout=3)
        if answer != ECHO:
            raise RuntimeError(f"echo differs: {answer!r}")
        return answer


def wait_for_echo(target: str, within: float = TIMEOUT) -> None:
    """Retry :func:`echo_once` until it passes; ConditionTimeout with the last error after
    ``within`` units."""
    until(
        lambda: echo_once(target),
        f"an echo through NGINX at {target}",
        within,
        errors=(OSError, RuntimeError, WebSocketException),
    )


def deploy(replicas: int, port: int, settings: dict[str, str] | None = None) -> None:
    """`docker stack deploy` the stack file with the current images (local tags).

    ``settings``: more of the stack file's variables (SERVER_UPDATE_MONITOR, WS_RATE_LIMIT...).
    """
    tags = images.ensure_all()
    env = harness_config.subprocess_env(
        **(settings or {}),
        **compose_file.machine_settings(),  # SERVER_NOFILE, NGINX_NOFILE: what the engine allows
        SERVER_IMAGE=tags["server"],
        NGINX_IMAGE=tags["nginx"],
        SERVER_REPLICAS=str(replicas),
        GATEWAY_PORT=str(port),
        SERVER_NAMES=docker_host.server_names(),  # the Host header url() makes
    )
    # --resolve-image never: the images are local tags, no registry holds them.
    docker(
        *("stack", "deploy", "--resolve-image", "never", "--prune"),
        *("--compose-file", str(STACK_FILE), STACK),
        env=env,
    )


def up(replicas: int = 3, port: int = 8080, settings: dict[str, str] | None = None) -> str:
    """Init (if needed), deploy, wait for an echo through NGINX; return the URL."""
    created = init()
    try:
        deploy(replicas, port, settings)
        wait_for_echo(url(port))
    except BaseException:
        down() if created else None
        raise
    return url(port)


@contextlib.contextmanager
def deployed(
    replicas: int = 3, port: int | None = None, settings: dict[str, str] | None = None
) -> Iterator[str]:
    """The stack up on a swarm for the ``with`` block; yields the URL through NGINX.

    For tests, scenarios and the bench: holds a machine-wide lock (one swarm per host),
    always removes the stack, and leaves the swarm only if it was in none before, also
    when the block fails; raises if the host's swarm state did not come back. In a test
    run the swarm is the run's (:func:`hold_for_run`): it stays.
    """
    with lock("swarm"):
        before = node_state()
        try:
            yield up(replicas, port or free_port(), settings)
        finally:
            # A swarm that was there before stays (even one an earlier `up` made).
            down(leave=before != "active")
            after = node_state()
            if after != before:
                raise RuntimeError(f"the host's swarm state changed: {before} -> {after}")


def services() -> list[dict[str, str]]:
    """The stack's services as `docker stack services` reports them."""
    if node_state() != "active":
        return []
    out = docker("stack", "services", STACK, "--format", "{{json .}}", check=False)
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def tasks(service: str) -> list[dict[str, str]]:
    """Running and recent tasks of ``service`` (e.g. 'server'), with their states."""
    out = docker("service", "ps", f"{STACK}_{service}", "--format", "{{json .}}", check=False)
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def containers(service: str) -> list[str]:
    """IDs of this node's running containers of ``service``."""
    label = f"com.docker.swarm.service.name={STACK}_{service}"
    return docker("ps", "-q", "--filter", f"label={label}").split()


def health(container: str) -> str:
    return docker(
        "inspect", "--format", "{{if .State.Health}}{{.State.Health.Status}}{{end}}", container
    ).strip()


def inspect(service: str) -> dict:
    """`docker service inspect` of ``service`` (e.g. 'server'): Spec, UpdateStatus..."""
    return json.loads(docker("service", "inspect", f"{STACK}_{service}"))[0]


def logs(service: str) -> str:
    """The output of this node's containers of ``service``, running or stopped.

    Not `docker service logs`: it hangs here once a task's container is gone, and the
    engine removes the containers of replaced tasks (their logs go with them).
    """
    label = f"com.docker.swarm.service.name={STACK}_{service}"
    found = docker("ps", "-aq", "--filter", f"label={label}").split()
    outputs = [
        subprocess.run(
            ["docker", "logs", c], capture_output=True, text=True, timeout=60, check=False
        )
        for c in found
    ]
    return "\n".join(out.stdout + out.stderr for out in outputs)


METRICS = (
    "import urllib.request;"
    "print(urllib.request.urlopen('http://127.0.0.1:3000/metrics', timeout=3).read().decode())"
)


def active_connections(container: str) -> int:
    """A replica's ws_connections_active gauge, read from inside its container (the host
    cannot route to overlay addresses)."""
    out = docker("exec", container, "python3", "-c", METRICS)
    (line,) = [x for x in out.splitlines() if x.startswith("ws_connections_active ")]
    return int(float(line.split()[1]))


def down(*, leave: bool = True) -> bool:
    """Remove the stack and wait until its tasks and networks are gone; leave the swarm
    if `up` initialised it (and ``leave``). Return True if it left the swarm."""
    if node_state() != "active":
        return False
    docker("stack", "rm", STACK, check=False)
    label = f"label=com.docker.stack.namespace={STACK}"
    forced_after = time.monotonic() + FORCE_AFTER

    def gone() -> bool:
        containers = docker("ps", "-aq", "--filter", label).split()
        networks = docker("network", "ls", "-q", "--filter", label).split()
        if (containers or networks) and time.monotonic() > forced_after:
            # Seen once in a full suite: the stack's removal still unfinished after 180 s.
            # What Docker has not removed by now is removed by force, and said.
            print(f"swarm down: forcing {len(containers)} containers, {len(networks)} networks")
            if containers:
                docker("rm", "-f", *containers, check=False)
            if networks:
                docker("network", "rm", *networks, check=False)
        return not (containers or networks)

    until(gone, f"stack {STACK}'s containers and networks removed", TIMEOUT)
    if leave and created_by_us():
        docker("swarm", "leave", "--force")
        # Swarm init made it and leaving keeps it; nothing of the host's uses it then.
        docker("network", "rm", "docker_gwbridge", check=False)
        return True
    return False


# ---- the CLI: python -m stack swarm up|status|down -----------------------------------------
def _up(args) -> int:
    target = up(args.replicas, args.port)
    print(f"stack {STACK} is up on a swarm ({args.replicas} server replicas)")
    print(f"  through NGINX:  {target}")
    print(f"  NGINX health:   http://{docker_host.address()}:{args.port}/healthz")
    print("  status:         python -m stack swarm status")
    print("  stop it with:   python -m stack swarm down")
    return 0


def _status(args) -> int:
    found = services()
    if not found:
        print(f"no stack {STACK} (swarm: {node_state()})")
        return 0
    for service in found:
        print(f"{service['Name']}: {service['Replicas']} replicas, image {service['Image']}")
        short = service["Name"].removeprefix(f"{STACK}_")
        for container in containers(short):
            print(f"  {container[:12]}: {health(container) or 'no health check'}")
    print(f"swarm created by `swarm up`: {'yes' if created_by_us() else 'no'}")
    return 0


def _down(args) -> int:
    left = down()
    print(f"stack {STACK} removed" + ("; left the swarm `up` created" if left else ""))
    return 0


def register(sub) -> None:
    """Add `swarm up|status|down` to the ``python -m stack`` subcommands."""
    swarm = sub.add_parser("swarm", help="the stack on a one-node Docker Swarm")
    actions = swarm.add_subparsers(dest="swarm_command", required=True)
    up_parser = actions.add_parser("up", help="init a swarm if needed, deploy, print the URL")
    up_parser.add_argument("--replicas", type=int, default=3, help="server replicas (3)")
    up_parser.add_argument("--port", type=int, default=8080, help="NGINX host port (8080)")
    up_parser.set_defaults(run=_up)
    actions.add_parser("status", help="services, replicas, health").set_defaults(run=_status)
    actions.add_parser("down", help="remove the stack (and the swarm up made)").set_defaults(
        run=_down
    )
