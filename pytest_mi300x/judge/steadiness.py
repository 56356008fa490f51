"""Is this machine as steady today as when its tests' noise was recorded?

Noise belongs to the test on the machine where it runs, on the day it runs: the same 2-core
machine kind measured 1-2% start to start one day and 14-17% another. A test's record comes
from earlier days (weighted to the recent ones, judge/records.py), so before a nightly
judges anything, a short check measures the spread of a few starts of a probe test now
(``pytest-mi300x steadiness``), **with the reference build** (the baselines' build, never
the one under judgement: a noisier build is a finding about that build, judge/spreads.py),
and compares it with the probe's record by a one-sided F test (noisier only). A machine
noisier than its record says so, and every verdict of the session widens its noise by the
factor measured (a test that could gate on its reference's noise and cannot tonight is then
undecided, not skipped); a machine in line with its record changes nothing. A check measured
with the build under judgement is recorded as such, and the gate does not use it for that
build (judge/gate.py).
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pytest_mi300x.judge.noise import AGREEMENT_LEVEL, SumSq
from pytest_mi300x.results.files import ReadError, read_json, write_json_atomic

SCHEMA = "pytest-mi300x/steadiness/1"
FRESH_S = 24 * 3600
"""A check older than this says nothing of today."""


@dataclass(frozen=True)
class Comparison:
    """One probe metric today against its record."""

    test: str
    metric: str
    today: SumSq
    record: SumSq
    p: float = math.nan
    noisier: bool = False

    @property
    def factor(self) -> float:
        """How much wider today's spread is, where the F test says it is (else 1)."""
        today, record = self.today.spread("today"), self.record.spread("record")
        if not self.noisier or today is None or record is None or record.sd == 0:
            return 1.0
        return today.sd / record.sd

    def line(self) -> str:
        today, record = self.today.spread("today"), self.record.spread("record")
        now = f"{today.pct:.1f}% (df {today.df:.3g})" if today else "not measured"
        if record is None:
            return f"{self.test}: {self.metric} spread {now} today; no record to compare"
        word = "NOISIER than" if self.noisier else "not shown noisier than"
        return (f"{self.test}: {self.metric} spread {now} today, {word} its record "
                f"{record.pct:.1f}% (df {record.df:.3g}; p={self.p:.2g} for no noisier)")


@dataclass
class Steadiness:
    """The check's outcome: the comparisons, and the factor verdicts widen their noise by."""

    comparisons: list[Comparison] = field(default_factory=list)
    date: str = ""
    fingerprint: dict[str, Any] = field(default_factory=dict)
    created: float = 0.0
    build: str = ""
    """The build the starts ran (``--vllm-build``'s value): the reference build, if the
    check is to widen anything."""

    @property
    def factor(self) -> float:
        return max((c.factor for c in self.comparisons), default=1.0)

    def summary(self) -> str:
        if not self.comparisons:
            return "steadiness: nothing measured"
        if not any(c.record.df for c in self.comparisons):
            return ("steadiness: no record to compare with (the probe has no baseline on this "
                    "setup: pytest-mi300x baselines refresh makes one); nothing is widened")
        if self.factor > 1:
            return (f"steadiness: this machine is noisier than its record today (x"
                    f"{self.factor:.2f} start to start): every verdict widens its noise by it")
        return "steadiness: this machine is not shown noisier than its record today"

    def to_dict(self) -> dict[str, Any]:
        return {"schema": SCHEMA, "date": self.date, "created": self.created,
                "build": self.build, "fingerprint": self.fingerprint, "factor": self.factor,
                "summary": self.summary(),
                "comparisons": [{"test": c.test, "metric": c.metric,
                                 "today": c.today.to_list(), "record": c.record.to_list(),
                                 "p": c.p, "noisier": c.noisier, "factor": c.factor,
                                 "line": c.line()} for c in self.comparisons]}

    def write(self, path: Path) -> None:
        write_json_atomic(path, self.to_dict())


def noisier_p(today: SumSq, record: SumSq) -> float:
    """One-sided F test: could today's spread be no larger than the record's?"""
    from scipy.stats import f

    mine, past = today.spread("today"), record.spread("record")
    if mine is None or past is None:
        return 1.0
    if past.sd == 0:
        return 0.0 if mine.sd > 0 else 1.0
    return float(f.sf((mine.sd / past.sd) ** 2, today.df, record.df))


def assess(today: Mapping[str, Mapping[str, SumSq]],
           records: Mapping[str, Mapping[str, SumSq]],
           fingerprint: Mapping[str, Any], build: str = "") -> Steadiness:
    """Compare each probe metric's spread today with its record. A metric counts as noisier
    when its one-sided F test rejects at AGREEMENT_LEVEL shared over the comparisons
    (Bonferroni), so that checking several metrics does not find a noisy machine by chance.
    ``build``: the build the starts ran (the reference)."""
    pairs = [(test, metric, ev, records.get(test, {}).get(metric, SumSq()))
             for test, metrics in sorted(today.items()) for metric, ev in sorted(metrics.items())]
    judged = [p for p in pairs if p[2].df > 0 and p[3].df > 0]
    level = AGREEMENT_LEVEL / max(1, len(judged))
    out = []
    for test, metric, ev, rec in pairs:
        if ev.df <= 0 or rec.df <= 0:
            out.append(Comparison(test, metric, ev, rec))
            continue
        p = noisier_p(ev, rec)
        out.append(Comparison(test, metric, ev, rec, p, noisier=p < level))
    return Steadiness(out, time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                      dict(fingerprint), time.time(), build)


class SteadinessError(Exception):
    """A steadiness file that cannot be used; one line naming it and the fix."""


@dataclass(frozen=True)
class Check:
    """A steadiness check as a session uses it."""

    factor: float
    summary: str
    build: str
    """The build it measured with ("" in a check from before builds were recorded)."""


def load(path: Path, fingerprint: Mapping[str, Any], *, now: float | None = None
         ) -> tuple[float, str]:
    """The factor to widen verdicts by and the line that says why (see :func:`load_check`,
    which also says with which build it was measured)."""
    check = load_check(path, fingerprint, now=now)
    return check.factor, check.summary


def load_check(path: Path, fingerprint: Mapping[str, Any], *, now: float | None = None
               ) -> Check:
    """A check written today on this machine; a check from another machine or day is
    refused."""
    fix = "run `pytest-mi300x steadiness` on this machine today"
    try:
        doc = read_json(path, "a pytest-mi300x steadiness check", fix)
    except ReadError as exc:
        raise SteadinessError(str(exc)) from None
    if not isinstance(doc, dict) or doc.get("schema") != SCHEMA:
        raise SteadinessError(f"--steadiness {path}: not a steadiness check (schema "
                              f"{SCHEMA!r}); {fix}")
    age = (now or time.time()) - float(doc.get("created") or 0)
    if age > FRESH_S:
        raise SteadinessError(f"--steadiness {path}: measured {age / 3600:.0f} h ago; noise "
                              f"changes from day to day: {fix}")
    theirs = doc.get("fingerprint") or {}
    differs = [k for k in ("cpu_model", "cpu_count", "accelerators", "cpu_isa")
               if theirs.get(k) != fingerprint.get(k)]
    if differs:
        raise SteadinessError(f"--steadiness {path}: measured on another machine "
                              f"({', '.join(differs)} differ); {fix}")
    factor = float(doc.get("factor") or 1.0)
    return Check(max(1.0, factor), str(doc.get("summary") or ""), str(doc.get("build") or ""))
