"""Host ports for what the tests and stacks publish; imports nothing but the standard library."""

from __future__ import annotations

import socket


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now (the kernel's pick for port 0).

    Free when asked, not reserved: a caller that binds it later retries on a clash.
    """
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]
