"""Base images: the official ones when a registry answers, our own Debian builds when not.

The Dockerfiles take their base image as a build argument that defaults to the official
image. On a machine with no registry the pull fails; then we build an equivalent base from
Debian's packages with debootstrap, under our own name (never re-tagged as the official
one), once per machine: the image carries a label with the hash of its recipe, so a
changed recipe builds again and an unchanged one is reused.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import docker.errors

from stack import harness_config
from stack.docker_client import client, image_exists
from stack.machine_locks import lock

log = logging.getLogger(__name__)

RECIPE_LABEL = "io.websocket-gateway.base-recipe"
DEBIAN_MIRROR = harness_config.current().debian_mirror
# Debian's archive keys: debootstrap checks the suite's Release signature with them, and every
# package's hash against the Release (--force-check-gpg: never "Cannot check Release
# signature; keyring file not available" and on).
DEBIAN_KEYRING = harness_config.current().debian_keyring
# What the offline build needs on the host: debootstrap, the keyring and gpgv to verify what
# it downloads, CA certificates for an https mirror.
HOST_PACKAGES = ("debootstrap", "debian-archive-keyring", "gpgv", "ca-certificates")
# sid is the first suite with NGINX >= 1.27.3 (the upstream `resolve` parameter) and a
# Python >= 3.11; trixie's NGINX is 1.26 and bookworm's 1.22.
DEBIAN_SUITE = harness_config.current().debian_suite


@dataclass(frozen=True)
class BaseImage:
    """One base image: the official reference and the Debian recipe that replaces it."""

    role: str  # "python", "nginx", "prometheus", "nginx-exporter"
    official: str  # what the Dockerfile's BASE_IMAGE defaults to
    env_override: str  # environment variable that names another base image
    packages: tuple[str, ...]  # Debian packages of the equivalent image
    version_check: tuple[str, ...]  # a command whose success proves the version floor
    # (link, target) symlinks that give a command the official image's name.
    aliases: tuple[tuple[str, str], ...] = ()

    @property
    def recipe(self) -> str:
        links = [f"{link}->{target}" for link, target in self.aliases]
        # "verified": images built before signatures were checked are not reused.
        parts = [DEBIAN_SUITE, DEBIAN_MIRROR, "verified", *self.packages, *self.version_check]
        text = "\n".join([*parts, *links])
        return hashlib.sha256(text.encode()).hexdigest()[:12]

    @property
    def own_tag(self) -> str:
        return f"websocket-gateway/base-{self.role}:debian-{DEBIAN_SUITE}"


PYTHON = BaseImage(
    role="python",
    official="python:3.14-slim",
    env_override="PYTHON_BASE_IMAGE",
    # python3-venv brings ensurepip, so `python3 -m venv` gives a pip as in the official image.
    packages=("python3", "python3-venv", "ca-certificates"),
    version_check=("python3", "-c", "import sys; assert sys.version_info >= (3, 11)"),
)
NGINX = BaseImage(
    role="nginx",
    official="nginx:1.30",
    env_override="NGINX_BASE_IMAGE",
    # gettext-base gives envsubst and curl the health check, as in the official image.
    packages=("nginx", "gettext-base", "curl", "ca-certificates"),
    version_check=(
        "sh",
        "-c",
        "v=$(nginx -v 2>&1 | sed 's|.*/||'); "
        'dpkg --compare-versions "$v" ge 1.27.3 || { echo "nginx $v < 1.27.3" >&2; exit 1; }',
    ),
)
# The observability profile (docker compose --profile observability): Prometheus, whose
# package also ships promtool (the alerting-rule tests run it), and NGINX's exporter.
PROMETHEUS = BaseImage(
    role="prometheus",
    official="prom/prometheus:v3.5.0",
    env_override="PROMETHEUS_BASE_IMAGE",
    packages=("prometheus", "ca-certificates"),
    version_check=("promtool", "--version"),
)
NGINX_EXPORTER = BaseImage(
    role="nginx-exporter",
    official="nginx/nginx-prometheus-exporter:1.4.2",
    env_override="NGINX_EXPORTER_BASE_IMAGE",
    packages=("prometheus-nginx-exporter", "ca-certificates"),
    version_check=("nginx-prometheus-exporter", "--version"),
    # Debian names the binary prometheus-nginx-exporter; the official image (and so our
    # Dockerfile's ENTRYPOINT, which must also run on that shell-less image) the other way.
    aliases=(("usr/bin/nginx-prometheus-exporter", "prometheus-nginx-exporter"),),
)
ALL = (PYTHON, NGINX)
OBSERVABILITY = (PROMETHEUS, NGINX_EXPORTER)


def _pull(reference: str) -> bool:
    try:
        client().images.pull(reference)
    except docker.errors.APIError as e:
        log.info("cannot pull %s: %s", reference, e.explanation or e)
        return False
    return True


def resolve(base: BaseImage) -> str:
    """Return the base image to build on, building our own Debian one if need be.

    An explicit ``PYTHON_BASE_IMAGE``/``NGINX_BASE_IMAGE`` wins and must be present or
    pullable; otherwise the official image (pulled again first with
    ``WSGW_PULL_BASE_IMAGES=1``); otherwise ours.
    """
    config = harness_config.current()
    wanted = config.base_images.get(base.env_override)
    if wanted:
        if image_exists(wanted) or _pull(wanted):
            return wanted
        raise RuntimeError(
            f"{base.env_override}={wanted!r}: image not present and cannot be pulled"
        )
    with lock(f"base-{base.role}"):
        # A tag moves with its security fixes; a copy present here (restored from CI's
        # cache, say) would otherwise be built on forever. WSGW_PULL_BASE_IMAGES=1 (CI's
        # image step) pulls it first; a registry that does not answer keeps the copy.
        if config.pull_base_images:
            if _pull(base.official):
                return base.official
            print(f"warning: cannot pull {base.official}; using the copy present, if any")
        if image_exists(base.official) or _pull(base.official):
            return base.official
        if _current(base):
            return base.own_tag
        build(base)
        return base.own_tag


def _current(base: BaseImage) -> bool:
    try:
        image = client().images.get(base.own_tag)
    except docker.errors.ImageNotFound:
        return False
    return image.labels.get(RECIPE_LABEL) == base.recipe


def _missing_tools() -> list[str]:
    """What of debootstrap, the archive keyring and gpgv this host lacks."""
    missing = []
    if not (shutil.which("debootstrap") or Path("/usr/sbin/debootstrap").exists()):
        missing.append("debootstrap")
    if not Path(DEBIAN_KEYRING).is_file():
        missing.append(f"the Debian archive keyring ({DEBIAN_KEYRING})")
    if not shutil.which("gpgv"):
        missing.append("gpgv")
    return missing


def _debootstrap() -> str:
    """Path of debootstrap, with what it needs to verify the packages it downloads (the
    archive keyring, gpgv), installed from Debian's packages when missing and we are root.

    Only the offline fallback needs them, so ``make test`` asks for neither debootstrap nor
    root on a machine where a registry answers. Fails, naming what is missing, rather than
    build from packages it cannot verify.
    """
    if _missing_tools():
        if os.geteuid() != 0:
            raise RuntimeError(
                "no registry answered and the offline base images cannot be built with "
                f"verified packages: missing {', '.join(_missing_tools())}. Install them "
                f"(apt-get install {' '.join(HOST_PACKAGES)}; DEBIAN_KEYRING names another "
                "keyring file), run as root, or set PYTHON_BASE_IMAGE/NGINX_BASE_IMAGE to "
                "base images you have"
            )
        with lock("debootstrap"):
            if _missing_tools():
                print(f"installing {' '.join(HOST_PACKAGES)} (apt-get) ...", flush=True)
                quiet = {
                    "stdout": subprocess.DEVNULL,
                    "env": harness_config.subprocess_env(DEBIAN_FRONTEND="noninteractive"),
                }
                subprocess.run(["apt-get", "update", "-qq"], check=True, **quiet)
                subprocess.run(
                    ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *HOST_PACKAGES],
                    check=True,
                    **quiet,
                )
        if _missing_tools():
            raise RuntimeError(
                f"still missing after apt-get install: {', '.join(_missing_tools())} "
                "(set DEBIAN_KEYRING to the Debian archive keyring file)"
            )
    return shutil.which("debootstrap") or "/usr/sbin/debootstrap"


def debootstrap_command(base: BaseImage, root: Path) -> list[str]:
    """debootstrap for ``base`` into ``root``: the Release signature checked with
    DEBIAN_KEYRING, and no build at all when it cannot be (--force-check-gpg)."""
    return [
        _debootstrap(),
        "--variant=minbase",
        f"--keyring={DEBIAN_KEYRING}",
        "--force-check-gpg",
        "--include=" + ",".join(base.packages),
        DEBIAN_SUITE,
        str(root),
        DEBIAN_MIRROR,
    ]


def _run_debootstrap(base: BaseImage, root: Path) -> None:
    """Run debootstrap into ``root``, printing each stage as it starts (not every package)."""
    command = debootstrap_command(base, root)
    output: list[str] = []
    stages: set[str] = set()
    with subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    ) as process:
        assert process.stdout is not None
        for line in process.stdout:
            output.append(line)
            # "I: Retrieving libc6 2.41-6" -> stage "Retrieving", printed the first time only:
            # per-package stages alternate (Retrieving, Validating) a few hundred times.
            words = line.split()
            if len(words) > 1 and words[0] == "I:" and words[1] not in stages:
                stages.add(words[1])
                print(f"  base-{base.role}: debootstrap: {line.strip()[3:]}", flush=True)
    if process.returncode != 0:
        raise RuntimeError(
            f"debootstrap exited {process.returncode} (a Release signature that "
            f"{DEBIAN_KEYRING} cannot verify stops it too):\n" + "".join(output[-20:])
        )


def build(base: BaseImage) -> None:
    """Build ``base.own_tag`` from Debian packages with debootstrap; print how long it took."""
    started = time.monotonic()
    print(f"building base image {base.own_tag} from Debian {DEBIAN_SUITE} ...", flush=True)
    with tempfile.TemporaryDirectory(prefix=f"wsgw-base-{base.role}-") as tmp:
        root = Path(tmp) / "root"
        _run_debootstrap(base, root)
        for link, target in base.aliases:
            (root / link).symlink_to(target)
        subprocess.run(["chroot", str(root), *base.version_check], check=True)
        _slim(root)
        tarball = Path(tmp) / "root.tar"
        subprocess.run(
            ["tar", "-C", str(root), "--numeric-owner", "-cf", str(tarball), "."], check=True
        )
        repository, tag = base.own_tag.rsplit(":", 1)
        client().api.import_image(
            src=str(tarball),
            repository=repository,
            tag=tag,
            changes=[
                "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                "ENV LANG=C.UTF-8",
                f"LABEL {RECIPE_LABEL}={base.recipe}",
                f'LABEL org.opencontainers.image.description="Debian {DEBIAN_SUITE} '
                f'minbase with {" ".join(base.packages)}, built by websocket-gateway"',
                'CMD ["bash"]',
            ],
        )
    print(f"built {base.own_tag} in {time.monotonic() - started:.0f} s", flush=True)


def _slim(root: Path) -> None:
    """Drop what an image never needs: package caches and lists, documentation."""
    for sub in ("var/cache/apt/archives", "var/lib/apt/lists", "usr/share/doc", "usr/share/man"):
        path = root / sub
        if path.is_dir():
            for child in path.iterdir():
                if child.is_dir() and not child.is_symlink():
                    shutil.rmtree(child)
                elif child.name != "lock":
                    child.unlink()
