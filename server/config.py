"""Configuration: read once from the environment into one validated, immutable object.

Every setting has a default, an allowed range and one environment variable. A bad value
raises :class:`ConfigError`, whose message is one line naming the variable, the value and
what is allowed; ``python -m server`` prints it and exits with status 2 before binding.

Which variables there are, how each is read and its range: the one table in
:mod:`server.settings`; what is checked across settings and the defaults: here.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from . import memory_usage
from .settings import (
    EVENT_LOOPS,
    HANDLER_ALLOWED,
    LOG_FORMATS,
    LOG_LEVELS,
    SETTINGS,
    ConfigError,
    IPNetwork,
    in_range,
)

DEFAULT_OPEN_TIMEOUT = 5.0  # seconds; the library's 10 s outlasted the default 10 s drain
# Without a cgroup memory limit to take a share of: the compose file's limit for the server,
# which holds the 20,000-connection target (python -m stack bench).
FALLBACK_MEMORY_BUDGET = 2**30
# Of the cgroup limit: the rest is room for what arrives between two checks and for what the
# kernel charges to the container besides the process (page cache, socket buffers).
MEMORY_LIMIT_SHARE = 0.6


@dataclass(frozen=True, slots=True)
class Config:
    """All settings of the gateway. Build it with :meth:`from_env`; it validates on creation."""

    host: str = "0.0.0.0"
    port: int = 3000
    max_size: int = 2**20
    ping_interval: float = 20.0
    ping_timeout: float = 20.0
    shutdown_timeout: float = 10.0
    max_connections: int = 10_000
    allowed_origins: tuple[str, ...] = ()
    max_messages_per_second: float = 0.0
    compression: bool = False
    log_messages: bool = True
    # Per connection: message lines beyond it are counted into one message_logs_suppressed
    # line per second instead, so one flooder cannot flush everyone's lines out of the logs.
    log_messages_per_second: float = 100.0
    trusted_proxies: tuple[IPNetwork, ...] = ()
    log_format: str = "json"
    log_level: str = "INFO"
    event_loop: str = "auto"
    workers: int = 1
    # Frames received but not yet echoed, per connection, before the server stops reading
    # from it. With 1 MiB messages each queued frame can hold 1 MiB, so this bounds what a
    # client that stops reading costs: websockets' default 16 let ~45 of them fill 1 GiB.
    max_queue: int = 4
    # Seconds a client has to complete the opening handshake, from TCP accept to 101.
    open_timeout: float = DEFAULT_OPEN_TIMEOUT  # or half a lower WS_SHUTDOWN_TIMEOUT
    # Seconds after SIGTERM in which the server only refuses new handshakes (503), before
    # open connections get 1001 and the port closes: long enough for DNS-based proxies
    # (NGINX's `resolve`) to forget this address, so the reconnects 1001 sets off never come
    # here (Swarm, Kubernetes). 0: close at once.
    drain_delay: float = 0.0
    # Memory the server may use: the container's (cgroup) when it has a limit, else this
    # process's resident memory. Over it, connections that stopped reading are dropped.
    memory_budget: int = FALLBACK_MEMORY_BUDGET
    # Bytes asked for each of a connection's kernel buffers (SO_RCVBUF, SO_SNDBUF; the kernel
    # doubles them), never less than one TCP segment: fixed, so what a connection costs in
    # the kernel is bounded and counted in its floor (server.budget). 16 KiB costs 1 MiB
    # messages about 5% of their round trips on a Docker network (docs/security.md).
    socket_buffer: int = 16 * 2**10
    # The application's connection handler, ``package.module:name`` (empty: the echo). It is
    # imported and checked here, so a handler that cannot run stops the server with exit 2.
    handler: str = ""

    def __post_init__(self) -> None:
        if not self.host or any(c.isspace() for c in self.host):
            raise ConfigError("WS_HOST", self.host, "is not a host", "an IP address or host name")
        for variable, setting in SETTINGS.items():
            if setting.limits is not None:
                value = getattr(self, setting.field)
                in_range(variable, value, value)
        if self.log_format not in LOG_FORMATS:
            raise ConfigError("LOG_FORMAT", self.log_format, "is unknown", ", ".join(LOG_FORMATS))
        if self.log_level not in LOG_LEVELS:
            raise ConfigError("LOG_LEVEL", self.log_level, "is unknown", ", ".join(LOG_LEVELS))
        if self.event_loop not in EVENT_LOOPS:
            raise ConfigError(
                "WS_EVENT_LOOP", self.event_loop, "is unknown", ", ".join(EVENT_LOOPS)
            )
        if self.event_loop == "uvloop" and not uvloop_available():
            raise ConfigError(
                "WS_EVENT_LOOP",
                "uvloop",
                "is not available (uvloop is not installed)",
                "auto, asyncio",
            )
        if self.open_timeout >= self.shutdown_timeout:
            raise ConfigError(
                "WS_OPEN_TIMEOUT",
                str(self.open_timeout),
                f"is not below WS_SHUTDOWN_TIMEOUT ({self.shutdown_timeout})",
                "seconds below WS_SHUTDOWN_TIMEOUT, so a handshake cannot outlast the drain",
            )
        if self.drain_delay >= self.shutdown_timeout * 0.6:
            raise ConfigError(
                "WS_DRAIN_DELAY",
                str(self.drain_delay),
                f"is not below 60% of WS_SHUTDOWN_TIMEOUT ({self.shutdown_timeout})",
                "seconds below 60% of WS_SHUTDOWN_TIMEOUT, which bounds the whole drain",
            )
        if self.workers > 1 and self.port == 0:
            raise ConfigError(
                "WS_WORKERS", str(self.workers), "needs a fixed WS_PORT, not 0", "1 when WS_PORT=0"
            )
        if self.handler:
            load_handler(self.handler)

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> Config:
        """Parse ``environ`` (usually ``os.environ``); raise :class:`ConfigError` on a bad value.

        A host name is resolved here, so one that does not resolve exits 2 like any bad value.
        """
        values: dict[str, Any] = {}
        for variable, setting in SETTINGS.items():
            raw = environ.get(variable)
            if raw is not None and raw.strip():
                values[setting.field] = setting.parse(variable, raw)
        if "memory_budget" not in values:
            values["memory_budget"] = default_memory_budget(values.get("workers", 1))
        if "open_timeout" not in values and "shutdown_timeout" in values:
            # A short drain budget brings the default handshake time down with it.
            values["open_timeout"] = min(DEFAULT_OPEN_TIMEOUT, values["shutdown_timeout"] / 2)
        return cls(**values)

    def replace(self, **changes: Any) -> Config:
        """Return a copy with ``changes`` applied (and validated)."""
        return dataclasses.replace(self, **changes)

    @property
    def close_timeout(self) -> float:
        """Seconds to wait for a peer's close frame: half the shutdown budget, at most 5 s."""
        return min(5.0, self.shutdown_timeout / 2)

    def summary(self) -> dict[str, Any]:
        """The settings as plain JSON-able values, for the ``server_started`` log line."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        out["allowed_origins"] = list(self.allowed_origins)
        out["trusted_proxies"] = [str(n) for n in self.trusted_proxies]
        return out


def help_text() -> str:
    """What ``python -m server --help`` prints: every setting, its default and what it takes."""
    defaults = {f.name: f.default for f in dataclasses.fields(Config)}
    lines = [
        "usage: python -m server [--help]",
        "",
        "Serves WebSockets on ws://WS_HOST:WS_PORT/ws until SIGTERM or SIGINT, then drains.",
        "Every setting is an environment variable; empty or unset means its default.",
        "A bad value exits 2 with one line naming it. Reference: docs/configuration.md",
        "",
    ]
    for variable, setting in SETTINGS.items():
        lines.append(f"  {variable}={_default_text(defaults[setting.field])}")
        lines.append(f"      {setting.meaning}; allowed: {setting.allowed}")
    return "\n".join(lines) + "\n"


def _default_text(value: object) -> str:
    """A default as it is written in the environment (and in docs/configuration.md)."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, tuple):
        return ""
    return str(value)


def default_memory_budget(workers: int = 1) -> int:
    """WS_MEMORY_BUDGET's default: 60% of the cgroup limit for the container (all workers see
    the same usage), else 1 GiB of resident memory split between the worker processes."""
    limit = memory_usage.cgroup_limit(memory_usage.limited_cgroup())
    if limit:
        return max(2**20, int(limit * MEMORY_LIMIT_SHARE))
    return max(2**20, FALLBACK_MEMORY_BUDGET // max(1, workers))


def load_handler(spec: str) -> Callable[[Any], Any]:
    """The connection handler named by ``spec`` (``package.module:name``), imported now.

    It is what ``websockets.asyncio.server.serve`` takes: an async callable of one
    argument, the connection. Raises :class:`ConfigError` (naming ``WS_HANDLER``, one line)
    when the module cannot be imported, has no such name, or the name is not an async
    callable of one argument.
    """
    module_name, colon, attribute = spec.partition(":")
    if not colon or not module_name.strip() or not attribute.strip():
        raise ConfigError("WS_HANDLER", spec, "is not package.module:name", HANDLER_ALLOWED)
    try:
        handler: Any = importlib.import_module(module_name.strip())
    except Exception as exc:  # whatever the module's own code raises while importing
        problem = f"cannot be imported ({type(exc).__name__}: {exc})"
        raise ConfigError("WS_HANDLER", spec, " ".join(problem.split()), HANDLER_ALLOWED) from None
    for part in attribute.strip().split("."):
        if not hasattr(handler, part):
            raise ConfigError(
                "WS_HANDLER", spec, f"names nothing: no {part!r} in {module_name}", HANDLER_ALLOWED
            )
        handler = getattr(handler, part)
    call = getattr(handler, "__call__", None)  # noqa: B004 - a class instance with async __call__
    if not (inspect.iscoroutinefunction(handler) or inspect.iscoroutinefunction(call)):
        raise ConfigError(
            "WS_HANDLER",
            spec,
            f"is not an async callable (it is {type(handler).__name__})",
            HANDLER_ALLOWED,
        )
    try:
        inspect.signature(handler).bind(None)
    except TypeError:
        raise ConfigError(
            "WS_HANDLER",
            spec,
            f"does not take one argument, the connection (it takes {inspect.signature(handler)})",
            HANDLER_ALLOWED,
        ) from None
    except ValueError:  # pragma: no cover - a builtin without a signature: let it be called
        pass
    return handler  # type: ignore[no-any-return]


def uvloop_available() -> bool:
    return importlib.util.find_spec("uvloop") is not None
