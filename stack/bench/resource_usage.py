"""Resource usage the bench reads (containers' CPU and memory, the host's CPU) and the machine.

CPU and memory come from the container's cgroup files when the host exposes them (cgroup
v1 ``cpuacct``/``memory`` under ``docker/<id>``, or v2 ``system.slice/docker-<id>.scope``):
reading a file is instant, where one ``docker stats`` sample takes a second or two. When
neither layout exists, ``docker stats`` (one-shot) is the fallback. Memory is what
``docker stats`` shows: usage minus the inactive page cache.
"""

from __future__ import annotations

import os
import platform
import subprocess
import time
from contextlib import suppress
from pathlib import Path

import docker.errors

from stack.containers import run_once
from stack.docker_client import client

CGROUP = Path("/sys/fs/cgroup")


def _v1(controller: str, cid: str) -> Path | None:
    path = CGROUP / controller / "docker" / cid
    return path if path.is_dir() else None


def _v2(cid: str) -> Path | None:
    for path in (CGROUP / "system.slice" / f"docker-{cid}.scope", CGROUP / "docker" / cid):
        if (path / "cpu.stat").exists():
            return path
    return None


def _stats(cid: str) -> dict:
    return client().api.stats(cid, stream=False, one_shot=True)


def cpu_seconds(cid: str) -> float:
    """CPU seconds the container has used so far (all its processes)."""
    if (path := _v1("cpuacct", cid)) is not None:
        return int((path / "cpuacct.usage").read_text()) / 1e9
    if (path := _v2(cid)) is not None:
        for line in (path / "cpu.stat").read_text().splitlines():
            if line.startswith("usage_usec "):
                return int(line.split()[1]) / 1e6
    return _stats(cid)["cpu_stats"]["cpu_usage"]["total_usage"] / 1e9


def throttled_seconds(cid: str) -> float:
    """Time the container's CPU quota held it back (CFS throttling), so far."""
    if (path := _v1("cpu", cid)) is not None and (path / "cpu.stat").exists():
        for line in (path / "cpu.stat").read_text().splitlines():
            if line.startswith("throttled_time "):
                return int(line.split()[1]) / 1e9
    if (path := _v2(cid)) is not None:
        for line in (path / "cpu.stat").read_text().splitlines():
            if line.startswith("throttled_usec "):
                return int(line.split()[1]) / 1e6
    return 0.0


def memory_bytes(cid: str) -> int:
    """Memory in use by the container, without inactive page cache (as `docker stats`)."""
    if (path := _v1("memory", cid)) is not None:
        usage = int((path / "memory.usage_in_bytes").read_text())
        stat = dict(line.split() for line in (path / "memory.stat").read_text().splitlines())
        return usage - int(stat.get("total_inactive_file", 0))
    if (path := _v2(cid)) is not None:
        usage = int((path / "memory.current").read_text())
        stat = dict(line.split() for line in (path / "memory.stat").read_text().splitlines())
        return usage - int(stat.get("inactive_file", 0))
    memory = _stats(cid).get("memory_stats", {})
    detail = memory.get("stats", {})
    return memory.get("usage", 0) - detail.get(
        "total_inactive_file", detail.get("inactive_file", 0)
    )


def oom_kills(cid: str) -> int:
    """Processes of the container the kernel killed for memory (NGINX respawns workers)."""
    path = _v1("memory", cid)
    if path is not None:
        for line in (path / "memory.oom_control").read_text().splitlines():
            if line.startswith("oom_kill "):
                return int(line.split()[1])
    elif (v2 := _v2(cid)) is not None and (v2 / "memory.events").exists():
        for line in (v2 / "memory.events").read_text().splitlines():
            if line.startswith("oom_kill "):
                return int(line.split()[1])
    return 0


def pids(cid: str) -> list[int]:
    """Host PIDs of the container's processes."""
    for path in (_v1("memory", cid), _v2(cid)):
        if path is not None and (path / "cgroup.procs").exists():
            return [int(p) for p in (path / "cgroup.procs").read_text().split()]
    return []


def rss_anon_bytes(cid: str) -> int:
    """Sum of the anonymous resident memory (RssAnon) of the container's processes."""
    total = 0
    for pid in pids(cid):
        with suppress(OSError):
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("RssAnon:"):
                    total += int(line.split()[1]) * 1024
    return total


def host_busy_seconds() -> float:
    """CPU seconds the whole machine has been busy (all cores), from /proc/stat."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


class CpuMeter:
    """CPU seconds of some containers, and of the whole host, between two samples.

    Each figure is a share of one core; ``host`` is everything busy on the machine (so
    ``host`` minus the containers and the load generator is what others were running).
    """

    def __init__(self, containers: dict[str, str]) -> None:
        self.containers = {name: cid for name, cid in containers.items() if cid}
        self.start: dict[str, float] = {}
        self.throttled0: dict[str, float] = {}
        self.t0 = 0.0
        self.result: dict[str, float] = {}
        self.throttled: dict[str, float] = {}  # share of the window spent throttled

    def begin(self, now: float) -> None:
        self.t0 = now
        self.start = {name: cpu_seconds(cid) for name, cid in self.containers.items()}
        self.start["host"] = host_busy_seconds()
        self.throttled0 = {n: throttled_seconds(c) for n, c in self.containers.items()}

    def end(self, now: float) -> dict[str, float]:
        wall = max(now - self.t0, 1e-9)
        self.result = {
            name: (cpu_seconds(cid) - self.start[name]) / wall
            for name, cid in self.containers.items()
        }
        self.result["host"] = (host_busy_seconds() - self.start["host"]) / wall
        self.throttled = {
            name: (throttled_seconds(cid) - self.throttled0[name]) / wall
            for name, cid in self.containers.items()
        }
        return self.result

    def follow(self, window: tuple[float, float]) -> None:
        """Begin at ``window[0]``, end at ``window[1]`` (wall-clock times); call it often."""
        now = time.time()
        if not self.start and now >= window[0]:
            self.begin(time.monotonic())
        if self.start and not self.result and now >= window[1]:
            self.end(time.monotonic())

    def finish(self) -> None:
        """End now if the window's end was not seen (the load returned before the last tick)."""
        if self.start and not self.result:
            self.end(time.monotonic())


def _first_line(command: list[str]) -> str:
    with suppress(OSError, subprocess.SubprocessError):
        out = subprocess.run(command, capture_output=True, text=True, timeout=20)
        lines = (out.stdout or out.stderr).strip().splitlines()
        return lines[0] if lines else ""
    return "?"


def _first_line_in(image: str, entrypoint: str, *args: str) -> str:
    """The first line ``entrypoint args`` prints in ``image`` (stdout, else stderr); "?"
    when it cannot run."""
    try:
        done = run_once(image, list(args), entrypoint=[entrypoint], timeout=20)
    except docker.errors.DockerException:
        return "?"
    lines = (done.stdout or done.stderr).strip().splitlines()
    return lines[0] if lines else ""


def machine(server_image: str, nginx_image: str) -> dict[str, str]:
    """A description of where the figures were measured."""
    cpu = "?"
    with suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    memory = "?"
    with suppress(OSError):
        kib = int(Path("/proc/meminfo").read_text().split()[1])
        memory = f"{kib / 2**20:.1f} GiB"
    versions = client().version()
    image_python = _first_line_in(
        server_image,
        "python3",
        "-c",
        "import sys, websockets, uvloop; "
        "print(sys.version.split()[0], websockets.__version__, uvloop.__version__)",
    )
    nginx_version = _first_line_in(nginx_image, "nginx", "-v")
    py, ws, uv = [*image_python.split(), "?", "?", "?"][:3]
    return {
        "cpu": cpu,
        "cores": str(os.cpu_count()),
        "memory": memory,
        "kernel": platform.release(),
        "docker": versions.get("Version", "?"),
        "server_python": py,
        "websockets": ws,
        "uvloop": uv,
        "nginx": nginx_version.replace("nginx version: ", ""),
        "load_average": load_average(),
    }


def code_version(root: Path) -> str:
    """The commit measured, and whether server/ or nginx/ differ from it (images are built
    from the working tree)."""
    head = _first_line(["git", "-C", str(root), "rev-parse", "--short", "HEAD"])
    dirty = _first_line(["git", "-C", str(root), "status", "--porcelain", "--", "server", "nginx"])
    return head + (" with uncommitted changes in server/ or nginx/" if dirty else "")


def load_average() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())
