"""A build noisier than its reference is a finding, not a noisy machine.

Machine noise is measured with the reference build; the build under judgement brings its
own spread, and a build whose starts or runs spread far more than the reference's is
slower some of the time, which users meet as a slower build. So beside its figures each
comparison judges the candidate's spread against the reference's (the baseline side),
as its own gated family, ``steadiness``:

- start to start, where the candidate has two starts or more (an ``ab``, a bisect step),
  the spread of its start values around their mean against the reference's (with the
  test's record, in the gate);
- run to run, where both sides ran two runs or more in a start, the pooled spread of runs
  within starts;

each per gated family (its first metric), by a one-sided F test (the candidate's starts
without its one start furthest from their median, where it has four or more: shared
machines slow one start in ten for its whole life whichever build runs, and an F test
takes that one start for a noisier build; a build that is erratic is so in more than one
start) against a spread
``RATIO_FLOOR`` times the reference's: "noisier" means significantly more than twice as
spread, not merely more. The family's p-value is the smallest of these tests times their
number (Bonferroni); Holm holds it to its share of the test's level like any family. Its
verdict is a regression (the build is noisier) or "no change" (not shown noisier); on one
start of the candidate, as every regression on one start, it is undecided.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

from pytest_mi300x.judge.model import Kind, Verdict
from pytest_mi300x.judge.noise import SumSq, start_logs, sumsq_of
from pytest_mi300x.results.metrics import STEADINESS

RATIO_FLOOR = 2.0
"""A build counts as noisier when its spread is significantly more than this many times the
reference's."""


@dataclass(frozen=True)
class SpreadTest:
    """One spread of the candidate against the reference's."""

    what: str  # "starts" or "runs"
    metric: str
    candidate: SumSq
    reference: SumSq

    @property
    def ratio(self) -> float:
        c, r = self.candidate.spread("c"), self.reference.spread("r")
        if c is None or r is None:
            return math.nan
        return c.sd / r.sd if r.sd > 0 else math.inf

    @property
    def p(self) -> float:
        """One-sided: the candidate's variance no more than RATIO_FLOOR**2 the reference's."""
        from scipy.stats import f

        ratio = self.ratio
        if math.isnan(ratio):
            return 1.0
        if math.isinf(ratio):
            return 0.0
        return float(f.sf(ratio ** 2 / RATIO_FLOOR ** 2, self.candidate.df,
                          self.reference.df))

    def line(self) -> str:
        c, r = self.candidate.spread("c"), self.reference.spread("r")
        assert c is not None and r is not None
        return (f"{self.metric} {self.what[:-1]}-to-{self.what[:-1]} spread {c.pct:.1f}% (df "
                f"{c.df:.3g}) against the reference's {r.pct:.1f}% (df {r.df:.3g}): "
                f"x{self.ratio:.2f}, p={self.p:.2g} for at most x{RATIO_FLOOR:g}")


@dataclass(frozen=True)
class SpreadComparison:
    """The steadiness family's tests and the candidate's start count."""

    tests: list[SpreadTest] = field(default_factory=list)
    candidate_starts: int = 0
    metric: str = STEADINESS
    gated: bool = True
    direction: str = "lower"

    def p(self, side: str, past_pct: float = 0.0) -> float:
        """The family's p-value (Bonferroni over its tests); only "noisier" is tested."""
        if side != "worse" or not self.tests:
            return 1.0
        return min(1.0, min(t.p for t in self.tests) * len(self.tests))

    @property
    def worst(self) -> SpreadTest:
        return min(self.tests, key=lambda t: t.p)


def _without_the_furthest(values: list[float]) -> list[float]:
    """Four or more start values without the one furthest from their median."""
    if len(values) < 4:
        return values
    center = statistics.median(values)
    far = max(range(len(values)), key=lambda i: abs(values[i] - center))
    return [v for i, v in enumerate(values) if i != far]


def _within(starts: Sequence[Sequence[float]]) -> SumSq:
    logs = [[math.log(v) for v in s if v > 0] for s in starts]
    return SumSq(sum((v - statistics.fmean(s)) ** 2 for s in logs if len(s) > 1 for v in s),
                 sum(len(s) - 1 for s in logs if len(s) > 1))


def compare_spreads(families: Mapping[str, tuple[Sequence[Sequence[float]],
                                                 Sequence[Sequence[float]]]],
                    records: Mapping[str, SumSq] | None = None) -> SpreadComparison | None:
    """The steadiness tests of one comparison: per family metric, (reference starts,
    candidate starts), each a list of run values; ``records`` the test's stored
    start-to-start evidence (the gate's reference includes it)."""
    tests = []
    count = 0
    for metric, (ref, cand) in families.items():
        count = max(count, len(cand))
        if len(cand) >= 2:
            ref_starts = sumsq_of([start_logs(ref)]) + (records or {}).get(metric, SumSq())
            mine = sumsq_of([_without_the_furthest(start_logs(cand))])
            if ref_starts.df > 0 and mine.df > 0:
                tests.append(SpreadTest("starts", metric, mine, ref_starts))
        ref_runs, mine_runs = _within(ref), _within(cand)
        if ref_runs.df > 0 and mine_runs.df > 0:
            tests.append(SpreadTest("runs", metric, mine_runs, ref_runs))
    return SpreadComparison(tests, count) if tests else None


def decide_spread(c: SpreadComparison, alpha: float, *, detail: str = "") -> Verdict:
    """Noisier (a regression; undecided on one start of the candidate) or not shown so."""
    worst = c.worst
    p = c.p("worse")
    held = f" ({detail})" if detail else ""
    base = Verdict(metric=STEADINESS, kind=Kind.NO_CHANGE, gated=c.gated, direction="lower",
                   baseline=(), candidate=(), baseline_median=math.nan,
                   candidate_median=math.nan, change_pct=(worst.ratio - 1) * 100,
                   threshold_pct=(RATIO_FLOOR - 1) * 100, reason="", alpha=alpha,
                   p_worse=p, scale="spread", confidence=1 - 2 * alpha)
    lines = "; ".join(t.line() for t in c.tests)
    if p > alpha:
        return replace(base, reason=(
            f"not shown noisier than the reference (p={p:.2g} over {len(c.tests)} spread "
            f"test(s), level {alpha:.2g}{held}): {lines}"))
    why = (f"noisier than the reference: {worst.line()}; p={p:.2g} over {len(c.tests)} "
           f"spread test(s), within its level {alpha:.2g}{held}")
    if c.candidate_starts == 1:
        return replace(base, kind=Kind.INCONCLUSIVE, needs_more=True, suspect=True, reason=(
            f"undecided: {why}; but on one server start: confirm it head to head "
            "(pytest-mi300x ab)"))
    return replace(base, kind=Kind.REGRESSION, reason=why)
