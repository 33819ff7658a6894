"""What the memory budget compares: the container's cgroup usage, or the process's RSS."""

from __future__ import annotations

from pathlib import Path

import pytest

from server import memory_usage

pytestmark = pytest.mark.unit


def cgroup(
    tmp_path: Path, limit: str, usage: str = "0", stat: str = ""
) -> memory_usage.CgroupFiles:
    """Fake cgroup files under ``tmp_path``."""
    files = memory_usage.CgroupFiles(
        str(tmp_path / "limit"), str(tmp_path / "usage"), str(tmp_path / "stat"), "inactive_file"
    )
    for path, text in ((files.limit, limit), (files.usage, usage), (files.stat, stat)):
        Path(path).write_text(text)
    return files


def test_a_cgroup_with_a_limit_is_found_and_read(tmp_path: Path) -> None:
    """A numeric limit (v2) or one below 2**60 (v1) means a limited cgroup."""
    files = cgroup(tmp_path, "1073741824\n", "500000000\n", "anon 1\ninactive_file 100000000\n")
    assert memory_usage.limited_cgroup((files,)) == files
    assert memory_usage.cgroup_limit(files) == 2**30
    assert memory_usage.in_use(files) == 400_000_000  # usage less the page cache it can drop


@pytest.mark.parametrize("limit", ["max\n", f"{2**63 - 4096}\n"])
def test_no_limit_means_no_cgroup_to_watch(tmp_path: Path, limit: str) -> None:
    """v2's "max" and v1's huge number both mean unlimited: the process's RSS is used."""
    files = cgroup(tmp_path, limit)
    assert memory_usage.limited_cgroup((files,)) is None
    assert memory_usage.cgroup_limit(None) is None
    rss = memory_usage.in_use(None)
    assert rss is not None and rss > 1_000_000


def test_missing_files_are_skipped(tmp_path: Path) -> None:
    """A version whose files are absent is passed over for the next."""
    absent = memory_usage.CgroupFiles(
        *(str(tmp_path / n) for n in ("a", "b", "c")), "inactive_file"
    )
    files = cgroup(tmp_path, "268435456")
    assert memory_usage.limited_cgroup((absent, files)) == files


def test_the_guard_reads_its_files_again_without_reopening_them(tmp_path: Path) -> None:
    """MemoryInUse opens the files once; every read sees what they hold now, and takes the
    line whose name is the key (v1's ``total_inactive_file``, not ``inactive_file``)."""
    files = memory_usage.CgroupFiles(
        str(tmp_path / "limit"),
        str(tmp_path / "usage"),
        str(tmp_path / "stat"),
        "total_inactive_file",
    )
    Path(files.usage).write_text("500000000\n")
    Path(files.stat).write_text("inactive_file 7\ntotal_inactive_file 100000000\ntotal_x 3\n")
    reader = memory_usage.MemoryInUse(files)
    try:
        assert reader.read() == 400_000_000
        Path(files.usage).write_text("600000000\n")  # the same inode, rewritten
        Path(files.stat).write_text("total_inactive_file 0\n")
        assert reader.read() == 600_000_000
    finally:
        reader.close()
    assert reader.read() is None  # closed: nothing to read


def test_a_process_without_a_cgroup_reads_its_own_resident_memory() -> None:
    reader = memory_usage.MemoryInUse(None)
    try:
        first = reader.read()
        assert first is not None and first > 1_000_000
        grown = b"x" * (64 * 2**20)  # written: resident
        assert reader.read() >= first + 60 * 2**20
        del grown
    finally:
        reader.close()
