"""The server's /metrics read back: Prometheus text parsed once, by ``prometheus_client``.

The server writes its exposition by hand from integer counters (it does not depend on
``prometheus_client``); the harness and the tests read it with the reference parser, so a
malformed line fails loudly instead of being skipped by a regular expression. Imports
neither docker nor testcontainers: unit tests use it.
"""

from __future__ import annotations

import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from prometheus_client.parser import text_string_to_metric_families

Key = tuple[str, frozenset[tuple[str, str]]]


@dataclass(frozen=True)
class Samples:
    """Every sample of one exposition, by sample name and label set."""

    values: Mapping[Key, float]
    types: Mapping[str, str]  # family name -> counter | gauge | histogram | ...
    help: Mapping[str, str]  # family name -> HELP text

    def value(self, name: str, **labels: str) -> float:
        """The sample ``name`` with exactly these ``labels`` (0 when absent: never counted)."""
        return self.values.get((name, frozenset(labels.items())), 0.0)

    def total(self, name: str) -> float:
        """The sum of the samples ``name`` over all their label sets (0 when there is none)."""
        return sum(v for (n, _), v in self.values.items() if n == name)

    def labelled(self, name: str) -> Iterator[tuple[dict[str, str], float]]:
        """(labels, value) of each sample ``name``, in exposition order."""
        for (n, labels), v in self.values.items():
            if n == name:
                yield dict(labels), v

    def names(self, prefix: str = "") -> list[str]:
        """The sample names that start with ``prefix``, each once, in exposition order."""
        return list(dict.fromkeys(n for n, _ in self.values if n.startswith(prefix)))

    def flat(self, *names: str) -> dict[str, float]:
        """``{"name" or "name{k=v,...}" (labels sorted): value}`` of the samples ``names``
        (all when none are named): the form reports print."""
        out = {}
        for (name, labels), v in self.values.items():
            if names and name not in names:
                continue
            pairs = ",".join(f"{k}={val}" for k, val in sorted(labels))
            out[name + (f"{{{pairs}}}" if pairs else "")] = v
        return out


def parse(text: str) -> Samples:
    """Prometheus text format -> Samples.

    Raises ValueError on a line it cannot read, or on a family whose samples are split
    by another family's.
    """
    values: dict[Key, float] = {}
    types: dict[str, str] = {}
    docs: dict[str, str] = {}
    for family in text_string_to_metric_families(text):
        if family.name in types:
            raise ValueError(f"metric family {family.name} appears twice")
        types[family.name] = family.type
        docs[family.name] = family.documentation
        for sample in family.samples:
            values[(sample.name, frozenset(sample.labels.items()))] = float(sample.value)
    return Samples(values, types, docs)


def fetch(url: str, timeout: float = 2) -> Samples:
    """GET ``url`` (a /metrics endpoint) and parse it."""
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return parse(response.read().decode())
