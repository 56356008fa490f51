"""Which build in an ordered range made it slower: Pinpoint's bisect with this project's
verdict rule.

First the good and the bad build are measured head to head (interleaved starts): if they do
not differ, there is nothing to look for and the bisect says so. Then each midpoint is
classified by where it falls between them, on the metric that regressed: like the good
build (no regression against it, and better than the bad one), like the bad build (the
reverse), or ambiguous, which earns more starts up to a limit and then stops the bisect
with the evidence (the range may hold more than one change). A single run is never
trusted: every classification rests on at least ``min_starts`` server starts.

Nothing is kept in memory only: every start is in the record, so running the same command
again replays the decisions from it and continues where it stopped.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

from pytest_mi300x.ab.builds import Build
from pytest_mi300x.ab.headtohead import HeadToHead
from pytest_mi300x.ab.starts import Record, RunStart
from pytest_mi300x.judge.verdict import (
    CONFIDENCE,
    DEFAULT_THRESHOLD_PCT,
    Kind,
    Verdict,
    judge_starts,
)


@dataclass(frozen=True)
class Step:
    """One build classified."""

    build: str
    index: int
    kind: str  # "good", "bad", "ambiguous"
    starts: int
    median: float
    position: float
    """Where it falls from the good build (0) to the bad one (1)."""
    against_good: Verdict
    against_bad: Verdict

    def line(self) -> str:
        return (f"#{self.index} {self.build}: {self.kind} ({self.starts} starts, median "
                f"{self.median:.4g}, {self.position:.0%} of the way from good to bad; vs good "
                f"{self.against_good.kind.value} {self.against_good.change_pct:+.1f}%, vs bad "
                f"{self.against_bad.kind.value} {self.against_bad.change_pct:+.1f}%)")


@dataclass
class Outcome:
    """How the bisect ended."""

    confirmed: bool
    test: str | None = None
    metric: str | None = None
    first_bad: Build | None = None
    last_good: Build | None = None
    ambiguous: Step | None = None
    steps: list[Step] = field(default_factory=list)
    confirmation: dict[str, list[Verdict]] = field(default_factory=dict)
    reason: str = ""


@dataclass
class Bisect:
    """A bisect over ``builds`` (oldest first) between ``good`` and ``bad`` (indices)."""

    builds: list[Build]
    good: int
    bad: int
    run_start: RunStart
    record: Record
    metric: str | None = None
    min_starts: int = 3
    max_starts: int = 6
    confidence: float = CONFIDENCE
    progress: Callable[[str], None] = print

    def run(self) -> Outcome:
        if not 0 <= self.good < self.bad < len(self.builds):
            raise ValueError("bisect: the good build must come before the bad one in the list")
        good, bad = self.builds[self.good], self.builds[self.bad]
        self.progress(f"confirming that {good.name} and {bad.name} differ")
        verdicts = HeadToHead(good, bad, self.run_start, self.record,
                              min_starts=self.min_starts, max_starts=self.max_starts,
                              confidence=self.confidence, progress=self.progress).run()
        chosen = self._chosen(verdicts)
        if chosen is None:
            asked = f" on {self.metric}" if self.metric else ""
            return Outcome(False, confirmation=verdicts, reason=(
                f"{good.name} and {bad.name} do not differ{asked} (no gated regression "
                "between them): there is nothing to bisect"))
        test, metric = chosen
        self.progress(f"{bad.name} regressed on {test}: {metric}; bisecting "
                      f"{self.bad - self.good - 1} build(s) between them")
        outcome = Outcome(True, test, metric, confirmation=verdicts)
        lo, hi = self.good, self.bad
        while hi - lo > 1:
            mid = (lo + hi) // 2
            step = self._classify(mid, test, metric)
            outcome.steps.append(step)
            self.progress(step.line())
            if step.kind == "good":
                lo = mid
            elif step.kind == "bad":
                hi = mid
            else:
                outcome.ambiguous = step
                outcome.reason = (f"{step.build} falls between the good and the bad build "
                                  f"after {step.starts} starts: the range may hold more than "
                                  "one change; bisect each part on its own")
                return outcome
        outcome.first_bad, outcome.last_good = self.builds[hi], self.builds[lo]
        outcome.reason = f"first bad build: {self.builds[hi].name} (after {self.builds[lo].name})"
        return outcome

    def _chosen(self, verdicts: dict[str, list[Verdict]]) -> tuple[str, str] | None:
        """The (test, metric) to bisect on: the asked metric's, else the largest regression."""
        failing = [(test, v) for test, vs in verdicts.items() for v in vs if v.fails
                   and (self.metric is None or v.metric == self.metric)]
        if not failing:
            return None
        test, v = max(failing, key=lambda tv: abs(tv[1].change_pct))
        return test, v.metric

    def _classify(self, index: int, test: str, metric: str) -> Step:
        build = self.builds[index]
        good, bad = self.builds[self.good], self.builds[self.bad]
        floors, noise = self.record.thresholds(test)
        threshold = floors.get(metric, DEFAULT_THRESHOLD_PCT)
        while True:
            runs = self.record.runs(build, test, metric)
            if len(runs) >= self.min_starts:
                step = self._step(index, build, runs, self.record.runs(good, test, metric),
                                  self.record.runs(bad, test, metric), metric, threshold,
                                  noise.get(metric, 0.0))
                if step.kind != "ambiguous" or len(runs) >= self.max_starts:
                    return step
            start = self.run_start(build, len(self.record.of(build)) + 1)
            self.record.add(start)

    def _step(self, index: int, build: Build, runs: list[list[float]],
              good_runs: list[list[float]], bad_runs: list[list[float]], metric: str,
              threshold: float, noise: float) -> Step:
        def vs(reference: list[list[float]]) -> Verdict:
            return judge_starts(metric, reference, runs, threshold_pct=threshold,
                                noise_floor_pct=noise, confidence=self.confidence)

        against_good, against_bad = vs(good_runs), vs(bad_runs)
        if against_bad.kind is Kind.IMPROVEMENT and against_good.kind is not Kind.REGRESSION:
            kind = "good"
        elif against_good.kind is Kind.REGRESSION and against_bad.kind is not Kind.IMPROVEMENT:
            kind = "bad"
        else:
            kind = "ambiguous"
        g = _log_mean(against_good.baseline_starts)
        b = _log_mean(against_bad.baseline_starts)
        m = _log_mean(against_good.candidate_starts)
        position = (m - g) / (b - g) if b != g else math.nan
        return Step(build.name, index, kind, len(runs), math.exp(m), position,
                    against_good, against_bad)


def _log_mean(values: tuple[float, ...]) -> float:
    return sum(math.log(v) for v in values) / len(values)
