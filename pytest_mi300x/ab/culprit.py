"""From a red night to the build that caused it, by itself.

A nightly gate that fails a test on a build leaves its results folder: the failing tests,
the build that failed, and the build its baseline was made with (the last build known to
pass). The culprit search then:

1. confirms the failure head to head: the last good build against the failing one, on the
   failing tests, interleaved starts at balanced looks (ab's rule). Only if they are shown
   not to differ (equivalence within the floor, TOST) was the night a false alarm: it is
   marked so with its figures, and the tests' noise records learn from the starts it took.
   Still undecided at the last look, it is "not confirmed: undecided at N starts,
   resolving X%" (exit 3), never a false alarm;
2. bisects the builds between them (bisect.py: midpoints interleaved with good and bad
   starts, builds that measure nothing set aside, the final pair confirmed on fresh starts);
3. writes the first bad build, its evidence (per metric: change, interval, starts) and the
   runner-up suspects as Markdown (a CI job summary, ``culprit.md``) and JSON
   (``culprit.json``), with what the search cost in server starts and time.

Every start is in the record, so a restarted runner continues where the search stopped;
starts are added only while a verdict is undecided.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pytest_mi300x.ab.bisect import Outcome as BisectOutcome
from pytest_mi300x.ab.builds import Build
from pytest_mi300x.ab.headtohead import table
from pytest_mi300x.ab.starts import Record
from pytest_mi300x.judge.multiplicity import family_of
from pytest_mi300x.judge.verdict import Verdict
from pytest_mi300x.results.model import read_folder

HARDWARE = ("cpu_model", "cpu_count", "machine", "accelerators", "cpu_isa")
"""What makes two machines one host kind: starts of one are never judged against another's."""


class NightError(ValueError):
    """A results folder that names no red night to search from; one line with the fix."""


@dataclass(frozen=True)
class Night:
    """What a red night left behind."""

    folder: str
    tests: list[str]
    """The tests a gated metric of which regressed."""
    bad: str
    """The build that failed."""
    good: str | None
    """The build its baselines were made with (the last known to pass)."""
    regressions: dict[str, list[str]] = field(default_factory=dict)
    """Per test, 'metric change%' of each gated regression the night saw."""
    hardware: dict[str, Any] = field(default_factory=dict)
    host: str = ""
    """The host profile it ran on (``--gpu-host``)."""


def read_night(folder: Path) -> Night:
    """The red night in a results folder (``pytest --results-dir`` of the nightly)."""
    if not folder.is_dir():
        raise NightError(f"--results {folder} is not a results folder; give the nightly's "
                         "--results-dir (its results artifact)")
    failing = [r for r in read_folder(folder) if r.gated("regression")]
    if not failing:
        raise NightError(f"--results {folder}: no test there failed on a gated regression; "
                         "nothing to search (give --good, --bad and the tests instead)")
    builds = {r.build for r in failing}
    if len(builds) > 1:
        raise NightError(f"--results {folder}: failing tests ran {len(builds)} builds "
                         f"({', '.join(sorted(builds))}); give one night's folder")
    goods = {str(r.gate.get("baseline_build")) for r in failing if r.gate.get("baseline_build")}
    regressions = {r.test: [f"{v['metric']} {v.get('change_pct', math.nan):+.1f}%"
                            for v in r.verdicts if v.get("kind") == "regression"
                            and v.get("gated")] for r in failing}
    return Night(str(folder), sorted(r.test for r in failing), builds.pop(),
                 sorted(goods)[0] if len(goods) == 1 else None, regressions,
                 {k: failing[0].fingerprint.get(k) for k in HARDWARE}, failing[0].host_name)


def other_host_kind(night: Night, here: Mapping[str, Any]) -> list[str]:
    """What differs between the night's machine and this one (empty: the same kind)."""
    return [f"{k}: {night.hardware.get(k)} there, {here.get(k)} here" for k in HARDWARE
            if night.hardware.get(k) is not None and night.hardware.get(k) != here.get(k)]


@dataclass
class Search:
    """A finished (or stopped) culprit search and what it cost."""

    night: Night | None
    good: Build
    bad: Build
    outcome: BisectOutcome
    record: Record
    wall_s: float = 0.0

    @property
    def false_alarm(self) -> bool:
        """Shown not to differ head to head: undecided is never a false alarm."""
        return not self.outcome.confirmed and not self.outcome.undecided

    @property
    def undecided(self) -> bool:
        """Neither confirmed nor shown not to differ."""
        return not self.outcome.confirmed and self.outcome.undecided

    @property
    def found(self) -> bool:
        return bool(self.outcome.culprit_confirmed and self.outcome.first_bad)

    @property
    def starts(self) -> int:
        return len(self.record.starts)

    @property
    def start_s(self) -> float:
        """Time the starts took (server start-up and load), summed."""
        return sum(s.seconds for s in self.record.starts)

    def evidence(self) -> list[Verdict]:
        """The final pair's verdicts on the metric searched (its family): the culprit's
        evidence."""
        o = self.outcome
        metric = o.metric or ""
        return [v for v in o.culprit_check.get(o.test or "", [])
                if family_of(v.metric) == family_of(metric)]

    def headline(self) -> str:
        o = self.outcome
        if self.false_alarm:
            return (f"false alarm: {self.good.name} and {self.bad.name} do not differ head to "
                    "head on the failing tests (every gated metric within its floor)")
        if self.undecided:
            return o.reason
        if self.found and o.first_bad is not None and o.last_good is not None:
            return (f"first bad build: {o.first_bad.name} (after {o.last_good.name}), on "
                    f"{o.test}: {o.metric}")
        return f"undecided: {o.reason}"

    def markdown(self) -> str:
        o = self.outcome
        lines = [f"## Culprit search: {self.headline()}", ""]
        if self.night is not None:
            lines += [f"Red night: `{self.night.folder}`: `{self.bad.name}` failed "
                      + "; ".join(f"`{t}` ({', '.join(r)})"
                                  for t, r in self.night.regressions.items())
                      + f", against baselines of `{self.good.name}`.", ""]
        lines += [f"**1. Confirmation**, `{self.good.name}` (A) against `{self.bad.name}` (B), "
                  "interleaved starts:", "", "```", *table(o.confirmation), "```", ""]
        if self.false_alarm:
            lines += ["The failure does not reproduce head to head: every gated metric is "
                      "within its floor (equivalence shown), so the night is marked a **false "
                      "alarm**, and the tests' noise records learn from these starts.", ""]
        elif self.undecided:
            lines += [f"**Not confirmed**: {o.reason}. The night is neither a regression nor "
                      "a false alarm; the tests' noise records learn from these starts.", ""]
        else:
            lines += [f"**2. Bisect** on `{o.test}`: `{o.metric}`:", ""]
            lines += ["| # | build | class | starts | median | from good to bad |",
                      "|---|---|---|---|---|---|"]
            lines += [f"| {s.index} | `{s.build}` | {s.kind} | {s.starts} | "
                      f"{_num(s.median)} | {_share(s.position)} |" for s in o.steps]
            if not o.steps:
                lines.append("| | (no build between them) | | | | |")
            lines += ["", f"**3. The pair head to head** (fresh starts): {o.reason}", ""]
            if o.culprit_check is not o.confirmation and o.culprit_check:
                lines += ["```", *table(o.culprit_check), "```", ""]
            for v in self.evidence():
                lo, hi = v.interval_pct
                lines.append(f"- `{v.metric}`: {v.change_pct:+.1f}% ({v.confidence:.1%} "
                             f"interval {lo:+.1f}% to {hi:+.1f}%), "
                             f"{len(v.baseline_starts)}+{len(v.candidate_starts)} starts, "
                             f"{v.kind.value}")
            suspects = [*o.suspects, *([o.ambiguous.build] if o.ambiguous else [])]
            lines += ["", "Runner-up suspects: " + (", ".join(f"`{s}`" for s in suspects)
                                                    if suspects else "none"), ""]
        lines.append(f"Cost: {self.starts} server starts, {self.start_s / 60:.1f} min of "
                     f"starts and load ({self.wall_s / 60:.1f} min this run, the rest "
                     "resumed from the record).")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        o = self.outcome

        def verdicts(v: Mapping[str, Sequence[Verdict]]) -> dict[str, Any]:
            return {t: [x.to_dict() for x in vs] for t, vs in v.items()}

        return {
            "schema": "pytest-mi300x/culprit/1",
            "night": vars(self.night) if self.night else None,
            "good": self.good.describe(), "bad": self.bad.describe(),
            "false_alarm": self.false_alarm, "undecided": self.undecided, "found": self.found,
            "headline": self.headline(),
            "test": o.test, "metric": o.metric,
            "first_bad": o.first_bad.describe() if o.first_bad else None,
            "last_good": o.last_good.describe() if o.last_good else None,
            "culprit_confirmed": o.culprit_confirmed, "suspects": o.suspects,
            "skipped": o.skipped, "reason": o.reason,
            "steps": [s.to_dict() for s in o.steps],
            "confirmation": verdicts(o.confirmation),
            "culprit_check": verdicts(o.culprit_check),
            "cost": {"starts": self.starts, "start_s": self.start_s, "wall_s": self.wall_s,
                     "per_build": {b: len([s for s in self.record.starts if s.build == b])
                                   for b in dict.fromkeys(s.build for s in self.record.starts)}},
            "written": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }


def _num(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.4g}"


def _share(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.0%}"
