"""The history store: every run's figures, one JSON line per test, appended.

JSON Lines rather than an embedded database: appends are atomic enough under a
file lock, nightly CI jobs on different hosts can each keep a file and
concatenate them, the file diffs and greps like the baselines, and a few
thousand nights of a suite stay a few MB that one read parses in milliseconds.
A line that cannot be read (an append cut short by a full disk) is skipped and
reported; it never stops a session or the ``history`` command.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pytest_mi300x.results.files import BadLine, ReadError, append_jsonl, read_jsonl
from pytest_mi300x.results.model import Result
from pytest_mi300x.results.stack import setup_of as _stack_setup

SCHEMA = "pytest-mi300x/history/1"


class HistoryError(Exception):
    """A history file that cannot be used at all; the message names the file and the fix."""


def entry_from_result(result: Result) -> dict[str, Any]:
    """One history line from a result."""
    return {
        "schema": SCHEMA,
        "run_id": result.run_id,
        "date": result.created_at,
        "test": result.test,
        "host": result.host_name,
        "engine": result.engine_name,
        "model": result.model,
        "engine_build": result.build,
        "engine_version": result.engine_version,
        "harness": (result.doc.get("harness") or {}).get("version"),
        "stack": result.stack,
        "valid": result.valid,
        "figures": result.medians,
        "repetitions": result.repetitions,
        "verdicts": {v["metric"]: v["kind"] for v in result.verdicts},
    }


@dataclass(frozen=True)
class Point:
    """One run's value of one metric for one test."""

    run_id: str
    date: str
    value: float
    engine_version: str
    entry: dict[str, Any]

    def spread(self, metric: str) -> tuple[float, float]:
        """The lowest and highest of the run's repetitions (the value itself if none)."""
        values = [float(r[metric]) for r in self.entry.get("repetitions") or []
                  if isinstance(r.get(metric), int | float)]
        return (min(values), max(values)) if values else (self.value, self.value)


def setup_of(entry: dict[str, Any]) -> dict[str, Any]:
    """What a run's figures depend on besides the engine build: hardware, workload, flag set.
    A history follows builds; a change of setup starts a new stretch of it."""
    return _stack_setup(entry.get("stack", {}))


def setup_breaks(points: Sequence[Point]) -> list[int]:
    """Indices of points whose setup differs from the point before."""
    return [i for i in range(1, len(points))
            if setup_of(points[i].entry) != setup_of(points[i - 1].entry)]


class HistoryStore:
    """An append-only JSON Lines file of per-test run figures."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.skipped: list[BadLine] = []
        """Lines the last read passed over, with the reason."""

    def _check(self) -> None:
        if self.path.is_dir():
            raise HistoryError(f"--history-file {self.path} is a folder; give a file path "
                               "such as .perf-results/history.jsonl")

    def append(self, entries: Iterable[dict[str, Any]]) -> int:
        """Append entries under a lock (xdist controllers of parallel jobs may share the file)."""
        self._check()
        return append_jsonl(self.path, entries)

    def read(self) -> list[dict[str, Any]]:
        self._check()
        self.skipped = []
        entries = []
        try:
            for number, entry in read_jsonl(self.path, self.skipped):
                if entry.get("schema") != SCHEMA or "test" not in entry:
                    self.skipped.append(BadLine(self.path, number,
                                                f"not a history entry (schema {SCHEMA!r})"))
                    continue
                entries.append(entry)
        except ReadError as exc:
            raise HistoryError(str(exc)) from None
        return entries

    def series(self, test: str, metric: str, host: str | None = None) -> list[Point]:
        """Valid runs of ``test`` that have ``metric``, oldest first."""
        points = []
        for e in self.read():
            if e["test"] != test or not e.get("valid") or (host and e.get("host") != host):
                continue
            value = (e.get("figures") or {}).get(metric)
            if isinstance(value, int | float):
                points.append(Point(str(e.get("run_id")), str(e.get("date")), float(value),
                                    str(e.get("engine_version")), e))
        return sorted(points, key=lambda p: (p.date, p.run_id))

    def tests(self) -> list[str]:
        return sorted({e["test"] for e in self.read()})
