"""The allocator: freed message buffers go back to the system instead of staying in the heap."""

from __future__ import annotations

import ctypes
import ctypes.util
import platform

# Buffers from this size up (messages, frames being assembled, echoes waiting) get pages of
# their own, which go back to the system when freed.
MMAP_THRESHOLD = 128 * 2**10
M_MMAP_THRESHOLD = -3  # glibc's mallopt() parameter


def return_freed_buffers() -> str:
    """Make freed message buffers go back to the system; say how, for the start-up log.

    glibc serves a large allocation from its heap once a freed one raised its adaptive
    threshold (up to 32 MiB), and keeps the freed heap: 1 MiB messages that come and go then
    grow the process for good. A fixed threshold (mallopt) turns the adaptation off. The
    same as MALLOC_MMAP_THRESHOLD_ in the environment, but native runs get it too.
    """
    if platform.libc_ver()[0] != "glibc":
        return "unchanged (not glibc)"
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    if not libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD):  # pragma: no cover - glibc says no
        return "unchanged (mallopt refused)"
    return f"glibc mmap_threshold={MMAP_THRESHOLD}"
