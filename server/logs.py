"""Structured logging: one line per event, JSON (default) or logfmt-like text.

Code in this package logs with ``log_event(logger, level, "event_name", key=value, ...)``;
only ``server.__main__`` calls :func:`configure_logging`. Both formatters escape every value,
so message content can never start a new line or forge a field.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import traceback
from datetime import UTC, datetime
from typing import Any, TextIO

PREVIEW_CHARS = 64

# Keys every JSON line starts with; event fields never overwrite them.
_RESERVED = frozenset({"ts", "level", "logger", "event", "pid"})
_BARE_VALUE = re.compile(r"[A-Za-z0-9_.:/@+\-]+")


def log_event(logger: logging.Logger, level: int, event: str, /, **fields: Any) -> None:
    """Log ``event`` with ``fields`` if ``level`` is enabled (nothing is built otherwise)."""
    if logger.isEnabledFor(level):
        logger.log(level, event, extra={"fields": fields})


def preview(message: str | bytes) -> str:
    """A short, escaped, single-line preview of a message (first 64 characters or bytes).

    ``repr`` escapes every non-printable character (controls, line and paragraph separators,
    bidi overrides) and backslashes, so the preview is unambiguous and one line.
    """
    head = message[:PREVIEW_CHARS]
    text = repr(head)[2:-1] if isinstance(head, bytes) else repr(head)[1:-1]
    return text + "..." if len(message) > PREVIEW_CHARS else text


def _timestamp(created: float) -> str:
    return (
        datetime.fromtimestamp(created, UTC)
        .isoformat(timespec="milliseconds")
        .replace("+00:00", "Z")
    )


def _error(record: logging.LogRecord) -> str | None:
    if record.exc_info and record.exc_info[1] is not None:
        exc = record.exc_info[1]
        return f"{type(exc).__name__}: {exc}"
    return None


class _Formatter(logging.Formatter):
    """Turns a record into an ordered dict of fields; subclasses render it as one line.

    Tracebacks are left out (they are multi-line noise for expected network errors); the
    one-line ``error`` field names the exception. With ``tracebacks=True`` (LOG_LEVEL=DEBUG)
    the traceback is added as one escaped field.
    """

    def __init__(self, *, tracebacks: bool = False) -> None:
        super().__init__()
        self.tracebacks = tracebacks

    def fields(self, record: logging.LogRecord) -> dict[str, Any]:
        out: dict[str, Any] = {
            "ts": _timestamp(record.created),
            "level": record.levelname,
            "logger": record.name,
            "pid": record.process,
        }
        extra = record.__dict__.get("fields")
        if extra is not None:
            out["event"] = record.msg
            for key, value in extra.items():
                if key not in _RESERVED:
                    out[key] = value
        else:  # a record from another library (websockets, asyncio): keep its message
            out["event"] = "log"
            out["message"] = record.getMessage()
        error = _error(record)
        if error is not None:
            out.setdefault("error", error)
            if self.tracebacks:
                out["traceback"] = "".join(traceback.format_exception(*record.exc_info)).rstrip()
        return out


class JsonFormatter(_Formatter):
    """One JSON object per line; ``json.dumps`` escapes control and non-ASCII characters."""

    def format(self, record: logging.LogRecord) -> str:
        return json.dumps(
            self.fields(record), ensure_ascii=True, default=str, separators=(",", ":")
        )


class TextFormatter(_Formatter):
    """``ts level event key=value ...``; values that are not plain tokens are JSON-quoted."""

    def format(self, record: logging.LogRecord) -> str:
        fields = self.fields(record)
        head = f"{fields.pop('ts')} {fields.pop('level'):<7} {_text_value(fields.pop('event'))}"
        return " ".join([head, *(f"{key}={_text_value(value)}" for key, value in fields.items())])


def _text_value(value: Any) -> str:
    if value is None:
        return "null"
    if value is True or value is False:
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, dict | list | tuple):
        text = json.dumps(value, ensure_ascii=True, default=str, separators=(",", ":"))
    else:
        text = value if isinstance(value, str) else str(value)
    if _BARE_VALUE.fullmatch(text):
        return text
    return json.dumps(text, ensure_ascii=True)


def configure_logging(
    log_format: str = "json", level: str = "INFO", stream: TextIO | None = None
) -> logging.Handler:
    """Send all logging to ``stream`` (stdout) as one line per record; quiet library chatter.

    The websockets and asyncio loggers are held at WARNING or above: their INFO lines
    ("connection open", "server listening") duplicate ours, and their rare errors are
    rendered as one line without traceback like everything else.
    """
    numeric = logging.getLevelName(level)
    formatter_cls = JsonFormatter if log_format == "json" else TextFormatter
    handler = logging.StreamHandler(stream if stream is not None else sys.stdout)
    handler.setFormatter(formatter_cls(tracebacks=numeric <= logging.DEBUG))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(numeric)
    for name in ("websockets", "asyncio"):
        logging.getLogger(name).setLevel(max(numeric, logging.WARNING))
    return handler
