"""The two application images, each tagged by a hash of its build context.

Unchanged code is never rebuilt: the tag is ``websocket-gateway/<name>:<hash>``, where the
hash covers every file the build sees (after .dockerignore), the base image's id and the
build arguments. Parallel pytest workers share one build through a machine-wide lock.

One path prepares a build, here and for ``docker compose build`` (:func:`env_for_compose`):
:func:`build_args` resolves the base image (stack/base_images.py) and, on our offline base,
prepares the server's wheelhouse (stack/wheelhouse.py, under its lock).
"""

from __future__ import annotations

import hashlib
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from docker.utils.build import exclude_paths

from stack import base_images, compose_file, harness_config, wheelhouse
from stack.base_images import BaseImage
from stack.docker_client import client, image_exists
from stack.machine_locks import lock

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class AppImage:
    """One deployable: its build context and the base image it builds on."""

    name: str
    context: Path
    base: BaseImage


SERVER = AppImage("server", ROOT / "server", base_images.PYTHON)
NGINX = AppImage("nginx", ROOT / "nginx", base_images.NGINX)
# The observability profile (docker compose --profile observability).
PROMETHEUS = AppImage("prometheus", ROOT / "observability" / "prometheus", base_images.PROMETHEUS)
NGINX_EXPORTER = AppImage(
    "nginx-exporter", ROOT / "observability" / "nginx-exporter", base_images.NGINX_EXPORTER
)
OBSERVABILITY = (PROMETHEUS, NGINX_EXPORTER)


def context_digest(context: Path, extra: str = "") -> str:
    """Hash of every file the Docker build of ``context`` sees, plus ``extra``."""
    ignore = context / ".dockerignore"
    patterns = [
        line.strip()
        for line in (ignore.read_text().splitlines() if ignore.exists() else [])
        if line.strip() and not line.startswith("#")
    ]
    digest = hashlib.sha256(extra.encode())
    for relative in sorted(exclude_paths(str(context), patterns)):
        path = context / relative
        if path.is_file():
            digest.update(relative.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:12]


def build_args(app: AppImage) -> dict[str, str]:
    """``app``'s build arguments, with what they name in place: ``BASE_IMAGE`` resolved
    (built offline if need be) and, for the server on our offline base, which installs from
    wheels only (``WHEELS_ONLY=1``), its wheelhouse prepared."""
    base_ref = base_images.resolve(app.base)
    args = {"BASE_IMAGE": base_ref}
    if app is SERVER:
        offline = base_ref == app.base.own_tag
        args["WHEELS_ONLY"] = "1" if offline else "0"
        if offline:
            wheelhouse.prepare(base_ref, app.context / "requirements.txt", app.context / "wheels")
    return args


def ensure(app: AppImage) -> str:
    """Return the tag of ``app``'s image for the current code, building it if need be."""
    args = build_args(app)
    base_id = client().images.get(args["BASE_IMAGE"]).id
    digest = context_digest(app.context, base_id + repr(sorted(args.items())))
    tag = f"websocket-gateway/{app.name}:{digest}"
    with lock(f"image-{app.name}"):
        if not image_exists(tag):
            started = time.monotonic()
            print(f"building {tag} on {args['BASE_IMAGE']} ...", flush=True)
            _build(app, tag, args)
            print(f"built {tag} in {time.monotonic() - started:.0f} s", flush=True)
    return tag


def _build(app: AppImage, tag: str, args: dict[str, str]) -> None:
    """Build ``tag`` from ``app.context``, printing each Dockerfile step as it starts."""
    output: list[str] = []
    for chunk in client().api.build(
        path=str(app.context), tag=tag, buildargs=args, rm=True, forcerm=True, decode=True
    ):
        if "error" in chunk:
            raise RuntimeError(
                f"building {tag} failed: {chunk['error'].strip()}\n" + "".join(output[-20:])
            )
        line = chunk.get("stream", "")
        output.append(line)
        if line.startswith("Step "):
            print(f"  {app.name}: {line.strip()}", flush=True)


def ensure_on_server(context: Path, server_tag: str) -> str:
    """Return the tag of the image built from ``context``'s Dockerfile ``FROM`` the server
    image ``server_tag`` (its ``SERVER_IMAGE`` argument): an application shipped with the
    gateway, like examples/broadcast_room. Tagged by content, as the others."""
    name = context.name.replace("_", "-")
    tag = f"websocket-gateway/{name}:{context_digest(context, server_tag)}"
    with lock(f"image-{name}"):
        if not image_exists(tag):
            app = AppImage(name, context, SERVER.base)
            _build(app, tag, {"SERVER_IMAGE": server_tag})
    return tag


def ensure_all() -> dict[str, str]:
    """Build (or find) both images; return {"server": tag, "nginx": tag}."""
    # The two (and their base images, half a minute each to build offline) are independent.
    apps = (SERVER, NGINX)
    with ThreadPoolExecutor(max_workers=len(apps)) as pool:
        return {app.name: tag for app, tag in zip(apps, pool.map(ensure, apps), strict=True)}


def observability_wanted() -> bool:
    """True when Compose will start the observability profile (COMPOSE_PROFILES names it)."""
    profiles = harness_config.current().compose_profiles
    return "observability" in profiles or "*" in profiles


def env_for_compose(observability: bool | None = None) -> dict[str, str]:
    """Environment that makes ``docker compose build`` use the same base images and wheels.

    The observability profile's bases too when COMPOSE_PROFILES asks for it (building them
    offline takes a minute; nobody waits for it otherwise).
    """
    env = compose_file.machine_settings()
    if observability is None:
        observability = observability_wanted()
    apps = (SERVER, NGINX, *(OBSERVABILITY if observability else ()))
    for app in apps:
        args = build_args(app)
        env[app.base.env_override] = args.pop("BASE_IMAGE")
        env.update(args)  # WHEELS_ONLY
    return env
