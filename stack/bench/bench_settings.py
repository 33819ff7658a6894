"""The bench's settings: the command line read once into a frozen, typed object."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, fields
from typing import Any

PHASES = ("throughput", "latency", "memory", "capacity", "published")


def _pairs(items: list[str]) -> dict[str, str]:
    """NAME=VALUE strings as a dict."""
    return dict(item.split("=", 1) for item in items)


@dataclass(frozen=True)
class Settings:
    """What ``python -m stack bench`` was asked to measure (see its --help for each field)."""

    # In the order of the command line's options (the JSON report keeps it).
    phases: tuple[str, ...]
    only: tuple[str, ...]  # words a run's setup, target or name must contain (none: all)
    duration: float  # measured seconds per run
    rounds: int  # throughput and latency: each run this many times, the median kept
    memory_connections: int
    warmup: float  # seconds before each measured window
    connections: int  # throughput
    size: int  # message size, bytes
    text: bool  # text messages instead of binary
    inflight: int  # throughput: messages in flight per connection
    clients: int  # load generator processes
    rate: int  # latency: messages/s in total
    latency_connections: int
    capacity: int  # connections to ramp to through NGINX
    capacity_step: int
    capacity_sample: int  # connections that must still echo at the end
    ping_interval: float  # capacity: WS_PING_INTERVAL, seconds
    published_capacity: int  # connections to ramp to through the published port
    server_env: tuple[str, ...]  # NAME=VALUE, extra for every setup
    nginx_env: tuple[str, ...]
    keep_limits: bool  # capacity: keep the compose memory limits

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> Settings:
        """The parsed command line; exits with a message on an unknown phase."""
        phases = tuple(p.strip() for p in args.phases.split(",") if p.strip())
        unknown = set(phases) - set(PHASES)
        if unknown:
            raise SystemExit(f"unknown phase(s) {', '.join(sorted(unknown))}: choose from {PHASES}")
        values = {f.name: getattr(args, f.name) for f in fields(cls)}
        values.update(
            phases=phases,
            only=tuple(args.only),
            server_env=tuple(args.server_env),
            nginx_env=tuple(args.nginx_env),
        )
        return cls(**values)

    @property
    def server_env_pairs(self) -> dict[str, str]:
        return _pairs(list(self.server_env))

    @property
    def nginx_env_pairs(self) -> dict[str, str]:
        return _pairs(list(self.nginx_env))

    def wanted(self, words: str) -> bool:
        """Whether a run described by ``words`` (setup:via:name) is selected by ``--only``."""
        return not self.only or any(word in words for word in self.only)

    def as_report(self) -> dict[str, Any]:
        """The settings as the JSON report records them (the command line's own spelling)."""
        return {
            **{f.name: getattr(self, f.name) for f in fields(self)},
            "phases": ",".join(self.phases),
            "only": list(self.only),
            "server_env": list(self.server_env),
            "nginx_env": list(self.nginx_env),
        }
