"""A scenario's logbook: timestamped steps, observations, figures and checks (a Report).

The same report is printed live by ``python -m stack scenario NAME`` and shown by pytest
when a scenario fails, so a person and CI read the same story.
"""

from __future__ import annotations

import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass
class Check:
    what: str
    ok: bool
    detail: str
    at: float


class Report:
    """Steps, observations and checks of one scenario run, each stamped with its time."""

    def __init__(self, title: str, echo: Callable[[str], None] | None = None) -> None:
        self.title = title
        self.echo = echo
        self.started = time.monotonic()
        self.wall_started = time.time()
        self.lines: list[str] = []
        self.checks: list[Check] = []
        self.figures: dict[str, str] = {}
        self.errors: list[str] = []

    # ---- recording ---------------------------------------------------------------------------
    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def _emit(self, marker: str, text: str) -> None:
        line = f"[{self.elapsed():7.2f}s] {marker} {text}"
        self.lines.append(line)
        if self.echo is not None:
            self.echo(line)

    def step(self, text: str) -> None:
        """Something the scenario does (restart NGINX, open 50 clients, ...)."""
        self._emit("==>", text)

    def note(self, text: str) -> None:
        """Something the scenario saw."""
        self._emit("   ", text)

    def figure(self, key: str, value: Any, unit: str = "") -> None:
        """A measured figure: printed now and in the summary."""
        shown = f"{value:.2f}" if isinstance(value, float) else str(value)
        shown = f"{shown} {unit}".rstrip()
        self.figures[key] = shown
        self._emit("  #", f"{key}: {shown}")

    def check(self, what: str, ok: bool, detail: str = "") -> bool:
        """A claim of the scenario and whether it held; returns ``ok``."""
        self.checks.append(Check(what, bool(ok), detail, self.elapsed()))
        self._emit("PASS" if ok else "FAIL", what + (f"  ({detail})" if detail else ""))
        return bool(ok)

    def error(self, what: str, exc: BaseException) -> None:
        """The scenario stopped on an exception: a failed check with the traceback."""
        detail = f"{type(exc).__name__}: {exc}"
        self.errors.append("".join(traceback.format_exception(exc)))
        self.check(what, False, detail)

    # ---- verdict -----------------------------------------------------------------------------
    @property
    def ok(self) -> bool:
        return bool(self.checks) and all(c.ok for c in self.checks) and not self.errors

    @property
    def failed(self) -> list[Check]:
        return [c for c in self.checks if not c.ok]

    def summary(self) -> str:
        passed = sum(c.ok for c in self.checks)
        verdict = "PASSED" if self.ok else "FAILED"
        out = [
            f"{self.title}: {verdict}, {passed}/{len(self.checks)} checks held,"
            f" {self.elapsed():.1f} s"
        ]
        if self.figures:
            out.append("figures:")
            width = max(len(k) for k in self.figures)
            out.extend(f"  {key:<{width}}  {value}" for key, value in self.figures.items())
        if self.failed:
            out.append("failed checks:")
            out.extend(f"  - {c.what}  ({c.detail})" for c in self.failed)
        return "\n".join(out)

    def render(self) -> str:
        """Everything: the timeline, tracebacks of errors, then the summary."""
        parts = ["\n".join(self.lines)]
        parts.extend(self.errors)
        parts.append(self.summary())
        return "\n".join(parts)


def printer(stream=None) -> Callable[[str], None]:
    """An ``echo`` for :class:`Report` that prints each line at once."""
    out = stream or sys.stdout
    color = out.isatty()
    colors = {"PASS": "\033[32m", "FAIL": "\033[31m", "==>": "\033[1m"}

    def echo(line: str) -> None:
        if color:
            for marker, code in colors.items():
                if f"] {marker} " in line:
                    line = f"{code}{line}\033[0m"
                    break
        print(line, file=out, flush=True)

    return echo
