"""Log lines (JSON and text) that content cannot forge, and the Prometheus exposition."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import select

import pytest

from server.logs import (
    LOG_WRITE_BYTES,
    JsonFormatter,
    LineWriter,
    TextFormatter,
    configure_logging,
    log_event,
    message_logger,
    preview,
)
from server.metrics import SIZE_BUCKETS, Metrics
from stack import prometheus

from .helpers import units, wait_until

pytestmark = pytest.mark.unit

FORGERY = 'hi\n{"event":"connection_open","conn":"fake"}\r\u2028\x1b[31m\u202e"quoted" \\'


def record(
    name: str = "message_received", level: int = logging.INFO, /, **fields
) -> logging.LogRecord:
    rec = logging.LogRecord("server.app", level, __file__, 1, name, None, None)
    rec.fields = fields
    return rec


def test_json_line_has_the_standard_keys_then_the_fields():
    """A JSON line starts with ts, level, logger, pid, event and carries the event fields."""
    line = JsonFormatter().format(record(conn="ab12cd34", size=3, ok=True, none=None))
    data = json.loads(line)
    assert list(data)[:5] == ["ts", "level", "logger", "pid", "event"]
    assert data["ts"].endswith("Z") and data["level"] == "INFO" and data["logger"] == "server.app"
    assert (data["event"], data["conn"], data["size"], data["ok"], data["none"]) == (
        "message_received",
        "ab12cd34",
        3,
        True,
        None,
    )


@pytest.mark.parametrize("formatter", [JsonFormatter(), TextFormatter()], ids=["json", "text"])
def test_content_cannot_forge_a_line(formatter):
    """Newlines, quotes, escapes and separators in content stay inside one field of one line."""
    line = formatter.format(record(preview=preview(FORGERY), raw=FORGERY, event="fake", ts="x"))
    assert "\n" not in line and "\r" not in line and "\u2028" not in line and "\x1b" not in line
    assert line.isascii()
    if isinstance(formatter, JsonFormatter):
        data = json.loads(line)
        assert data["raw"] == FORGERY and data["event"] == "message_received"
        assert data["ts"] != "x"  # a field cannot overwrite the standard keys
    else:
        assert line.count(" event=") == 0 and " message_received " in line
        assert ' raw="hi\\n{\\"event\\":' in line


def test_preview_is_short_escaped_and_typed():
    """Previews escape control characters and are cut at 64 characters: text as text, binary
    as the hex of its first 32 bytes."""
    assert preview("a\nb\tc\x00") == "a\\nb\\tc\\x00"
    assert preview(b"\x00\xffA\n") == "00ff410a"
    assert preview("x" * 100) == "x" * 64 + "..."
    assert preview(b"y" * 33) == "79" * 32 + "..."
    assert preview("\u202e\u2028") == "\\u202e\\u2028"
    assert preview("") == "" and preview(b"") == ""


def test_text_line_is_key_value():
    """The text format is 'ts LEVEL event key=value ...' with quoting only when needed."""
    line = TextFormatter().format(
        record(
            "connection_closed",
            logging.WARNING,
            code=1009,
            reason="too big",
            ok=False,
            ratio=0.5,
            none=None,
        )
    )
    ts, rest = line.split(" ", 1)
    assert ts.endswith("Z")
    assert rest.startswith("WARNING connection_closed logger=server.app pid=")
    assert rest.endswith(' code=1009 reason="too big" ok=false ratio=0.5 none=null')
    nested = TextFormatter().format(record("server_started", config={"port": 1, "x": [1]}))
    assert nested.endswith(' config="{\\"port\\":1,\\"x\\":[1]}"')


def test_foreign_records_and_exceptions_stay_one_line():
    """A library record keeps its message; an exception becomes one 'error' field."""
    try:
        raise ValueError("bad\nthing")
    except ValueError:
        import sys

        exc_info = sys.exc_info()
    rec = logging.LogRecord(
        "websockets.server", logging.ERROR, __file__, 1, "failed %s", ("x",), exc_info
    )
    data = json.loads(JsonFormatter().format(rec))
    assert (data["event"], data["message"], data["error"]) == (
        "log",
        "failed x",
        "ValueError: bad\nthing",
    )
    assert "traceback" not in data
    verbose = json.loads(JsonFormatter(tracebacks=True).format(rec))
    assert "Traceback (most recent call last)" in verbose["traceback"]
    assert "\n" not in TextFormatter().format(rec)


def test_configure_logging_and_log_event():
    """configure_logging sends one line per event to the stream and quiets library INFO."""
    stream = io.StringIO()
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    try:
        configure_logging("json", "INFO", stream)
        log_event(logging.getLogger("server.test"), logging.INFO, "hello", n=1)
        log_event(logging.getLogger("server.test"), logging.DEBUG, "hidden")
        logging.getLogger("websockets.server").info("connection open")
        logging.getLogger("websockets.server").warning("library warning")
        lines = stream.getvalue().splitlines()
        assert [json.loads(x)["event"] for x in lines] == ["hello", "log"]
        assert logging.getLogger("websockets").level == logging.WARNING
        configure_logging("text", "DEBUG", stream)
        assert isinstance(root.handlers[0].formatter, TextFormatter)
        assert root.handlers[0].formatter.tracebacks is True
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
        logging.getLogger("websockets").setLevel(logging.NOTSET)
        logging.getLogger("asyncio").setLevel(logging.NOTSET)


@pytest.mark.parametrize("log_format", ["json", "text"])
def test_an_event_written_directly_is_the_line_its_record_would_make(log_format, monkeypatch):
    """log_event skips the LogRecord when the writer is the only handler: same line, key for
    key (reserved keys in the fields still cannot overwrite), as the formatter's."""
    stream = io.StringIO()
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    app = logging.getLogger("server.app")
    fields = {"conn": "ab12cd34", "code": 1000, "ok": None, "raw": FORGERY, "event": "x"}
    try:
        writer = configure_logging(log_format, "INFO", stream)
        with monkeypatch.context() as no_records:
            no_records.setattr(logging.Logger, "makeRecord", None)  # a record would fail
            log_event(app, logging.WARNING, "connection_closed", **fields)
        expected = writer.formatter.format(record("connection_closed", logging.WARNING, **fields))
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
        logging.getLogger("websockets").setLevel(logging.NOTSET)
        logging.getLogger("asyncio").setLevel(logging.NOTSET)
    (line,) = stream.getvalue().splitlines()
    if log_format == "json":
        assert json.loads(line) | {"ts": 0} == json.loads(expected) | {"ts": 0}
        assert list(json.loads(line)) == list(json.loads(expected))
    else:
        assert line.split(" ", 1)[1] == expected.split(" ", 1)[1]


@pytest.mark.parametrize("log_format", ["json", "text"])
def test_message_line_is_the_formatters_line_and_cannot_be_forged(log_format):
    """The per-message fast path writes what the formatter would, content escaped, one line."""
    stream = io.StringIO()
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    app = logging.getLogger("server.app")
    try:
        configure_logging(log_format, "INFO", stream)
        message_logger(app)("message_echoed", "ab12cd34", 7, "text", 99, preview(FORGERY))
        fields = {"conn": "ab12cd34", "seq": 7, "type": "text", "size": 99}
        log_event(app, logging.INFO, "message_echoed", **fields, preview=preview(FORGERY))
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
        logging.getLogger("websockets").setLevel(logging.NOTSET)
        logging.getLogger("asyncio").setLevel(logging.NOTSET)
    fast, slow = stream.getvalue().splitlines()
    assert fast.isascii() and "\x1b" not in fast
    if log_format == "json":
        assert json.loads(fast) | {"ts": 0} == json.loads(slow) | {"ts": 0}
        assert json.loads(fast)["preview"] == preview(FORGERY)
    else:
        assert fast.split(" ", 1)[1] == slow.split(" ", 1)[1]


async def test_lines_of_many_loop_turns_are_written_together():
    """Lines logged over several loop turns wait for each other (LOG_FLUSH_INTERVAL) and
    reach the pipe in one write, in order; past LOG_WRITE_BYTES they go at once."""
    read_fd, write_fd = os.pipe()
    writer = LineWriter(os.fdopen(write_fd, "w"), JsonFormatter())
    try:
        for n in range(3):
            writer.line(json.dumps({"n": n}))
            await asyncio.sleep(0)  # the next loop turn
        assert not select.select([read_fd], [], [], 0)[0], "nothing written after 3 turns"
        await wait_until(lambda: select.select([read_fd], [], [], 0)[0], units(2), "a write")
        assert [json.loads(x)["n"] for x in os.read(read_fd, 1 << 16).splitlines()] == [0, 1, 2]

        big = "x" * (LOG_WRITE_BYTES // 4)
        for _ in range(4):
            writer.line(json.dumps({"big": big}))
        assert select.select([read_fd], [], [], 0)[0], "a pipe's worth is written at once"
    finally:
        writer.flush(timeout=0)
        os.close(read_fd)


def test_metrics_render_is_valid_exposition():
    """Every family has HELP and TYPE; labels are escaped; the histogram is cumulative."""
    m = Metrics(max_connections=5, worker=2)
    for size in (0, 10, 64, 65, 2**20, 2**27):
        m.observe_size(size)
    m.count_close(1000)
    m.count_close(1000)
    m.count_error("protocol_error")
    m.count_rejection("origin")
    m.count_http("/healthz", 200)
    text = m.render()
    assert text.endswith("\n")
    samples = prometheus.parse(text)  # raises on a family split in two
    # ... and one family per TYPE line (the parser merges a TYPE line repeated at once).
    assert len(samples.types) == sum(x.startswith("# TYPE ") for x in text.splitlines())
    assert all(samples.help.values()) and "unknown" not in samples.types.values()
    assert samples.value("ws_closes_total", code="1000") == 2
    assert samples.value("ws_errors_total", kind="protocol_error") == 1
    assert samples.value("ws_connections_rejected_total", reason="origin") == 1
    assert samples.value("ws_http_responses_total", path="/healthz", code="200") == 1
    assert samples.value("ws_connections_max") == 5
    [(info, _)] = samples.labelled("ws_process_info")
    assert info["pid"] and info["worker"] == "2"
    buckets = [v for _, v in samples.labelled("ws_message_size_bytes_bucket")]
    assert len(buckets) == len(SIZE_BUCKETS) + 1
    assert buckets == sorted(buckets) and buckets[0] == 1 and buckets[-1] == 6
    assert samples.value("ws_message_size_bytes_bucket", le="64") == 3
    assert samples.value("ws_message_size_bytes_count") == 6
    assert samples.value("ws_message_size_bytes_sum") == 0 + 10 + 64 + 65 + 2**20 + 2**27


def test_metric_label_values_are_escaped():
    """Label values with quotes, backslashes or newlines cannot break the exposition."""
    m = Metrics()
    m.count_error('we"ird\\kind\n')
    assert prometheus.parse(m.render()).value("ws_errors_total", kind='we"ird\\kind\n') == 1
