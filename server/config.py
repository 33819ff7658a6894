"""Configuration: read once from the environment into one validated, immutable object.

Every setting has a default, an allowed range and one environment variable. A bad value
raises :class:`ConfigError`, whose message is one line naming the variable, the value and
what is allowed; ``python -m server`` prints it and exits with status 2 before binding.

An empty value counts as unset (``WS_ALLOWED_ORIGINS=`` in a compose file means "default").
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import inspect
import ipaddress
import math
import re
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from . import memory_usage

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
_N = TypeVar("_N", int, float)

LOG_FORMATS = ("json", "text")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
EVENT_LOOPS = ("auto", "asyncio", "uvloop")
_TRUE = frozenset({"true", "1", "yes", "on"})
_FALSE = frozenset({"false", "0", "no", "off"})
DEFAULT_OPEN_TIMEOUT = 5.0  # seconds; the library's 10 s outlasted the default 10 s drain
_BOOL_ALLOWED = "true, false, 1, 0, yes, no, on, off"
HANDLER_ALLOWED = "package.module:name of an async function taking the connection"
_ORIGIN_RE = re.compile(r"[a-z][a-z0-9+.-]*://[^/\s,]+")
# What int() and float() accept beyond plain ASCII numbers ("1_000", Arabic-Indic digits,
# "infinity") is not what anyone means in a configuration file.
_INT_RE = re.compile(r"[+-]?[0-9]+", re.ASCII)
_FLOAT_RE = re.compile(
    r"[+-]?(([0-9]+\.?[0-9]*|\.[0-9]+)(e[+-]?[0-9]+)?|inf(inity)?|nan)", re.ASCII | re.IGNORECASE
)


class ConfigError(ValueError):
    """A configuration value is invalid; ``str(error)`` is one line: variable, value, allowed."""

    def __init__(self, variable: str, value: object, problem: str, allowed: str) -> None:
        self.variable = variable
        self.value = value
        self.problem = problem
        self.allowed = allowed
        super().__init__(f"{variable}={value!r} {problem}; allowed: {allowed}")


# Numeric limits, shared by parsing (raw strings) and __post_init__ (typed values).
# field name -> (environment variable, minimum, maximum, allowed text)
_LIMITS: dict[str, tuple[str, float, float, str]] = {
    "port": ("WS_PORT", 0, 65535, "0-65535 (0 picks a free port)"),
    "max_size": ("WS_MAX_MESSAGE_BYTES", 1, 64 * 2**20, "1-67108864 bytes"),
    "ping_interval": ("WS_PING_INTERVAL", 0, 86400, "0 (heartbeat off) or seconds up to 86400"),
    "ping_timeout": ("WS_PING_TIMEOUT", 0.001, 86400, "seconds, 0.001-86400"),
    "shutdown_timeout": ("WS_SHUTDOWN_TIMEOUT", 0.1, 3600, "seconds, 0.1-3600"),
    "max_connections": ("WS_MAX_CONNECTIONS", 1, 1_000_000, "1-1000000"),
    "max_messages_per_second": (
        "WS_MAX_MESSAGES_PER_SECOND",
        0,
        1_000_000,
        "0 (off) or messages per second up to 1000000",
    ),
    "log_messages_per_second": (
        "WS_LOG_MESSAGES_PER_SECOND",
        0,
        1_000_000,
        "0 (no bound) or message lines per second up to 1000000",
    ),
    "workers": ("WS_WORKERS", 1, 256, "1-256"),
    "max_queue": ("WS_MAX_QUEUE", 1, 1024, "1-1024 frames"),
    "open_timeout": ("WS_OPEN_TIMEOUT", 0.1, 3600, "seconds, 0.1-3600, below WS_SHUTDOWN_TIMEOUT"),
    "drain_delay": (
        "WS_DRAIN_DELAY",
        0,
        3600,
        "0 (off) or seconds, below 60% of WS_SHUTDOWN_TIMEOUT",
    ),
    "memory_budget": (
        "WS_MEMORY_BUDGET",
        2**20,
        2**40,
        "a size from 1MiB to 1TiB, like 512MiB (units B, KiB, MiB, GiB, TiB)",
    ),
    "socket_buffer": (
        "WS_SOCKET_BUFFER",
        4 * 2**10,
        4 * 2**20,
        "a size from 4KiB to 4MiB, like 16KiB (units B, KiB, MiB)",
    ),
}
# Without a cgroup memory limit to take a share of: the compose file's limit for the server,
# which holds the 20,000-connection target (python -m stack bench).
FALLBACK_MEMORY_BUDGET = 2**30
# Of the cgroup limit: the rest is room for what arrives between two checks and for what the
# kernel charges to the container besides the process (page cache, socket buffers).
MEMORY_LIMIT_SHARE = 0.6
_SIZE_RE = re.compile(
    r"([0-9]+(?:\.[0-9]+)?) *(b|kib|mib|gib|tib|k|m|g|t)?", re.ASCII | re.IGNORECASE
)
_SIZE_UNITS = {"": 1, "b": 1, "k": 2**10, "m": 2**20, "g": 2**30, "t": 2**40}


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
        for name, (variable, low, high, allowed) in _LIMITS.items():
            value = getattr(self, name)
            if not low <= value <= high:
                raise ConfigError(variable, value, "is out of range", allowed)
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

        def read(field: str, variable: str, parse: Callable[[str, str], Any]) -> None:
            raw = environ.get(variable)
            if raw is not None and raw.strip():
                values[field] = parse(variable, raw)

        read("host", "WS_HOST", _parse_host)
        read("port", "WS_PORT", _parse_int)
        read("max_size", "WS_MAX_MESSAGE_BYTES", _parse_int)
        read("ping_interval", "WS_PING_INTERVAL", _parse_float)
        read("ping_timeout", "WS_PING_TIMEOUT", _parse_float)
        read("shutdown_timeout", "WS_SHUTDOWN_TIMEOUT", _parse_float)
        read("max_connections", "WS_MAX_CONNECTIONS", _parse_int)
        read("allowed_origins", "WS_ALLOWED_ORIGINS", _parse_origins)
        read("max_messages_per_second", "WS_MAX_MESSAGES_PER_SECOND", _parse_float)
        read("compression", "WS_COMPRESSION", _parse_bool)
        read("log_messages", "WS_LOG_MESSAGES", _parse_bool)
        read("log_messages_per_second", "WS_LOG_MESSAGES_PER_SECOND", _parse_float)
        read("trusted_proxies", "WS_TRUSTED_PROXIES", _parse_networks)
        read("log_format", "LOG_FORMAT", _choice(LOG_FORMATS, str.lower))
        read("log_level", "LOG_LEVEL", _choice(LOG_LEVELS, str.upper))
        read("event_loop", "WS_EVENT_LOOP", _choice(EVENT_LOOPS, str.lower))
        read("workers", "WS_WORKERS", _parse_int)
        read("max_queue", "WS_MAX_QUEUE", _parse_int)
        read("open_timeout", "WS_OPEN_TIMEOUT", _parse_float)
        read("drain_delay", "WS_DRAIN_DELAY", _parse_float)
        read("memory_budget", "WS_MEMORY_BUDGET", _parse_size)
        read("socket_buffer", "WS_SOCKET_BUFFER", _parse_size)
        read("handler", "WS_HANDLER", lambda _variable, raw: raw.strip())
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


# What `python -m server --help` says of each setting: variable -> (field, allowed, meaning).
# docs/configuration.md has the long version; tests/lint/test_docs.py keeps both in step.
SETTINGS: dict[str, tuple[str, str, str]] = {
    "WS_HOST": ("host", "an IP address or a host name that resolves", "address to listen on"),
    "WS_PORT": ("port", _LIMITS["port"][3], "port of WebSockets and /healthz /readyz /metrics"),
    "WS_MAX_MESSAGE_BYTES": ("max_size", _LIMITS["max_size"][3], "largest message; more: 1009"),
    "WS_PING_INTERVAL": ("ping_interval", _LIMITS["ping_interval"][3], "heartbeat period"),
    "WS_PING_TIMEOUT": ("ping_timeout", _LIMITS["ping_timeout"][3], "time for a pong; then 1011"),
    "WS_SHUTDOWN_TIMEOUT": (
        "shutdown_timeout",
        _LIMITS["shutdown_timeout"][3],
        "drain budget on SIGTERM, WS_DRAIN_DELAY included",
    ),
    "WS_MAX_CONNECTIONS": (
        "max_connections",
        _LIMITS["max_connections"][3],
        "open WebSockets per process; the next handshake gets 503",
    ),
    "WS_ALLOWED_ORIGINS": (
        "allowed_origins",
        "comma-separated origins, null, or * alone",
        "browsers with another Origin get 403",
    ),
    "WS_MAX_MESSAGES_PER_SECOND": (
        "max_messages_per_second",
        _LIMITS["max_messages_per_second"][3],
        "per connection; more: 1008",
    ),
    "WS_COMPRESSION": ("compression", _BOOL_ALLOWED, "offer permessage-deflate"),
    "WS_LOG_MESSAGES": ("log_messages", _BOOL_ALLOWED, "one log line per message"),
    "WS_LOG_MESSAGES_PER_SECOND": (
        "log_messages_per_second",
        _LIMITS["log_messages_per_second"][3],
        "message lines per connection; the rest summed in one line a second",
    ),
    "WS_TRUSTED_PROXIES": (
        "trusted_proxies",
        "comma-separated IP addresses or CIDRs",
        "peers whose X-Forwarded-For names the client",
    ),
    "LOG_FORMAT": ("log_format", ", ".join(LOG_FORMATS), "log line format"),
    "LOG_LEVEL": ("log_level", ", ".join(LOG_LEVELS), "minimum log level"),
    "WS_EVENT_LOOP": ("event_loop", ", ".join(EVENT_LOOPS), "event loop"),
    "WS_WORKERS": ("workers", _LIMITS["workers"][3], "server processes sharing the port"),
    "WS_MAX_QUEUE": ("max_queue", _LIMITS["max_queue"][3], "frames received, not yet handled"),
    "WS_OPEN_TIMEOUT": (
        "open_timeout",
        _LIMITS["open_timeout"][3],
        "time from TCP accept to 101 (default: or half a lower WS_SHUTDOWN_TIMEOUT)",
    ),
    "WS_DRAIN_DELAY": (
        "drain_delay",
        _LIMITS["drain_delay"][3],
        "after SIGTERM, only refuse (503) this long before 1001",
    ),
    "WS_MEMORY_BUDGET": (
        "memory_budget",
        _LIMITS["memory_budget"][3],
        "memory limit (default: 60% of the container's limit, else 1GiB per worker)",
    ),
    "WS_SOCKET_BUFFER": (
        "socket_buffer",
        _LIMITS["socket_buffer"][3],
        "each connection's kernel receive and send buffer",
    ),
    "WS_HANDLER": (
        "handler",
        HANDLER_ALLOWED,
        "your websockets handler, run behind the gateway (default: the echo)",
    ),
}


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
    for variable, (field, allowed, meaning) in SETTINGS.items():
        lines.append(f"  {variable}={_default_text(defaults[field])}")
        lines.append(f"      {meaning}; allowed: {allowed}")
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


def _parse_host(variable: str, raw: str) -> str:
    """An address or a name that resolves now: binding it later would fail with status 1."""
    host = raw.strip()
    if any(c.isspace() for c in host):
        raise ConfigError(variable, raw, "is not a host", "an IP address or host name")
    try:
        socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as e:
        raise ConfigError(
            variable, raw, f"does not resolve ({e})", "an IP address or a host name that resolves"
        ) from None
    return host


def _parse_int(variable: str, raw: str) -> int:
    if not _INT_RE.fullmatch(raw.strip()):
        raise ConfigError(variable, raw, "is not an integer", _allowed(variable))
    return _in_range(variable, raw, int(raw.strip()))


def _parse_size(variable: str, raw: str) -> int:
    match = _SIZE_RE.fullmatch(raw.strip())
    if not match:
        raise ConfigError(variable, raw, "is not a size", _allowed(variable))
    number, unit = match.groups()
    value = int(float(number) * _SIZE_UNITS[(unit or "").lower()[:1]])
    return _in_range(variable, raw, value)


def _parse_float(variable: str, raw: str) -> float:
    if not _FLOAT_RE.fullmatch(raw.strip()):
        raise ConfigError(variable, raw, "is not a number", _allowed(variable))
    value = float(raw.strip())
    if not math.isfinite(value):
        raise ConfigError(variable, raw, "is not a finite number", _allowed(variable))
    return _in_range(variable, raw, value)


def _allowed(variable: str) -> str:
    return next(allowed for var, _, _, allowed in _LIMITS.values() if var == variable)


def _in_range(variable: str, raw: str, value: _N) -> _N:
    _, low, high, allowed = next(spec for spec in _LIMITS.values() if spec[0] == variable)
    if not low <= value <= high:
        raise ConfigError(variable, raw, "is out of range", allowed)
    return value


def _parse_bool(variable: str, raw: str) -> bool:
    word = raw.strip().lower()
    if word in _TRUE:
        return True
    if word in _FALSE:
        return False
    raise ConfigError(variable, raw, "is not a boolean", _BOOL_ALLOWED)


def _choice(choices: tuple[str, ...], normalize: Callable[[str], str]) -> Callable[[str, str], str]:
    def parse(variable: str, raw: str) -> str:
        word = normalize(raw.strip())
        if word not in choices:
            raise ConfigError(variable, raw, "is unknown", ", ".join(choices))
        return word

    return parse


def _items(raw: str) -> list[str]:
    return [item.strip() for item in raw.split(",") if item.strip()]


def _parse_origins(variable: str, raw: str) -> tuple[str, ...]:
    items = _items(raw)
    if "*" in items:
        if len(items) > 1:  # "https://a.com,*" would allow every origin, not just a.com
            raise ConfigError(
                variable, raw, "mixes * with origins", "* alone, or a list of origins without *"
            )
        return ()  # explicit "any origin"
    origins = []
    for item in items:
        origin = item.lower().rstrip("/")
        if origin != "null" and not _ORIGIN_RE.fullmatch(origin):
            raise ConfigError(
                variable,
                raw,
                f"contains {item!r}, which is not an origin",
                "comma-separated origins like https://example.com, or * for any",
            )
        origins.append(origin)
    return tuple(origins)


def _parse_networks(variable: str, raw: str) -> tuple[IPNetwork, ...]:
    networks = []
    for item in _items(raw):
        try:
            networks.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            raise ConfigError(
                variable,
                raw,
                f"contains {item!r}, which is not an IP address or CIDR",
                "comma-separated IP addresses or CIDRs like 10.0.0.0/8",
            ) from None
    return tuple(networks)
