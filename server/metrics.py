"""In-process metrics and their Prometheus text exposition (format 0.0.4), written by hand.

Counters are plain attributes so the per-message hot path is a few integer additions.
Each process keeps its own metrics; with ``WS_WORKERS`` > 1 a scrape of ``/metrics``
reaches whichever worker the kernel picks (``ws_process_info`` names it by pid).
"""

from __future__ import annotations

import os
import time
from bisect import bisect_left
from collections.abc import Iterable

from . import logs

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# Upper bounds (le) of the message-size histogram, in bytes.
SIZE_BUCKETS: tuple[int, ...] = (
    0,
    64,
    256,
    1024,
    4096,
    16384,
    65536,
    262144,
    1048576,
    4194304,
    16777216,
    67108864,
)


# A metric family: name, type, help text, and its samples as (labels, value).
Family = tuple[str, str, str, list[tuple[str, float]]]


class MessageCounts:
    """Messages of one frame type and their payload bytes, in and out: plain attributes,
    which the echo adds to inline (no call per message)."""

    __slots__ = ("bytes_in", "bytes_out", "msgs_in", "msgs_out")

    def __init__(self) -> None:
        self.msgs_in = self.msgs_out = self.bytes_in = self.bytes_out = 0


class Metrics:
    """Counters, gauges and one histogram for one gateway process."""

    __slots__ = (
        "binary",
        "client_connections",
        "closes",
        "connections_active",
        "connections_total",
        "draining",
        "errors",
        "http_responses",
        "max_connections",
        "memory_budget",
        "memory_held",
        "memory_reserved",
        "memory_used",
        "memory_waiting",
        "rejections",
        "size_counts",
        "size_sum",
        "start_time",
        "text",
        "worker",
    )

    def __init__(
        self, *, max_connections: int = 0, memory_budget: int = 0, worker: int = 0
    ) -> None:
        self.start_time = time.time()
        self.worker = worker
        self.max_connections = max_connections
        self.memory_budget = memory_budget
        self.memory_held = 0  # at the last check, by connections that stopped reading
        self.memory_used = 0  # at the last check: the process's resident memory
        self.memory_reserved = 0  # floors and grants of the connections (server.budget)
        self.memory_waiting = 0  # connections stopped until the budget can reserve a read
        self.client_connections: dict[str | None, int] = {}  # open WebSockets per client
        self.draining = False
        self.connections_active = 0
        self.connections_total = 0
        self.text = MessageCounts()
        self.binary = MessageCounts()
        self.size_counts = [0] * (len(SIZE_BUCKETS) + 1)  # last one is +Inf
        self.size_sum = 0
        self.closes: dict[int, int] = {}
        self.errors: dict[str, int] = {}
        self.rejections: dict[str, int] = {}
        self.http_responses: dict[tuple[str, int], int] = {}

    def observe_size(self, size: int) -> None:
        self.size_counts[bisect_left(SIZE_BUCKETS, size)] += 1
        self.size_sum += size

    def count_close(self, code: int) -> None:
        """Count a close; 3000-4999, which clients choose freely, count as their thousand.

        One series per code would let clients create up to 2,000 of them.
        """
        if code >= 3000:
            code -= code % 1000
        self.closes[code] = self.closes.get(code, 0) + 1

    def count_error(self, kind: str) -> None:
        self.errors[kind] = self.errors.get(kind, 0) + 1

    def count_rejection(self, reason: str) -> None:
        self.rejections[reason] = self.rejections.get(reason, 0) + 1

    def count_http(self, path: str, status: int) -> None:
        key = (path, status)
        self.http_responses[key] = self.http_responses.get(key, 0) + 1

    def render(self) -> str:
        """The Prometheus text exposition of every metric."""
        lines: list[str] = []
        for name, kind, help_text, samples in (*self._gauges(), *self._counters()):
            lines.extend(_family(name, kind, help_text, samples))
        lines.extend(self._histogram())
        return "\n".join(lines) + "\n"

    def _gauges(self) -> list[Family]:
        """What is now: the process, its connections, its memory."""
        process = f'{{pid="{os.getpid()}",worker="{self.worker}"}}'
        return [
            ("ws_process_info", "gauge", "This gateway process.", [(process, 1)]),
            (
                "ws_process_start_time_seconds",
                "gauge",
                "Start time of the process, seconds since the epoch.",
                [("", self.start_time)],
            ),
            (
                "ws_draining",
                "gauge",
                "1 while shutting down (readyz answers 503).",
                [("", int(self.draining))],
            ),
            (
                "ws_connections_active",
                "gauge",
                "Open WebSocket connections.",
                [("", self.connections_active)],
            ),
            (
                "ws_client_connections_max",
                "gauge",
                "Most open WebSockets from one client address (X-Real-IP behind NGINX).",
                [("", max(self.client_connections.values(), default=0))],
            ),
            ("ws_connections_max", "gauge", "WS_MAX_CONNECTIONS.", [("", self.max_connections)]),
            (
                "ws_memory_budget_bytes",
                "gauge",
                "WS_MEMORY_BUDGET: bytes this process may hold for its clients.",
                [("", self.memory_budget)],
            ),
            (
                "ws_memory_used_bytes",
                "gauge",
                "Memory in use (the container's, else this process's RSS) at the last check.",
                [("", self.memory_used)],
            ),
            (
                "ws_memory_held_bytes",
                "gauge",
                "Bytes held for clients that stopped reading (queues and buffers), last check.",
                [("", self.memory_held)],
            ),
            (
                "ws_memory_reserved_bytes",
                "gauge",
                "Bytes reserved against the budget: every connection's floor and its grants.",
                [("", self.memory_reserved)],
            ),
            (
                "ws_memory_waiting_connections",
                "gauge",
                "Connections that stopped reading until the budget can reserve their next read.",
                [("", self.memory_waiting)],
            ),
        ]

    def _counters(self) -> list[Family]:
        """What has happened since the process started."""
        text, binary = self.text, self.binary
        return [
            (
                "ws_log_lines_dropped_total",
                "counter",
                "Log lines dropped because stdout's reader did not keep up.",
                [("", logs.lines_dropped())],
            ),
            (
                "ws_connections_total",
                "counter",
                "WebSocket connections accepted.",
                [("", self.connections_total)],
            ),
            (
                "ws_connections_rejected_total",
                "counter",
                "WebSocket handshakes refused, by reason.",
                [(_labels(reason=r), n) for r, n in sorted(self.rejections.items())],
            ),
            (
                "ws_messages_total",
                "counter",
                "Messages, by frame type and direction.",
                _by_type_and_direction(
                    text.msgs_in, text.msgs_out, binary.msgs_in, binary.msgs_out
                ),
            ),
            (
                "ws_message_bytes_total",
                "counter",
                "Message payload bytes (decompressed), by frame type and direction.",
                _by_type_and_direction(
                    text.bytes_in, text.bytes_out, binary.bytes_in, binary.bytes_out
                ),
            ),
            (
                "ws_closes_total",
                "counter",
                "Closed WebSocket connections, by close code.",
                [(_labels(code=close_code_label(c)), n) for c, n in sorted(self.closes.items())],
            ),
            (
                "ws_errors_total",
                "counter",
                "Connection errors, by kind.",
                [(_labels(kind=k), n) for k, n in sorted(self.errors.items())],
            ),
            (
                "ws_http_responses_total",
                "counter",
                "Plain HTTP responses (not WebSocket upgrades), by path and status.",
                [
                    (_labels(path=p, code=str(s)), n)
                    for (p, s), n in sorted(self.http_responses.items())
                ],
            ),
        ]

    def _histogram(self) -> list[str]:
        name = "ws_message_size_bytes"
        samples: list[tuple[str, float]] = []
        cumulative = 0
        for bound, count in zip(SIZE_BUCKETS, self.size_counts, strict=False):
            cumulative += count
            samples.append((f'_bucket{{le="{bound}"}}', cumulative))
        cumulative += self.size_counts[-1]
        samples.append(('_bucket{le="+Inf"}', cumulative))
        samples.append(("_sum", self.size_sum))
        samples.append(("_count", cumulative))
        out = [f"# HELP {name} Size of received messages in bytes.", f"# TYPE {name} histogram"]
        out.extend(f"{name}{suffix} {_number(value)}" for suffix, value in samples)
        return out


def _by_type_and_direction(
    text_in: int, text_out: int, binary_in: int, binary_out: int
) -> list[tuple[str, float]]:
    return [
        (_labels(type="text", direction="in"), text_in),
        (_labels(type="text", direction="out"), text_out),
        (_labels(type="binary", direction="in"), binary_in),
        (_labels(type="binary", direction="out"), binary_out),
    ]


def _labels(**labels: str) -> str:
    body = ",".join(f'{key}="{_escape_label(value)}"' for key, value in labels.items())
    return "{" + body + "}"


def _escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value: float) -> str:
    return str(value) if isinstance(value, int) else repr(float(value))


def _family(
    name: str, kind: str, help_text: str, samples: Iterable[tuple[str, float]]
) -> list[str]:
    out = [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"]
    out.extend(f"{name}{labels} {_number(value)}" for labels, value in samples)
    return out


def close_code_label(code: int) -> str:
    """The ``code`` label: the code itself, or "3xxx"/"4xxx" for the application ranges."""
    return str(code) if code < 3000 else f"{code // 1000}xxx"
