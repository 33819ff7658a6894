"""The environment's settings: one table of every variable, how its text is read, what it
allows, its range and what it means (``python -m server --help``).

A bad value raises :class:`ConfigError`, whose message is one line naming the variable, the
value and what is allowed. An empty value counts as unset (``WS_ALLOWED_ORIGINS=`` in a
compose file means "default"); :class:`server.config.Config` reads this table.
"""

from __future__ import annotations

import ipaddress
import math
import re
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
_N = TypeVar("_N", int, float)

LOG_FORMATS = ("json", "text")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
EVENT_LOOPS = ("auto", "asyncio", "uvloop")
_TRUE = frozenset({"true", "1", "yes", "on"})
_FALSE = frozenset({"false", "0", "no", "off"})
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


@dataclass(frozen=True)
class Setting:
    """One environment variable: the :class:`Config` field it feeds, how its text is read,
    what it allows and means (``python -m server --help``), and for a number its range."""

    field: str
    parse: Callable[[str, str], Any]  # (variable, raw text) -> value, or ConfigError
    allowed: str
    meaning: str
    limits: tuple[float, float] | None = None  # inclusive, checked on parsing and on creation


_SIZE_RE = re.compile(
    r"([0-9]+(?:\.[0-9]+)?) *(b|kib|mib|gib|tib|k|m|g|t)?", re.ASCII | re.IGNORECASE
)
_SIZE_UNITS = {"": 1, "b": 1, "k": 2**10, "m": 2**20, "g": 2**30, "t": 2**40}


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
    return in_range(variable, raw, int(raw.strip()))


def _parse_size(variable: str, raw: str) -> int:
    match = _SIZE_RE.fullmatch(raw.strip())
    if not match:
        raise ConfigError(variable, raw, "is not a size", _allowed(variable))
    number, unit = match.groups()
    value = int(float(number) * _SIZE_UNITS[(unit or "").lower()[:1]])
    return in_range(variable, raw, value)


def _parse_float(variable: str, raw: str) -> float:
    if not _FLOAT_RE.fullmatch(raw.strip()):
        raise ConfigError(variable, raw, "is not a number", _allowed(variable))
    value = float(raw.strip())
    if not math.isfinite(value):
        raise ConfigError(variable, raw, "is not a finite number", _allowed(variable))
    return in_range(variable, raw, value)


def _allowed(variable: str) -> str:
    return SETTINGS[variable].allowed


def in_range(variable: str, shown: object, value: _N) -> _N:
    """``value``, if within the limits of ``variable``; else a ConfigError showing ``shown``."""
    setting = SETTINGS[variable]
    low, high = setting.limits or (-math.inf, math.inf)
    if not low <= value <= high:
        raise ConfigError(variable, shown, "is out of range", setting.allowed)
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


def _parse_text(_variable: str, raw: str) -> str:
    return raw.strip()


# Every setting, in the order they are read: the one table parsing, validation and --help
# use. docs/configuration.md has the long version; tests/lint/test_docs.py keeps both in step.
SETTINGS: dict[str, Setting] = {
    "WS_HOST": Setting(
        "host", _parse_host, "an IP address or a host name that resolves", "address to listen on"
    ),
    "WS_PORT": Setting(
        "port",
        _parse_int,
        "0-65535 (0 picks a free port)",
        "port of WebSockets and /healthz /readyz /metrics",
        (0, 65535),
    ),
    "WS_MAX_MESSAGE_BYTES": Setting(
        "max_size", _parse_int, "1-67108864 bytes", "largest message; more: 1009", (1, 64 * 2**20)
    ),
    "WS_PING_INTERVAL": Setting(
        "ping_interval",
        _parse_float,
        "0 (heartbeat off) or seconds up to 86400",
        "heartbeat period",
        (0, 86400),
    ),
    "WS_PING_TIMEOUT": Setting(
        "ping_timeout",
        _parse_float,
        "seconds, 0.001-86400",
        "time for a pong; then 1011",
        (0.001, 86400),
    ),
    "WS_SHUTDOWN_TIMEOUT": Setting(
        "shutdown_timeout",
        _parse_float,
        "seconds, 0.1-3600",
        "drain budget on SIGTERM, WS_DRAIN_DELAY included",
        (0.1, 3600),
    ),
    "WS_MAX_CONNECTIONS": Setting(
        "max_connections",
        _parse_int,
        "1-1000000",
        "open WebSockets per process; the next handshake gets 503",
        (1, 1_000_000),
    ),
    "WS_ALLOWED_ORIGINS": Setting(
        "allowed_origins",
        _parse_origins,
        "comma-separated origins, null, or * alone",
        "browsers with another Origin get 403",
    ),
    "WS_MAX_MESSAGES_PER_SECOND": Setting(
        "max_messages_per_second",
        _parse_float,
        "0 (off) or messages per second up to 1000000",
        "per connection; more: 1008",
        (0, 1_000_000),
    ),
    "WS_COMPRESSION": Setting(
        "compression", _parse_bool, _BOOL_ALLOWED, "offer permessage-deflate"
    ),
    "WS_LOG_MESSAGES": Setting(
        "log_messages", _parse_bool, _BOOL_ALLOWED, "one log line per message"
    ),
    "WS_LOG_MESSAGES_PER_SECOND": Setting(
        "log_messages_per_second",
        _parse_float,
        "0 (no bound) or message lines per second up to 1000000",
        "message lines per connection; the rest summed in one line a second",
        (0, 1_000_000),
    ),
    "WS_TRUSTED_PROXIES": Setting(
        "trusted_proxies",
        _parse_networks,
        "comma-separated IP addresses or CIDRs",
        "peers whose X-Forwarded-For names the client",
    ),
    "LOG_FORMAT": Setting(
        "log_format", _choice(LOG_FORMATS, str.lower), ", ".join(LOG_FORMATS), "log line format"
    ),
    "LOG_LEVEL": Setting(
        "log_level", _choice(LOG_LEVELS, str.upper), ", ".join(LOG_LEVELS), "minimum log level"
    ),
    "WS_EVENT_LOOP": Setting(
        "event_loop", _choice(EVENT_LOOPS, str.lower), ", ".join(EVENT_LOOPS), "event loop"
    ),
    "WS_WORKERS": Setting(
        "workers", _parse_int, "1-256", "server processes sharing the port", (1, 256)
    ),
    "WS_MAX_QUEUE": Setting(
        "max_queue", _parse_int, "1-1024 frames", "frames received, not yet handled", (1, 1024)
    ),
    "WS_OPEN_TIMEOUT": Setting(
        "open_timeout",
        _parse_float,
        "seconds, 0.1-3600, below WS_SHUTDOWN_TIMEOUT",
        "time from TCP accept to 101 (default: or half a lower WS_SHUTDOWN_TIMEOUT)",
        (0.1, 3600),
    ),
    "WS_DRAIN_DELAY": Setting(
        "drain_delay",
        _parse_float,
        "0 (off) or seconds, below 60% of WS_SHUTDOWN_TIMEOUT",
        "after SIGTERM, only refuse (503) this long before 1001",
        (0, 3600),
    ),
    "WS_MEMORY_BUDGET": Setting(
        "memory_budget",
        _parse_size,
        "a size from 1MiB to 1TiB, like 512MiB (units B, KiB, MiB, GiB, TiB)",
        "memory limit (default: 60% of the container's limit, else 1GiB per worker)",
        (2**20, 2**40),
    ),
    "WS_SOCKET_BUFFER": Setting(
        "socket_buffer",
        _parse_size,
        "a size from 4KiB to 4MiB, like 16KiB (units B, KiB, MiB)",
        "each connection's kernel receive and send buffer",
        (4 * 2**10, 4 * 2**20),
    ),
    "WS_HANDLER": Setting(
        "handler",
        _parse_text,
        HANDLER_ALLOWED,
        "your websockets handler, run behind the gateway (default: the echo)",
    ),
}
