"""Regression or not: one rule for every verdict (the gate, compare, A/B runs, bisect).

The unit of repetition is the server start. One start of the same build serves faster or
slower than the next for its whole life, so runs within a start are not independent
evidence about the build. Per metric, with its direction, on a log scale:

- each start's value is the median of its runs;
- the change is the difference of the two sides' mean start values (reported as a ratio);
- its noise is the test's own start-to-start spread (judge/noise.py: the starts compared,
  then the test's stored record, then the host's record as a prior, each refining the one
  above only while they agree), never below the runs' spread within starts divided by the
  runs per start (a start is never less noisy than its own runs make it);
- a one-sided p-value for "worse" and one for "better" (Student t on the noise's degrees of
  freedom), and an interval at the level the metric is held to.

The level ``alpha`` is the test's share of the session's false-alarm budget
(judge/multiplicity.py); within a test the gated metrics are one family under Holm's
step-down, the three throughputs counting once. With the practical threshold T (the floor:
a change smaller than T does not count):

- REGRESSION: "worse" is significant at the metric's level and the change is worse than T;
  IMPROVEMENT symmetric;
- NO CHANGE: the whole interval lies within plus or minus T;
- otherwise INCONCLUSIVE with ``needs_more``: more starts would decide it (the A/B and
  bisect commands add them); and INCONCLUSIVE for invalid values or too few starts.

Every verdict also states its resolving power (judge/power.py): the smallest change it
would call at 95% power with the starts it has, whether that reaches the change the test
must resolve (twice its floor), and how many starts that change needs.
``benchmarks/ab_sim.py`` runs the rule as ``ab`` and the gate run it, at measured noise.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from typing import Any

from pytest_mi300x.judge import multiplicity, power
from pytest_mi300x.judge.comparison import (
    DEFAULT_THRESHOLD_PCT,
    Comparison,
    Starts,
    as_float,
    compare,
)
from pytest_mi300x.judge.model import Kind, Verdict, level_pct, pct_text
from pytest_mi300x.judge.noise import SumSq
from pytest_mi300x.results.metrics import (
    GATED_METRICS,
    METRIC_DIRECTIONS,
    THROUGHPUTS,
    WARN_METRICS,
)

__all__ = ["DEFAULT_THRESHOLD_PCT", "GATED_METRICS", "WARN_METRICS", "Kind", "Verdict",
           "inconclusive_all", "judge_all", "judge_starts"]


def decide(c: Comparison, alpha: float, alpha_better: float | None = None, *,
           alpha_same: float = multiplicity.ALPHA_SAME, detail: str = "") -> Verdict:
    """The verdict of a comparison with its regression call held to ``alpha`` (one-sided),
    its improvement call to ``alpha_better`` (default the same), and its "no change" call
    (both one-sided tests of a change past the floor, TOST) to ``alpha_same``: a wrong "no
    change" raises no alarm, so it is not held to the alarms' budget."""
    alpha_better = alpha if alpha_better is None else alpha_better
    alpha_same = max(alpha_same, alpha)
    confidence = 1 - 2 * alpha
    base = Verdict(metric=c.metric, kind=Kind.INCONCLUSIVE, gated=c.gated,
                   direction=c.direction, baseline=c.flat_b, candidate=c.flat_c,
                   baseline_median=_median(c.flat_b), candidate_median=_median(c.flat_c),
                   change_pct=math.nan, threshold_pct=c.threshold_pct, reason="",
                   confidence=confidence, alpha=alpha, baseline_starts=c.starts_b,
                   candidate_starts=c.starts_c, target_pct=power.TARGET_FACTOR * c.threshold_pct)
    if c.problem:
        return replace(base, reason=c.note + c.problem)
    if c.noise is None:
        return replace(base, needs_more=True, resolves_pct=math.inf,
                       reason=c.note + "one run on each side and no recorded start-to-start "
                                       "noise for this test or host: add runs or starts")
    se, df = c.se, c.noise.df
    half = power.quantile(1 - alpha, df) * se
    change = math.expm1(c.diff) * 100
    interval = (math.expm1(c.diff - half) * 100, math.expm1(c.diff + half) * 100)
    sign = 1.0 if c.direction == "lower" else -1.0
    worse = sign * change
    tau = c.threshold_pct
    p_worse, p_better = c.p("worse"), c.p("better")
    resolves = power.resolves(c.noise.sd, df, len(c.starts_b), len(c.starts_c), alpha, tau,
                              c.direction)
    needed = power.starts_needed(c.noise.sd, df, alpha, tau, base.target_pct, c.direction,
                                 paired=c.paired)
    numbers = replace(base, change_pct=change, interval_pct=interval, noise_pct=c.noise.pct,
                      noise_df=df, noise_source=c.noise.source, p_worse=p_worse,
                      resolves_pct=resolves, starts_needed=needed)
    starts = f"{len(c.starts_b)} vs {len(c.starts_c)} server start(s)"
    span = f"{pct_text(interval[0])} to {pct_text(interval[1])}"
    held = f"{detail}; " if detail else ""
    if p_worse <= alpha and worse > tau:
        return replace(numbers, kind=Kind.REGRESSION, reason=(
            f"{c.note}worse by {abs(change):.1f}%: p={p_worse:.2g} for no worse, within its "
            f"level {alpha:.2g} ({held}{starts}), the {level_pct(confidence)} interval "
            f"{span}, past the {tau:g}% threshold; noise {c.noise.describe()}"))
    if p_better <= alpha_better and worse < -tau:
        return replace(numbers, kind=Kind.IMPROVEMENT, reason=(
            f"{c.note}better by {abs(change):.1f}%: p={p_better:.2g} for no better, within its "
            f"level {alpha_better:.2g} ({held}{starts}), the {level_pct(confidence)} interval "
            f"{span}, past the {tau:g}% threshold; noise {c.noise.describe()}"))
    same = power.quantile(1 - alpha_same, df) * se
    near = sorted(sign * math.expm1(c.diff + k * same) * 100 for k in (-1, 1))
    if near[0] > -tau and near[1] < tau:
        level = level_pct(1 - 2 * alpha_same)
        return replace(numbers, kind=Kind.NO_CHANGE, reason=(
            f"{c.note}any change is within {tau:g}%: the {level} interval is "
            f"{pct_text(math.expm1(c.diff - same) * 100)} to "
            f"{pct_text(math.expm1(c.diff + same) * 100)} ({starts}; noise {c.noise.describe()})"))
    return replace(numbers, needs_more=True, reason=(
        f"{c.note}the {level_pct(confidence)} interval ({span}) reaches past the {tau:g}% "
        f"threshold without deciding ({starts}; noise {c.noise.describe()}): add starts"))


def judge_starts(metric: str, baseline: Starts, candidate: Starts, *,
                 threshold_pct: float = DEFAULT_THRESHOLD_PCT, noise_floor_pct: float = 0.0,
                 record: SumSq | None = None, alpha: float | None = None,
                 confidence: float | None = None, inflation: float = 1.0,
                 pool_record: bool = False, direction: str | None = None,
                 gated: bool | None = None, note: str = "") -> Verdict:
    """Compare a candidate's server starts (each a list of run values) with a baseline's,
    one metric on its own (no family): at the one-sided level ``alpha`` (default a test's
    budget, judge/multiplicity.py), or at a two-sided ``confidence``.

    ``noise_floor_pct`` is the host's recorded noise (a prior), ``record`` the test's stored
    evidence; ``gated`` overrides whether the metric can fail a test; ``note`` prefixes the
    reason.
    """
    if alpha is None:
        alpha = (1 - confidence) / 2 if confidence is not None else multiplicity.ALPHA_TEST
    return decide(compare(metric, baseline, candidate, threshold_pct=threshold_pct,
                          noise_floor_pct=noise_floor_pct, record=record, inflation=inflation,
                          pool_record=pool_record, direction=direction, gated=gated,
                          note=note), alpha)


def _median(values: Sequence[float]) -> float:
    finite = [v for v in values if math.isfinite(v)]
    return float(statistics.median(finite)) if finite else math.nan


def _grouped(reps: Sequence[Mapping[str, float]], starts: Sequence[int],
             metric: str) -> list[list[float]]:
    groups: dict[int, list[float]] = {}
    for rep, start in zip(reps, starts, strict=True):
        if metric in rep:
            groups.setdefault(start, []).append(as_float(rep[metric]))
    return list(groups.values())


def _metrics_in(reps: Sequence[Mapping[str, float]]) -> list[str]:
    seen: dict[str, None] = {}
    for rep in reps:
        seen.update(dict.fromkeys(rep))
    return list(seen)


def judge_all(baseline_reps: Sequence[Mapping[str, float]],
              candidate_reps: Sequence[Mapping[str, float]], *,
              baseline_starts: Sequence[int] = (), candidate_starts: Sequence[int] = (),
              floors: Mapping[str, float] | None = None,
              noise: Mapping[str, float] | None = None,
              records: Mapping[str, SumSq] | None = None,
              alpha: float = multiplicity.ALPHA_TEST, inflation: float = 1.0,
              pool_record: bool = False, alpha_same: float = multiplicity.ALPHA_SAME,
              paired: bool = False, detail: str = "") -> list[Verdict]:
    """Verdicts for every metric with a direction present on both sides: one test's family.

    ``*_starts`` name the server start of each repetition (all one start when empty);
    ``floors`` are the per-metric thresholds, ``noise`` the host's recorded start-to-start
    noise per metric (percent, a prior), ``records`` the test's stored noise evidence.
    ``alpha`` is the test's one-sided budget: its gated metrics share it by Holm's
    step-down, the throughputs counting once; a metric that only warns is held to
    ``alpha`` on its own. ``detail`` says where ``alpha`` came from (in the reasons).
    ``pool_record``: the baseline's starts and the record are one body of evidence (the
    gate), rather than today's starts refined by an older record (an A/B). ``paired``: the
    i-th start of each side ran next to each other (an A/B), and the noise is the pairs'.
    """
    floors, noise, records = floors or {}, noise or {}, records or {}
    b_starts = list(baseline_starts) or [0] * len(baseline_reps)
    c_starts = list(candidate_starts) or [0] * len(candidate_reps)
    if len(b_starts) != len(baseline_reps) or len(c_starts) != len(candidate_reps):
        raise ValueError("judge_all: each repetition needs its server start")
    in_candidate = set(_metrics_in(candidate_reps))
    paced = all(r.get("arrival_bound") == 1.0 for r in (*baseline_reps, *candidate_reps))
    comparisons = [
        compare(metric, _grouped(baseline_reps, b_starts, metric),
                _grouped(candidate_reps, c_starts, metric),
                threshold_pct=floors.get(metric, DEFAULT_THRESHOLD_PCT),
                noise_floor_pct=noise.get(metric, 0.0), record=records.get(metric),
                inflation=inflation, pool_record=pool_record, paired=paired,
                **(ARRIVAL_BOUND if paced and metric in THROUGHPUTS else {}))
        for metric in _metrics_in(baseline_reps)
        if metric in in_candidate and metric in METRIC_DIRECTIONS
    ]
    levels = {side: family_levels(comparisons, alpha, side) for side in ("worse", "better")}
    families = len(levels["worse"])
    out = []
    for c in comparisons:
        family = multiplicity.family_of(c.metric)
        if c.gated and family in levels["worse"]:
            held = (f"{detail + ', ' if detail else ''}Holm over {families} gated "
                    f"famil{'y' if families == 1 else 'ies'} at {alpha:.2g}")
            out.append(decide(c, levels["worse"][family], levels["better"][family],
                              alpha_same=alpha_same, detail=held))
        else:
            out.append(decide(c, alpha, alpha_same=alpha_same, detail=detail))
    return out


def family_levels(comparisons: Iterable[Comparison], alpha: float, side: str
                  ) -> dict[str, float]:
    """The level each gated family is held to on one side (Holm's step-down over the
    families, each family's p-value its smallest member's)."""
    pvalues: dict[str, float] = {}
    for c in comparisons:
        if c.gated:
            family = multiplicity.family_of(c.metric)
            pvalues[family] = min(pvalues.get(family, 1.0), c.p(side))
    return multiplicity.holm(pvalues, alpha)


ARRIVAL_BOUND: dict[str, Any] = {
    "gated": False,
    "note": "arrival-bound (the engine kept the offered rate on both sides, so throughput "
            "measures the schedule): reported, not gated; ",
}


def inconclusive_all(metrics: Iterable[str], reason: str, *,
                     baseline_reps: Sequence[Mapping[str, float]] = (),
                     candidate_reps: Sequence[Mapping[str, float]] = ()) -> list[Verdict]:
    """Every metric with a direction INCONCLUSIVE for one reason (e.g. a fingerprint
    mismatch), keeping any runs given for the report."""
    verdicts = []
    for metric in metrics:
        direction = METRIC_DIRECTIONS.get(metric)
        if direction is None:
            continue
        base = tuple(as_float(r[metric]) for r in baseline_reps if metric in r)
        cand = tuple(as_float(r[metric]) for r in candidate_reps if metric in r)
        verdicts.append(Verdict(metric=metric, kind=Kind.INCONCLUSIVE,
                                gated=metric in GATED_METRICS, direction=direction,
                                baseline=base, candidate=cand, baseline_median=_median(base),
                                candidate_median=_median(cand), change_pct=math.nan,
                                threshold_pct=math.nan, reason=reason))
    return verdicts
