"""How much memory the server uses, as the kernel counts it against the container's limit.

In a container with a memory limit, that is the container's cgroup: its usage without the
page cache it may drop (what ``docker stats`` shows, and near what the OOM killer acts);
elsewhere, this process's resident memory. Reading either is two small file reads.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

PAGE_SIZE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


@dataclass(frozen=True)
class CgroupFiles:
    """One cgroup version's files: the limit, the usage, and the stat with the page cache."""

    limit: str
    usage: str
    stat: str
    inactive_file: str  # the memory.stat key of page cache the kernel can drop at once


CGROUP_V2 = CgroupFiles(
    "/sys/fs/cgroup/memory.max",  # a number or "max"
    "/sys/fs/cgroup/memory.current",
    "/sys/fs/cgroup/memory.stat",
    "inactive_file",
)
CGROUP_V1 = CgroupFiles(
    "/sys/fs/cgroup/memory/memory.limit_in_bytes",  # about 2**63 for "no limit"
    "/sys/fs/cgroup/memory/memory.usage_in_bytes",
    "/sys/fs/cgroup/memory/memory.stat",
    "total_inactive_file",
)


def _read(path: str) -> str | None:
    try:
        with open(path) as file:
            return file.read()
    except OSError:
        return None


def limited_cgroup(
    versions: tuple[CgroupFiles, ...] = (CGROUP_V2, CGROUP_V1),
) -> CgroupFiles | None:
    """The cgroup files of this container when it has a memory limit, else None."""
    for files in versions:
        text = _read(files.limit)
        if text is None:
            continue
        text = text.strip()
        return files if text.isdigit() and int(text) < 2**60 else None
    return None


def cgroup_limit(files: CgroupFiles | None) -> int | None:
    """The memory limit in bytes of a limited cgroup (None: no limit)."""
    text = _read(files.limit) if files else None
    return int(text) if text and text.strip().isdigit() else None


def in_use(files: CgroupFiles | None) -> int | None:
    """The cgroup's usage less its droppable page cache; this process's RSS without one."""
    if files is None:
        statm = _read("/proc/self/statm")
        return int(statm.split()[1]) * PAGE_SIZE if statm else None
    usage, stat = _read(files.usage), _read(files.stat)
    if usage is None or stat is None:
        return None
    cache = next(
        (
            int(line.split()[1])
            for line in stat.splitlines()
            if line.startswith(files.inactive_file + " ")
        ),
        0,
    )
    return int(usage) - cache
