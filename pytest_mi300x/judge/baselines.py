"""The baseline store: one readable JSON file per test, per host, engine and model."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from filelock import FileLock

from pytest_mi300x.judge.noise import SumSq
from pytest_mi300x.judge.records import entry, record_of
from pytest_mi300x.results.files import ReadError, read_json, slug, write_json_atomic
from pytest_mi300x.results.metrics import HEADLINE_FIGURES, METRIC_DIRECTIONS
from pytest_mi300x.results.model import median, median_figures
from pytest_mi300x.results.stack import setup_of

SCHEMA = "pytest-mi300x/baseline/1"
MIN_GATING_STARTS = 2
"""A baseline of fewer server starts holds no start-to-start evidence: it gates nothing (runs
inside one start never stand in for starts)."""


@dataclass(frozen=True)
class Baseline:
    """Stored repetitions of one test on one host, engine and model, with provenance."""

    test: str
    host: str
    engine: str
    model: str
    repetitions: list[dict[str, float]]
    comparability: dict[str, Any]
    provenance: dict[str, Any] = field(default_factory=dict)
    created_at: str = ""
    servers: list[int] = field(default_factory=list)
    """The server start each repetition came from (empty: all from one start)."""
    noise: list[dict[str, Any]] = field(default_factory=list)
    """The test's start-to-start evidence beyond these repetitions (judge/records.py), one
    entry per source: {"source", "date", "metrics": {metric: [sum of squares, df]},
    "starts": {metric: [[start value, ...], ...]}}, read windowed by age and screened for
    slowed starts. The baseline's own starts are not in it: every verdict measures those
    itself."""

    def __post_init__(self) -> None:
        if self.servers and len(self.servers) != len(self.repetitions):
            raise ValueError(f"{self.test}: servers names {len(self.servers)} repetitions, "
                             f"the baseline has {len(self.repetitions)}")

    @property
    def server_of(self) -> list[int]:
        """Server start per repetition, 0 for all when the baseline had one."""
        return list(self.servers) or [0] * len(self.repetitions)

    @property
    def server_count(self) -> int:
        return len(set(self.server_of)) or 1

    def start_values(self) -> dict[str, list[float]]:
        """Per metric with a direction, each server start's median, in start order."""
        groups: dict[int, list[dict[str, float]]] = {}
        for rep, start in zip(self.repetitions, self.server_of, strict=True):
            groups.setdefault(start, []).append(rep)
        metrics = sorted({k for r in self.repetitions for k in r if k in METRIC_DIRECTIONS})
        return {m: [v for v in (median(r.get(m, math.nan) for r in reps)
                               for reps in groups.values()) if not math.isnan(v)]
                for m in metrics}

    def noise_record(self, now: float | None = None) -> dict[str, SumSq]:
        """The stored evidence per metric (not counting this baseline's own starts),
        weighted by age and screened for slowed starts (judge/records.py)."""
        return record_of(self.noise, now)

    def full_record(self, now: float | None = None) -> dict[str, SumSq]:
        """Everything stored of the test's noise: the record and this baseline's own starts
        (for comparisons that do not include those starts, such as an A/B)."""
        own = self.own_evidence("")
        return record_of([*self.noise, *([own] if own else [])], now)

    def own_evidence(self, source: str) -> dict[str, Any] | None:
        """This baseline's starts as one noise entry, for when it is replaced."""
        found = entry(source, self.created_at,
                      {m: [v] for m, v in self.start_values().items()})
        return found if found["metrics"] else None

    def with_noise(self, entry: dict[str, Any]) -> Baseline:
        return replace(self, noise=[*self.noise, entry])

    def with_server(self, new: Baseline) -> Baseline:
        """This baseline plus ``new``'s repetitions as one more server start."""
        start = max(self.server_of, default=-1) + 1
        starts = self.provenance.get("server_starts") or [_start_of(self.provenance)]
        provenance = {**self.provenance, "server_starts": [*starts, _start_of(new.provenance)]}
        return Baseline(test=self.test, host=self.host, engine=self.engine, model=self.model,
                        repetitions=[*self.repetitions, *new.repetitions],
                        comparability=self.comparability, provenance=provenance,
                        servers=[*self.server_of, *([start] * len(new.repetitions))],
                        noise=self.noise, created_at=self.created_at)

    def to_dict(self) -> dict[str, Any]:
        return {"schema": SCHEMA, "test": self.test, "host": self.host, "engine": self.engine,
                "model": self.model, "created_at": self.created_at,
                "repetitions": self.repetitions, "servers": self.server_of,
                "comparability": self.comparability, "provenance": self.provenance,
                "noise": self.noise}

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> Baseline:
        return cls(test=doc["test"], host=doc["host"], engine=doc["engine"], model=doc["model"],
                   repetitions=list(doc["repetitions"]), comparability=dict(doc["comparability"]),
                   provenance=dict(doc.get("provenance", {})),
                   created_at=str(doc.get("created_at", "")),
                   servers=[int(k) for k in doc.get("servers", [])],
                   noise=[dict(e) for e in doc.get("noise", [])])


def _start_of(provenance: dict[str, Any]) -> dict[str, Any]:
    """What tells one server start's repetitions from another's."""
    return {"run_id": provenance.get("run_id"), "seeds": provenance.get("seeds")}


class BaselineError(Exception):
    """A baseline file that cannot be read; names the file and the fix."""


class BaselineStore:
    """``<root>/<host>/<engine>/<model>/<test>.json``; writes are atomic and file-locked."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, host: str, engine: str, model: str, nodeid: str) -> Path:
        # Every component is a slug: a model called org/name or a test id with '..' stays
        # one file inside its folder, and two ids never share a file.
        return self.root / slug(host) / slug(engine) / slug(model) / f"{slug(nodeid)}.json"

    def load(self, host: str, engine: str, model: str, nodeid: str) -> Baseline | None:
        path = self.path(host, engine, model, nodeid)
        if not path.exists():
            return None
        return self._read(path)

    def _read(self, path: Path) -> Baseline:
        fix = "delete it and refresh with `pytest-mi300x baselines refresh`"
        try:
            doc = read_json(path, "a pytest-mi300x baseline", fix)
            if not isinstance(doc, dict) or doc.get("schema") != SCHEMA:
                raise ReadError(f"{path}: not a pytest-mi300x baseline (schema {SCHEMA!r} "
                                f"expected); {fix}")
            baseline = Baseline.from_dict(doc)
            baseline.noise_record()  # a damaged noise entry is found here, not mid-verdict
            return baseline
        except ReadError as exc:
            raise BaselineError(str(exc)) from None
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise BaselineError(f"{path}: not a readable baseline ({type(exc).__name__}: "
                                f"{exc}); {fix}") from None

    def _save(self, baseline: Baseline, path: Path) -> None:
        doc = baseline.to_dict()
        if not doc["created_at"]:
            doc["created_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        write_json_atomic(path, doc)

    def save(self, baseline: Baseline) -> Path:
        return self.update(baseline, lambda old, new: new)[0]

    def update(self, new: Baseline, merge: Callable[[Baseline | None, Baseline], Baseline]
               ) -> tuple[Path, Baseline | None, Baseline]:
        """Read, merge and write one baseline under its lock, so that two sessions adding
        server starts at once both land (the lock covers the read, not only the write).
        Returns (path, what was stored before, what is stored now)."""
        path = self.path(new.host, new.engine, new.model, new.test)
        path.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(str(path) + ".lock"):
            try:
                old = self._read(path) if path.exists() else None
            except BaselineError:
                old = None
            merged = merge(old, new)
            self._save(merged, path)
        return path, old, merged

    def add_noise(self, host: str, engine: str, model: str, nodeid: str,
                  entry: dict[str, Any], stack: Mapping[str, Any]) -> Path | None:
        """Add a noise entry to a test's stored baseline when one exists on the same setup
        as ``stack`` (hardware, workload, flag set); its path, or None if there was none."""
        path = self.path(host, engine, model, nodeid)
        if not entry.get("metrics") or not path.exists():
            return None
        with FileLock(str(path) + ".lock"):
            try:
                old = self._read(path)
            except BaselineError:
                return None
            if setup_of(old.comparability) != setup_of(dict(stack)):
                return None
            self._save(old.with_noise(entry), path)
        return path

    def all(self) -> list[tuple[Path, Baseline]]:
        return [(p, self._read(p)) for p in sorted(self.root.glob("*/*/*/*.json"))]


BASELINE_PROPERTY = "mi300x_baseline"


class BaselineWriter:
    """Writes baselines shipped in test reports; registered only where results converge
    (the xdist controller, or the single process), so one process writes each file.

    With ``add_server`` a comparable stored baseline keeps its repetitions and gains
    this session's as one more server start; any other stored baseline is replaced.
    """

    def __init__(self, store: BaselineStore, *, add_server: bool = False) -> None:
        self.store = store
        self.add_server = add_server
        self.changes: list[str] = []

    def pytest_runtest_logreport(self, report: Any) -> None:
        for name, value in report.user_properties:
            if name == BASELINE_PROPERTY:
                self._write(Baseline.from_dict(json.loads(str(value))))

    def _write(self, new: Baseline) -> None:
        notes: list[str] = []

        def merge(old: Baseline | None, new: Baseline) -> Baseline:
            if self.add_server and old is not None and old.comparability == new.comparability:
                merged = old.with_server(new)
                notes.append(f"server start {merged.server_count} added "
                             f"({len(merged.repetitions)} repetitions); ")
                return merged
            if self.add_server and old is not None:
                notes.append("replaced (the stored one is from a different stack); ")
            return carry_noise(old, new)

        path, old, stored = self.store.update(new, merge)
        gates = (f"; {stored.server_count} server start: it gates nothing until it has "
                 f"{MIN_GATING_STARTS} or more (pytest-mi300x baselines refresh makes 5)"
                 if stored.server_count < MIN_GATING_STARTS else "")
        self.changes.append(f"{path}: {''.join(notes)}{describe_change(old, stored)}{gates}")


def carry_noise(old: Baseline | None, new: Baseline) -> Baseline:
    """A new baseline keeps what the test's earlier starts taught of its noise, as long as
    it runs on the same setup (hardware, workload, flag set; the build may differ)."""
    if old is None or setup_of(old.comparability) != setup_of(new.comparability):
        return new
    kept = [*old.noise]
    own = old.own_evidence(f"baseline of {old.comparability.get('engine_build')} "
                           f"({old.server_count} starts)")
    if own is not None:
        kept.append(own)
    return replace(new, noise=[*kept, *new.noise])


def describe_change(old: Baseline | None, new: Baseline) -> str:
    """One line: new, or the change of a few headline medians."""
    if old is None:
        return f"new ({len(new.repetitions)} repetitions)"
    parts = []
    before_all, after_all = median_figures(old.repetitions), median_figures(new.repetitions)
    for key in HEADLINE_FIGURES:
        before, after = before_all.get(key), after_all.get(key)
        if before is None or after is None:
            continue
        pct = (after - before) / before * 100 if before else float("nan")
        parts.append(f"{key} {before:.4g} -> {after:.4g} ({pct:+.1f}%)")
    return "; ".join(parts) or "replaced"
