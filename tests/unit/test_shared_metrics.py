"""server/shared_metrics.py: one worker's /metrics answers for every worker (WS_WORKERS > 1)."""

from __future__ import annotations

from pathlib import Path

from server.metrics import Metrics
from server.shared_metrics import SharedMetrics, with_worker
from stack import prometheus


def workers(tmp_path: Path, count: int) -> list[SharedMetrics]:
    return [SharedMetrics(tmp_path, n, Metrics(max_connections=10, worker=n)) for n in range(count)]


def test_one_scrape_holds_every_worker_labelled_and_parses(tmp_path: Path) -> None:
    """Each family once, every sample with its worker: the reference parser reads it."""
    shared = workers(tmp_path, 3)
    for n, worker in enumerate(shared):
        worker.metrics.text.msgs_in = n + 1
        worker.metrics.connections_active = 2 * n
        worker.metrics.observe_size(100)
        worker.write()
    samples = prometheus.parse(shared[1].render())
    assert samples.value("ws_messages_total", type="text", direction="in", worker="2") == 3
    assert sum(v for _, v in samples.labelled("ws_connections_active")) == 0 + 2 + 4
    assert samples.value("ws_connections_max", worker="0") == 10
    assert samples.value("ws_message_size_bytes_bucket", le="256", worker="1") == 1
    info = {labels["worker"] for labels, _ in samples.labelled("ws_process_info")}
    assert info == {"0", "1", "2"}


def test_the_answering_worker_is_fresh_and_others_as_last_written(tmp_path: Path) -> None:
    """The scraped worker writes before reading; the others count from their last snapshot."""
    first, second = workers(tmp_path, 2)
    second.write()
    second.metrics.text.msgs_in = 5  # not yet written: not seen
    first.metrics.text.msgs_in = 7
    samples = prometheus.parse(first.render())
    assert samples.value("ws_messages_total", type="text", direction="in", worker="0") == 7
    assert samples.value("ws_messages_total", type="text", direction="in", worker="1") == 0


def test_with_worker_adds_the_label_once() -> None:
    """Samples with and without labels get worker; one that has it already is kept."""
    lines = with_worker('# HELP a x\na 1\nb{k="v w"} 2\nws_process_info{pid="9",worker="3"} 1\n', 4)
    assert lines == [
        "# HELP a x",
        'a{worker="4"} 1',
        'b{worker="4",k="v w"} 2',
        'ws_process_info{pid="9",worker="3"} 1',
    ]
