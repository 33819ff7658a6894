"""How much memory the server uses, as the kernel counts it against the container's limit.

In a container with a memory limit, that is the container's cgroup: its usage without the
page cache it may drop (what ``docker stats`` shows, and near what the OOM killer acts);
elsewhere, this process's resident memory. The guard reads it every few milliseconds, so
:class:`MemoryInUse` keeps its files open and reads them with ``pread``: in a container,
opening a file took about 45 us here, ten times what reading it takes.
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


class MemoryInUse:
    """The cgroup's usage less its droppable page cache, or this process's RSS without a
    cgroup, read from files opened once. Open it in the process it measures: an open
    ``/proc/self/statm`` stays the opener's."""

    def __init__(self, files: CgroupFiles | None) -> None:
        self.files = files
        paths = (files.usage, files.stat) if files else ("/proc/self/statm",)
        self._fds: list[int] = []
        try:
            for path in paths:
                self._fds.append(os.open(path, os.O_RDONLY | os.O_CLOEXEC))
        except OSError:
            self.close()

    def read(self) -> int | None:
        """Bytes in use now; None when the files cannot be read."""
        try:
            texts = [_pread_all(fd) for fd in self._fds]
        except OSError:
            return None
        if self.files is None:
            return int(texts[0].split()[1]) * PAGE_SIZE if texts else None
        if len(texts) != 2:
            return None
        usage, stat = texts
        return int(usage) - _stat_field(stat, self.files.inactive_file)

    def close(self) -> None:
        for fd in self._fds:
            os.close(fd)
        self._fds = []


def _stat_field(stat: bytes, name: str) -> int:
    """The value of ``name`` in a memory.stat text (lines of "name value"); 0 if absent."""
    line = b"\n" + name.encode() + b" "
    start = (b"\n" + stat).find(line)
    return 0 if start < 0 else int(stat[start + len(line) - 1 :].split(maxsplit=1)[0])


def _pread_all(fd: int) -> bytes:
    """The whole of a small file from its start (a kernel file: its size is not known)."""
    chunks = []
    while chunk := os.pread(fd, 65536, sum(map(len, chunks))):
        chunks.append(chunk)
    return b"".join(chunks)


def in_use(files: CgroupFiles | None) -> int | None:
    """Bytes in use now, read once (see MemoryInUse)."""
    reader = MemoryInUse(files)
    try:
        return reader.read()
    finally:
        reader.close()
