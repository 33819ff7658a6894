"""stack/prometheus.py reads Prometheus text, and reads the server's /metrics cleanly."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from websockets.asyncio.client import connect

from server.app import Gateway
from stack import prometheus

from .helpers import http_request

pytestmark = pytest.mark.unit

EXPOSITION = """\
# HELP ws_up Whether it is up.
# TYPE ws_up gauge
ws_up 1
# HELP ws_hits_total Hits, by path and code.
# TYPE ws_hits_total counter
ws_hits_total{path="/a",code="200"} 3
ws_hits_total{path="/b",code="500"} 2
# HELP ws_size_bytes Sizes.
# TYPE ws_size_bytes histogram
ws_size_bytes_bucket{le="64"} 1
ws_size_bytes_bucket{le="+Inf"} 2
ws_size_bytes_sum 70
ws_size_bytes_count 2
"""


def test_value_by_name_and_labels_in_any_order():
    """A sample is found by its name and label set, whatever order the labels come in."""
    samples = prometheus.parse(EXPOSITION)
    assert samples.value("ws_up") == 1
    assert samples.value("ws_hits_total", code="200", path="/a") == 3
    assert samples.value("ws_size_bytes_bucket", le="+Inf") == 2
    assert samples.value("ws_size_bytes_sum") == 70


def test_absent_sample_is_zero_and_total_sums_label_sets():
    """An absent sample reads 0 (a counter never counted); total() sums every label set."""
    samples = prometheus.parse(EXPOSITION)
    assert samples.value("ws_hits_total", path="/c", code="200") == 0
    assert samples.value("ws_hits_total") == 0  # no unlabelled sample
    assert samples.total("ws_hits_total") == 5
    assert samples.total("ws_nothing_total") == 0
    assert [labels["path"] for labels, _ in samples.labelled("ws_hits_total")] == ["/a", "/b"]


def test_families_keep_type_and_help():
    """Each family keeps its TYPE and HELP (counters under the name without _total)."""
    samples = prometheus.parse(EXPOSITION)
    assert samples.types == {"ws_up": "gauge", "ws_hits": "counter", "ws_size_bytes": "histogram"}
    assert samples.help["ws_hits"] == "Hits, by path and code."


def test_flat_keys_sort_labels():
    """flat() names each sample as reports print it: labels sorted, values unquoted."""
    flat = prometheus.parse(EXPOSITION).flat()
    assert flat["ws_up"] == 1
    assert flat["ws_hits_total{code=500,path=/b}"] == 2
    assert flat["ws_size_bytes_bucket{le=+Inf}"] == 2


def test_names_by_prefix_and_flat_of_some_samples():
    """names() lists sample names once each by prefix; flat(*names) keeps only those samples."""
    samples = prometheus.parse(EXPOSITION)
    assert samples.names("ws_size") == [
        "ws_size_bytes_bucket",
        "ws_size_bytes_sum",
        "ws_size_bytes_count",
    ]
    assert samples.names("ws_nothing") == []
    assert samples.flat("ws_up", "ws_hits_total") == {
        "ws_up": 1,
        "ws_hits_total{code=200,path=/a}": 3,
        "ws_hits_total{code=500,path=/b}": 2,
    }


@pytest.mark.parametrize(
    "text",
    [
        'ws_up{path="/a" 1\n',  # unterminated label set
        "ws_up one\n",  # not a number
        '# TYPE a gauge\na 1\n# TYPE b gauge\nb 1\na{x="1"} 2\n',  # family split in two
    ],
)
def test_malformed_text_raises(text: str):
    """A line the parser cannot read fails loudly instead of being skipped."""
    with pytest.raises(ValueError):
        prometheus.parse(text)


async def test_server_metrics_parse_cleanly(gateway: Gateway):
    """The server's /metrics, after traffic, parses: every family has HELP and a known TYPE."""
    async with connect(gateway.url) as ws:
        await ws.send("hello")
        await ws.recv()
    status, _, body = await http_request(gateway.port, "/metrics")
    assert status == 200
    text = body.decode()
    samples = prometheus.parse(text)
    declared = [line.split()[2] for line in text.splitlines() if line.startswith("# TYPE ")]
    assert sorted(samples.types) == sorted(name.removesuffix("_total") for name in declared), (
        "a TYPE line the parser did not read as its own family"
    )
    assert set(samples.types.values()) <= {"counter", "gauge", "histogram", "summary"}
    assert all(samples.help.values()), "a family without HELP"
    assert samples.value("ws_connections_total") == 1


def test_module_loads_neither_docker_nor_testcontainers():
    """Unit tests import stack.prometheus: it must not pull in docker or testcontainers."""
    code = (
        "import sys, stack.prometheus; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('docker', 'testcontainers')))"
    )
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=root, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]"
