"""Structured logging: one line per event, JSON (default) or logfmt-like text.

Code in this package logs with ``log_event(logger, level, "event_name", key=value, ...)``;
only ``server.__main__`` calls :func:`configure_logging`. Both formatters escape every value,
so message content can never start a new line or forge a field.

Lines go to stdout through :class:`LineWriter`: kept in memory and written together at most
LOG_FLUSH_INTERVAL later, without ever blocking the loop. A log consumer that stops reading
(a full pipe) cannot stall echoing: past ``LOG_BUFFER_BYTES`` new lines are dropped and counted
(``ws_log_lines_dropped_total``), and once the consumer reads again one ``log_lines_dropped``
line says how many. The per-message line (:func:`message_logger`) skips ``logging``'s
record machinery: it is most of the lines when ``WS_LOG_MESSAGES`` is on.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import logging
import os
import re
import select
import stat
import sys
import time
import traceback
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TextIO

PREVIEW_CHARS = 64  # of a text message
PREVIEW_BYTES = 32  # of a binary message, shown as 64 hex digits
# Lines waiting for a consumer that stopped reading; beyond it lines are dropped and counted.
LOG_BUFFER_BYTES = 1 << 20
# Lines wait up to this long (seconds) to be written together: every write wakes the
# reader, and Docker's log path (containerd-shim, then dockerd) costs about 0.3 ms of CPU per
# write, whatever its size. Written one loop turn at a time, a ramp of 2,000 handshakes/s
# spent about 30 % of the machine's CPU there. NGINX's buffered access_log has its "flush=".
LOG_FLUSH_INTERVAL = 0.05
# ... or written at once when this much is queued (a pipe's default capacity: one write).
LOG_WRITE_BYTES = 64 * 1024
# At exit, how long to wait for a slow consumer to take what is still buffered, seconds.
EXIT_FLUSH_TIMEOUT = 2.0

# Keys every JSON line starts with; event fields never overwrite them.
_RESERVED = frozenset({"ts", "level", "logger", "event", "pid"})
_BARE_VALUE = re.compile(r"[A-Za-z0-9_.:/@+\-]+")


def log_event(logger: logging.Logger, level: int, event: str, /, **fields: Any) -> None:
    """Log ``event`` with ``fields`` if ``level`` is enabled (nothing is built otherwise).

    With :func:`configure_logging`'s writer as the only handler, the line is rendered from
    the fields at once: what a ``LogRecord`` and the formatter would make of them, without
    building either (every handshake logs two lines; the record path cost about 45 us a
    line on a 2-core machine). Any other handler (tests' ``caplog``, an embedding
    application's) gets records as usual.
    """
    if not logger.isEnabledFor(level):
        return
    writer = _sole_writer()
    if writer is not None and not logger.handlers:
        name = logging.getLevelName(level)
        writer.line(writer.render(_line(_now_stamp(), name, logger.name, event, fields)))
    else:
        logger.log(level, event, extra={"fields": fields})


def _line(ts: str, level: str, logger: str, event: str, fields: dict[str, Any]) -> dict[str, Any]:
    """A line's fields in their order: the reserved keys first, then the event's own (which
    never overwrite them)."""
    out = {"ts": ts, "level": level, "logger": logger, "pid": os.getpid(), "event": event}
    for key, value in fields.items():
        if key not in _RESERVED:
            out[key] = value
    return out


def preview(message: str | bytes) -> str:
    """A short, escaped, single-line preview of a message, at most 64 characters (+ "...").

    Text: its first 64 characters; ``repr`` escapes every non-printable character (controls,
    line and paragraph separators, bidi overrides) and backslashes, so the preview is
    unambiguous and one line. Binary: its first 32 bytes in hex, which needs no escaping
    anywhere (``repr`` would spend four characters on most bytes of arbitrary binary, and a
    JSON log line two more on each backslash).
    """
    if isinstance(message, bytes):
        text = message[:PREVIEW_BYTES].hex()
        return text + "..." if len(message) > PREVIEW_BYTES else text
    text = repr(message[:PREVIEW_CHARS])[1:-1]
    return text + "..." if len(message) > PREVIEW_CHARS else text


def _timestamp(created: float) -> str:
    return (
        datetime.fromtimestamp(created, UTC)
        .isoformat(timespec="milliseconds")
        .replace("+00:00", "Z")
    )


_last_stamp: list[Any] = [-1, ""]  # (millisecond, its timestamp): many lines share one


def _now_stamp() -> str:
    now = time.time()
    ms = int(now * 1000)
    if ms != _last_stamp[0]:
        _last_stamp[0], _last_stamp[1] = ms, _timestamp(ms / 1000)
    return _last_stamp[1]


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
        ts = _timestamp(record.created)
        extra = record.__dict__.get("fields")
        if extra is not None:
            out = _line(ts, record.levelname, record.name, record.msg, extra)
        else:  # a record from another library (websockets, asyncio): keep its message
            out = _line(ts, record.levelname, record.name, "log", {})
            out["message"] = record.getMessage()
        error = _error(record)
        if error is not None:
            out.setdefault("error", error)
            if self.tracebacks:
                out["traceback"] = "".join(traceback.format_exception(*record.exc_info)).rstrip()
        return out

    def format(self, record: logging.LogRecord) -> str:
        return self.render(self.fields(record))

    def render(self, fields: dict[str, Any]) -> str:
        raise NotImplementedError


_json_line = json.JSONEncoder(ensure_ascii=True, default=str, separators=(",", ":")).encode
_json_string = json.encoder.encode_basestring_ascii  # a str as a quoted, escaped JSON string


class JsonFormatter(_Formatter):
    """One JSON object per line; ``json.dumps`` escapes control and non-ASCII characters."""

    def render(self, fields: dict[str, Any]) -> str:
        return _json_line(fields)


class TextFormatter(_Formatter):
    """``ts level event key=value ...``; values that are not plain tokens are JSON-quoted."""

    def render(self, fields: dict[str, Any]) -> str:
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


class LineWriter(logging.Handler):
    """Formats records into lines kept in memory, written to ``stream`` without blocking.

    In a running event loop, lines are written together by one ``os.write``
    LOG_FLUSH_INTERVAL after the first of them (sooner once LOG_WRITE_BYTES wait); elsewhere
    (start-up, the supervisor) at once. A pipe or socket is made non-blocking
    (``O_NONBLOCK``); when it is full, the rest waits until it is writable again
    (``loop.add_writer``) and lines beyond ``limit`` bytes are dropped and counted. A
    terminal is never made non-blocking (the flag would leak to the shell sharing it) and a
    regular file does not need it: both are written with plain writes.
    """

    def __init__(self, stream: TextIO, formatter: _Formatter, limit: int = LOG_BUFFER_BYTES):
        super().__init__()
        self.setFormatter(formatter)
        self.render = formatter.render
        self.stream = stream
        self.limit = limit
        self.lines: list[str] = []  # not yet encoded
        self.size = 0  # characters in lines plus bytes in pending
        self.pending = b""  # encoded, not yet taken by the stream
        self.dropped = 0  # lines dropped since the last log_lines_dropped line
        self.dropped_total = 0
        self.scheduled: asyncio.AbstractEventLoop | None = None  # a flush is due in this loop
        self.waiting: asyncio.AbstractEventLoop | None = None  # add_writer is registered
        try:
            self.fd: int | None = stream.fileno()
        except (AttributeError, OSError, ValueError):
            self.fd = None  # a StringIO (tests): written as text, at once
        if self.fd is not None:
            mode = os.fstat(self.fd).st_mode
            if (stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode)) and not os.isatty(self.fd):
                os.set_blocking(self.fd, False)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.line(self.format(record))
        except Exception:  # pragma: no cover - logging's own contract: never raise
            self.handleError(record)

    def line(self, text: str) -> None:
        """Queue one line (without its newline); written within LOG_FLUSH_INTERVAL, or at
        once when LOG_WRITE_BYTES are queued."""
        if self.size > self.limit:
            self.dropped += 1
            self.dropped_total += 1
            return
        self.lines.append(text)
        self.size += len(text) + 1
        if self.waiting is not None:
            return  # the stream is full: written when it takes more (_writable)
        if self.size >= LOG_WRITE_BYTES:
            self.write_some()
        elif self.scheduled is None:
            loop = _running_loop()
            if loop is None:
                self.write_some()
            else:
                self.scheduled = loop
                loop.call_later(LOG_FLUSH_INTERVAL, self._due)

    def _due(self) -> None:
        self.scheduled = None
        self.write_some()

    def write_some(self) -> bool:
        """Write what the stream takes now; True when nothing is left."""
        while True:
            if self.lines:
                chunk = "\n".join(self.lines) + "\n"
                self.lines.clear()
                if self.fd is None:
                    self.stream.write(chunk)
                    self.stream.flush()
                else:
                    self.pending += chunk.encode("ascii", "backslashreplace")
            while self.pending:
                try:
                    written = os.write(self.fd, self.pending)  # type: ignore[arg-type]
                except BlockingIOError:
                    self.size = len(self.pending)
                    self._wait_writable()
                    return False
                except OSError as exc:  # the reader is gone (EPIPE): nothing can be written
                    if exc.errno not in (errno.EPIPE, errno.EBADF, errno.EIO):
                        raise
                    self.pending = b""
                    break
                self.pending = self.pending[written:]
            self.size = 0
            if not self.dropped:
                return True
            # Writable again after dropping: say how many, in the order they were lost.
            dropped, self.dropped = self.dropped, 0
            self.lines.append(
                self.render(self._fields("log_lines_dropped", logging.WARNING, dropped))
            )

    def _fields(self, event: str, level: int, dropped: int) -> dict[str, Any]:
        return _line(
            _now_stamp(), logging.getLevelName(level), __name__, event, {"dropped": dropped}
        )

    def _wait_writable(self) -> None:
        loop = _running_loop()
        if loop is not None and self.waiting is None:
            self.waiting = loop
            loop.add_writer(self.fd, self._writable)  # type: ignore[arg-type]

    def _writable(self) -> None:
        if self.write_some() and self.waiting is not None:
            self.waiting.remove_writer(self.fd)  # type: ignore[arg-type]
            self.waiting = None

    def flush(self, timeout: float = EXIT_FLUSH_TIMEOUT) -> None:
        """Write everything buffered, waiting up to ``timeout`` seconds for a slow reader.

        Called at drain end and at exit (``logging.shutdown``); what a consumer that stopped
        reading does not take in time is dropped and counted.
        """
        if self.waiting is not None:
            with contextlib.suppress(RuntimeError, ValueError):  # the loop may be closed
                self.waiting.remove_writer(self.fd)  # type: ignore[arg-type]
            self.waiting = None
        self.scheduled = None  # a loop that ended with a write still due
        deadline = time.monotonic() + timeout
        while not self.write_some():
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([], [self.fd], [], left)[1]:
                self.dropped_total += self.pending.count(b"\n")
                self.pending, self.size = b"", 0
                return

    def close(self) -> None:
        self.flush()
        super().close()


def _running_loop() -> asyncio.AbstractEventLoop | None:
    """The event loop running in this thread, or None (start-up, the supervisor)."""
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


_writer: LineWriter | None = None


def _sole_writer() -> LineWriter | None:
    """:func:`configure_logging`'s writer when it is the only handler, so a line may be
    written to it straight from its fields; None when records are owed to other handlers."""
    return _writer if _writer is not None and logging.root.handlers == [_writer] else None


def lines_dropped() -> int:
    """Log lines dropped in this process because the consumer did not keep up."""
    return _writer.dropped_total if _writer is not None else 0


def flush() -> None:
    """Write every buffered line now (drain end, exit), waiting a little for the consumer."""
    if _writer is not None:
        _writer.flush()


def message_logger(logger: logging.Logger) -> Callable[..., None]:
    """``log(event, conn, seq, kind, size, preview)``: one INFO line per message.

    With :func:`configure_logging`'s writer the line is built straight from its fields
    (what a ``LogRecord`` and ``Formatter`` would produce, about 4x cheaper); otherwise (tests
    with ``caplog``, embedding) through :func:`log_event`.
    """
    writer = _sole_writer()
    if writer is None:

        def slow(event: str, conn: str, seq: int, kind: str, size: int, text: str) -> None:
            log_event(
                logger, logging.INFO, event, conn=conn, seq=seq, type=kind, size=size, preview=text
            )

        return slow
    line, render, name, pid = writer.line, writer.render, logger.name, os.getpid()
    if not isinstance(writer.formatter, JsonFormatter):
        # The text format: the formatter's own rendering, from a dict.
        def text(event: str, conn: str, seq: int, kind: str, size: int, preview: str) -> None:
            line(
                render(
                    {
                        "ts": _now_stamp(),
                        "level": "INFO",
                        "logger": name,
                        "pid": pid,
                        "event": event,
                        "conn": conn,
                        "seq": seq,
                        "type": kind,
                        "size": size,
                        "preview": preview,
                    }
                )
            )

        return text
    # JSON: what JsonFormatter writes, key for key. Only the preview can carry content; it
    # is escaped like every JSON value (control, non-ASCII, quote and backslash); the other
    # values are this server's own (event names, a hex id, numbers, "text"/"binary").
    head = f'","level":"INFO","logger":"{name}","pid":{pid},"event":"'

    def json_line(event: str, conn: str, seq: int, kind: str, size: int, preview: str) -> None:
        line(
            f'{{"ts":"{_now_stamp()}{head}{event}","conn":"{conn}","seq":{seq},'
            f'"type":"{kind}","size":{size},"preview":{_json_string(preview)}}}'
        )

    return json_line


# While a connection's message lines are suppressed, how often one summary line says how
# many, in seconds.
SUPPRESSED_SUMMARY_INTERVAL = 1.0


class MessageLogBudget:
    """One connection's per-message lines, at most ``rate`` per second on average.

    A token bucket holding one second's worth (never less than one line): a connection that
    sends faster has its message lines counted instead of written, and one
    ``message_logs_suppressed`` line per second while it goes on (and one when it ends,
    :meth:`close`) says how many, of how many bytes, from which ``seq`` to which. Every
    message is still echoed and counted in the metrics; the log lines of other connections
    are not pushed out by one flooder (``ws_log_lines_dropped_total``). ``rate`` 0: no bound.
    """

    __slots__ = (
        "_burst",
        "_bytes",
        "_clock",
        "_conn",
        "_first_seq",
        "_last",
        "_last_seq",
        "_log",
        "_logger",
        "_rate",
        "_since",
        "_tokens",
        "suppressed",
    )

    def __init__(
        self,
        log: Callable[..., None],
        logger: logging.Logger,
        conn: str,
        rate: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._log = log
        self._logger = logger
        self._conn = conn
        self._rate = rate
        self._burst = max(rate, 1.0)
        self._tokens = self._burst
        self._clock = clock
        self._last = clock() if rate else 0.0
        self.suppressed = 0  # message lines not written since the last summary
        self._bytes = self._first_seq = self._last_seq = 0
        self._since = 0.0

    def __call__(self, event: str, conn: str, seq: int, kind: str, size: int, text: str) -> None:
        """Write the message line if the budget allows, else count it for the summary."""
        rate = self._rate
        if not rate:
            self._log(event, conn, seq, kind, size, text)
            return
        now = self._clock()
        tokens = self._tokens + (now - self._last) * rate
        self._tokens = tokens if tokens < self._burst else self._burst
        self._last = now
        if self.suppressed and now - self._since >= SUPPRESSED_SUMMARY_INTERVAL:
            self.close()
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            self._log(event, conn, seq, kind, size, text)
            return
        if not self.suppressed:
            self._first_seq, self._since = seq, now
        self.suppressed += 1
        self._bytes += size
        self._last_seq = seq

    def close(self) -> None:
        """Write the summary of what is suppressed, if anything (at the connection's end)."""
        if self.suppressed:
            log_event(
                self._logger,
                logging.INFO,
                "message_logs_suppressed",
                conn=self._conn,
                messages=self.suppressed,
                bytes=self._bytes,
                first_seq=self._first_seq,
                last_seq=self._last_seq,
                limit_per_second=self._rate,
            )
            self.suppressed = self._bytes = 0


def configure_logging(
    log_format: str = "json", level: str = "INFO", stream: TextIO | None = None
) -> logging.Handler:
    """Send all logging to ``stream`` (stdout) as one line per record; quiet library chatter.

    The websockets and asyncio loggers are held at WARNING or above: their INFO lines
    ("connection open", "server listening") duplicate ours, and their rare errors are
    rendered as one line without traceback like everything else.
    """
    global _writer
    numeric = logging.getLevelName(level)
    formatter_cls = JsonFormatter if log_format == "json" else TextFormatter
    handler = LineWriter(
        stream if stream is not None else sys.stdout,
        formatter_cls(tracebacks=numeric <= logging.DEBUG),
    )
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
        if old is _writer:
            old.flush()
    root.addHandler(handler)
    root.setLevel(numeric)
    for name in ("websockets", "asyncio"):
        logging.getLogger(name).setLevel(max(numeric, logging.WARNING))
    _writer = handler
    return handler
