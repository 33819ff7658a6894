"""A wheelhouse on the host, for server images built where `docker build` cannot reach PyPI.

The host's pip reaches PyPI (it trusts the local certificate authority); a build container
does not. So we download, on the host, the wheels of ``server/requirements.txt`` for the
base image's own Python and platform, hash-checked, into ``server/wheels/``, and the build
installs from there with ``--no-index``. One process at a time prepares a wheelhouse (a
machine-wide lock): two downloading into one folder would collide.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from stack.containers import run_once
from stack.machine_locks import lock

PROBE = "import platform, sys; print('%d.%d' % sys.version_info[:2], platform.machine())"


def target_of(base_image: str) -> tuple[str, str]:
    """Return (python version 'X.Y', machine) of the Python inside ``base_image``."""
    probe = run_once(base_image, ["python3", "-c", PROBE])
    if probe.exit_code != 0:
        raise RuntimeError(f"{base_image}: cannot run python3 ({probe.output.strip()[-500:]})")
    version, machine = probe.stdout.split()
    return version, machine


def prepare(base_image: str, requirements: Path, wheels: Path) -> None:
    """Fill ``wheels`` with exactly the wheels ``requirements`` needs on ``base_image``."""
    with lock("wheelhouse"):
        _download(base_image, requirements, wheels)


def _download(base_image: str, requirements: Path, wheels: Path) -> None:
    version, machine = target_of(base_image)
    tag = "cp" + version.replace(".", "")
    for wheel in wheels.glob("*.whl"):  # another Python's wheels would change the build context
        if (
            f"-{tag}-" not in wheel.name
            and "-abi3-" not in wheel.name
            and "-none-" not in wheel.name
        ):
            wheel.unlink()
    platforms = [f"manylinux_2_{minor}_{machine}" for minor in (28, 17, 5)] + [
        f"manylinux2014_{machine}",
        f"manylinux1_{machine}",
    ]
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--quiet",
            "--no-deps",
            "--only-binary=:all:",
            "--implementation",
            "cp",
            "--python-version",
            version,
            *(arg for p in platforms for arg in ("--platform", p)),
            "--require-hashes",
            "-r",
            str(requirements),
            "--dest",
            str(wheels),
        ],
        check=True,
    )
