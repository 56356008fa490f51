"""The one result model: a test's result document as written by the measurer, typed.

History, compare, merge, reports, baselines and A/B runs all read results through
``Result``; nothing else walks the raw JSON.
"""

from __future__ import annotations

import enum
import math
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pytest_mi300x.results.files import ReadError, read_json
from pytest_mi300x.results.kinds import FailureKind as FailureKind  # where callers find it
from pytest_mi300x.results.metrics import GATED_METRICS
from pytest_mi300x.results.stack import comparability, sent_as_burst

SCHEMA = "pytest-mi300x/result/1"


class Status(enum.StrEnum):
    """What a result says of its test, from the file alone."""

    MEASURED = "measured"  # valid, no gated regression (no baseline, or no change)
    IMPROVED = "improved"
    UNDECIDED = "undecided"  # the gate could not decide (judge/gate.py GateOutcome.decision)
    REGRESSION = "regression"
    INVALID = "invalid"  # the runs' figures mean nothing (failed requests, wrong lengths)


def median(values: Iterable[float]) -> float:
    """The median of finite values; NaN when there are none."""
    finite = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    return float(statistics.median(finite)) if finite else math.nan


def median_figures(repetitions: Sequence[Mapping[str, float]],
                   keys: Iterable[str] | None = None) -> dict[str, float]:
    """Per figure, the median over repetitions (the figure every table shows)."""
    names = list(keys) if keys is not None else sorted({k for r in repetitions for k in r})
    out = {}
    for key in names:
        value = median(r[key] for r in repetitions if r.get(key) is not None)
        if not math.isnan(value):
            out[key] = value
    return out


def finite_figures(figures: Mapping[str, float | int]) -> dict[str, float]:
    """Figures fit for JSON and statistics: NaN and inf dropped."""
    return {k: float(v) for k, v in figures.items()
            if v is not None and math.isfinite(float(v))}


@dataclass(frozen=True)
class Run:
    """One measured repetition as stored."""

    seed: int | None
    figures: dict[str, float]
    problems: tuple[str, ...]
    raw: Mapping[str, Any] = field(repr=False, default_factory=dict)

    @property
    def valid(self) -> bool:
        return not self.problems

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any]) -> Run:
        return cls(doc.get("seed"), finite_figures(doc.get("figures") or {}),
                   tuple(doc.get("problems") or ()), doc)


@dataclass(frozen=True)
class Result:
    """A test's result document."""

    doc: Mapping[str, Any] = field(repr=False)
    path: Path | None = None

    # -- identity --------------------------------------------------------
    @property
    def test(self) -> str:
        return str(self.doc["test"])

    @property
    def run_id(self) -> str:
        return str(self.doc.get("run_id"))

    @property
    def created_at(self) -> str:
        return str(self.doc.get("created_at", ""))

    # -- figures ---------------------------------------------------------
    @property
    def runs(self) -> list[Run]:
        return [Run.from_dict(r) for r in self.doc.get("runs", [])]

    @property
    def valid_runs(self) -> list[Run]:
        return [r for r in self.runs if r.valid]

    @property
    def repetitions(self) -> list[dict[str, float]]:
        """The valid runs' figures: what verdicts compare."""
        return [r.figures for r in self.valid_runs]

    @property
    def medians(self) -> dict[str, float]:
        return median_figures(self.repetitions)

    @property
    def valid(self) -> bool:
        return bool(self.doc.get("valid")) and bool(self.valid_runs)

    @property
    def problems(self) -> list[str]:
        return [p for r in self.runs for p in r.problems]

    # -- verdicts --------------------------------------------------------
    @property
    def gate(self) -> Mapping[str, Any]:
        gates = self.doc.get("gate") or []
        return gates[-1] if gates else {}

    @property
    def gate_status(self) -> str:
        return str(self.gate.get("status", "-"))

    @property
    def verdicts(self) -> list[dict[str, Any]]:
        return list(self.gate.get("verdicts") or [])

    def gated(self, kind: str) -> list[str]:
        """Gated metrics whose verdict is ``kind`` ("regression", "improvement", ...)."""
        return [v["metric"] for v in self.verdicts if v.get("kind") == kind
                and v.get("gated", v.get("metric") in GATED_METRICS)]

    @property
    def decision(self) -> str:
        """What the gate decided of the test: "regression", "undecided", "no change",
        "cannot gate"; empty when it was not compared (``gate_status`` says why)."""
        return str(self.gate.get("decision") or "")

    @property
    def status(self) -> Status:
        if not self.valid:
            return Status.INVALID
        if self.gated("regression"):
            return Status.REGRESSION
        if self.decision == "undecided":
            return Status.UNDECIDED
        if self.gated("improvement"):
            return Status.IMPROVED
        return Status.MEASURED

    # -- provenance ------------------------------------------------------
    @property
    def host(self) -> Mapping[str, Any]:
        return self.doc.get("host") or {}

    @property
    def host_name(self) -> str:
        return str(self.host.get("name", "?"))

    @property
    def engine(self) -> Mapping[str, Any]:
        return self.doc.get("engine") or {}

    @property
    def engine_name(self) -> str:
        return str((self.doc.get("server") or {}).get("engine", "?"))

    @property
    def model(self) -> str:
        return str((self.doc.get("model") or {}).get("logical", "?"))

    @property
    def build(self) -> str:
        return str(self.engine.get("build", "?"))

    @property
    def engine_version(self) -> str:
        return str(self.engine.get("version", "?"))

    @property
    def fingerprint(self) -> Mapping[str, Any]:
        return self.doc.get("fingerprint") or {}

    @property
    def workload(self) -> Mapping[str, Any] | None:
        """The workload as run (scaled to the host)."""
        return (self.doc.get("workload") or {}).get("scaled")

    @property
    def flag_set(self) -> Mapping[str, Any] | None:
        return (self.doc.get("server") or {}).get("flag_set")

    @property
    def stack(self) -> dict[str, Any]:
        return comparability(self.fingerprint, self.engine, self.workload, self.flag_set)

    @property
    def host_floors(self) -> dict[str, float]:
        """The floors the host profile recorded, its burst floors over them for a burst."""
        floors = dict(self.host.get("floors") or {})
        if sent_as_burst(self.workload):
            floors.update(self.host.get("burst_floors") or {})
        return {k: float(v) for k, v in floors.items()}

    @property
    def host_noise(self) -> dict[str, float]:
        """The start-to-start noise the host profile recorded, its burst noise for a burst."""
        noise = dict(self.host.get("noise") or {})
        if sent_as_burst(self.workload):
            noise.update(self.host.get("burst_noise") or {})
        return {k: float(v) for k, v in noise.items()}

    @property
    def failure(self) -> Mapping[str, Any] | None:
        """The kind and one-line cause recorded when the test failed, if any."""
        return self.doc.get("failure")

    # -- reading ---------------------------------------------------------
    @classmethod
    def load(cls, path: Path) -> Result:
        doc = read_json(path, "a pytest-mi300x result file",
                        "delete it or run the test again")
        if not isinstance(doc, dict) or doc.get("schema") != SCHEMA or "test" not in doc:
            raise ReadError(f"{path}: not a pytest-mi300x result file (schema {SCHEMA!r} "
                            "expected); delete it or run the test again")
        return cls(doc, path)


def read_folder(folder: Path, skipped: list[str] | None = None) -> list[Result]:
    """Every result document in a run folder, by file name. A file that is not one (cut
    short, another JSON) goes to ``skipped`` with its reason instead of stopping the read."""
    results = []
    for path in sorted(folder.glob("*.json")):
        try:
            results.append(Result.load(path))
        except ReadError as exc:
            if skipped is not None:
                skipped.append(str(exc))
    return results


def by_test(results: Iterable[Result]) -> dict[str, Result]:
    return {r.test: r for r in results}
