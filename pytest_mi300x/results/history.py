"""The history store: every run's figures, one JSON line per test, appended.

JSON Lines rather than an embedded database: appends are atomic enough under a
file lock, nightly CI jobs on different hosts can each keep a file and
concatenate them, the file diffs and greps like the baselines, and a few
thousand nights of a suite stay a few MB that one read parses in milliseconds.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from filelock import FileLock

from pytest_mi300x.judge.baselines import BUILD_KEYS, comparability

SCHEMA = "pytest-mi300x/history/1"


class HistoryError(Exception):
    """A history file that cannot be read; the message names the file, the line and the fix."""


def _medians(runs: Sequence[dict[str, Any]]) -> dict[str, float]:
    keys: set[str] = set()
    for run in runs:
        keys.update(run["figures"])
    out = {}
    for key in sorted(keys):
        values = [float(r["figures"][key]) for r in runs if r["figures"].get(key) is not None]
        if values:
            out[key] = statistics.median(values)
    return out


def entry_from_result(doc: dict[str, Any]) -> dict[str, Any]:
    """One history line from a result document (see ``measure.Measurer``)."""
    runs = [r for r in doc.get("runs", []) if not r.get("problems")]
    engine = doc.get("engine", {})
    verdicts = {v["metric"]: v["kind"] for g in doc.get("gate", []) for v in g["verdicts"]}
    return {
        "schema": SCHEMA,
        "run_id": doc.get("run_id"),
        "date": doc.get("created_at"),
        "test": doc["test"],
        "host": doc.get("host", {}).get("name"),
        "engine": doc.get("server", {}).get("engine"),
        "model": doc.get("model", {}).get("logical"),
        "engine_build": engine.get("build"),
        "engine_version": engine.get("version"),
        "harness": doc.get("harness", {}).get("version"),
        "stack": comparability(doc.get("fingerprint", {}), engine,
                               doc.get("workload", {}).get("scaled"),
                               doc.get("server", {}).get("flag_set")),
        "valid": bool(doc.get("valid")) and bool(runs),
        "figures": _medians(runs),
        "repetitions": [r["figures"] for r in runs],
        "verdicts": verdicts,
    }


@dataclass(frozen=True)
class Point:
    """One run's value of one metric for one test."""

    run_id: str
    date: str
    value: float
    engine_version: str
    entry: dict[str, Any]


def setup_of(entry: dict[str, Any]) -> dict[str, Any]:
    """What a run's figures depend on besides the engine build: hardware, workload, flag set.
    A history follows builds; a change of setup starts a new stretch of it."""
    return {k: v for k, v in entry.get("stack", {}).items() if k not in BUILD_KEYS}


def setup_breaks(points: Sequence[Point]) -> list[int]:
    """Indices of points whose setup differs from the point before."""
    return [i for i in range(1, len(points))
            if setup_of(points[i].entry) != setup_of(points[i - 1].entry)]


class HistoryStore:
    """An append-only JSON Lines file of per-test run figures."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def append(self, entries: Iterable[dict[str, Any]]) -> int:
        """Append entries under a lock (xdist controllers of parallel jobs may share the file)."""
        lines = [json.dumps(e, sort_keys=True, default=str) + "\n" for e in entries]
        if not lines:
            return 0
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(str(self.path) + ".lock"), self.path.open("a") as fh:
            fh.writelines(lines)
        return len(lines)

    def read(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        entries = []
        for number, line in enumerate(self.path.read_text().splitlines(), start=1):
            if not line.strip():
                continue
            try:
                entry = json.loads(line)
            except json.JSONDecodeError as exc:
                raise HistoryError(
                    f"{self.path}:{number}: not a JSON line ({exc.msg}); "
                    "delete or fix that line") from None
            if not isinstance(entry, dict) or entry.get("schema") != SCHEMA:
                raise HistoryError(
                    f"{self.path}:{number}: not a pytest-mi300x history entry "
                    f"(schema {SCHEMA!r} expected); delete or fix that line")
            entries.append(entry)
        return entries

    def series(self, test: str, metric: str, host: str | None = None) -> list[Point]:
        """Valid runs of ``test`` that have ``metric``, oldest first."""
        points = []
        for e in self.read():
            if e["test"] != test or not e.get("valid") or (host and e.get("host") != host):
                continue
            value = e.get("figures", {}).get(metric)
            if value is not None:
                points.append(Point(str(e.get("run_id")), str(e.get("date")), float(value),
                                    str(e.get("engine_version")), e))
        return sorted(points, key=lambda p: (p.date, p.run_id))

    def tests(self) -> list[str]:
        return sorted({e["test"] for e in self.read()})
