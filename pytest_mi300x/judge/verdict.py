"""Regression or not: one rule for every verdict (the gate, compare, A/B runs, bisect).

The unit of repetition is the server start. One start of the same build serves faster or
slower than the next for its whole life, so runs within a start are not independent
evidence about the build. Per metric, with its direction, on a log scale:

- each start's value is the median of its runs;
- the change is the difference of the two sides' mean start values (reported as a ratio);
- its noise is the test's own start-to-start spread (judge/noise.py: the starts compared,
  then the test's dated, windowed, screened record, judge/records.py, then the host's
  record as a prior), never below what the reference's runs say of a start value (their
  spread times the median's share of it); with no start-to-start evidence at all, runs
  never stand in for starts and nothing is decided;
- a one-sided p-value for "worse" and one for "better" (Student t on the noise's degrees of
  freedom), and an interval at the level the metric is held to.

The level ``alpha`` is the test's share of the night's false-alarm budget
(judge/multiplicity.py); within a test the gated families share it by Holm's step-down
(judge/families.py: the three throughputs count once; accuracy by its questions,
judge/discrete.py; a capacity on its grid; p99 TTFT and ITL where they resolve; the
build's own steadiness, judge/spreads.py). With the floor T:

- REGRESSION: "worse" is significant at the metric's level and its estimate is worse than
  T (the floor's test at ``ALPHA_FLOOR``, 0.5: a threshold on the estimate, so a true
  change just within T is called up to about half the time where the test resolves it
  tightly; docs/verdicts.md gives the rates); on one start of the candidate it is
  undecided instead (``suspect``): a slowed start explains it as well as a slower build.
  IMPROVEMENT symmetric;
- NO CHANGE: the whole interval at the "no change" level lies within plus or minus T;
- otherwise INCONCLUSIVE with ``needs_more``: more starts would decide it (the A/B and
  bisect commands add them); and INCONCLUSIVE for invalid values or too few starts.

Every verdict also states its resolving power (judge/power.py): the smallest change it
would call at 95% power with the starts it has, whether that reaches the change the test
must resolve (twice its floor), what it would resolve at the reference's own noise, and how
many starts that change needs. ``decision`` (judge/families.py) says what a test's
verdicts decide. ``benchmarks/ab_sim.py`` and ``benchmarks/loophole_sim.py`` run the rule
as ``ab`` and the gate run it.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Iterable, Mapping, Sequence
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
from pytest_mi300x.judge.discrete import ItemsComparison, compare_items, decide_items
from pytest_mi300x.judge.families import (
    decision,
    grid_of,
    grouped,
    metrics_in,
    spread_families,
    start_ids,
    tail_gated,
)
from pytest_mi300x.judge.model import Kind, Verdict, level_pct, pct_text
from pytest_mi300x.judge.noise import SumSq
from pytest_mi300x.judge.spreads import SpreadComparison, compare_spreads, decide_spread
from pytest_mi300x.results.metrics import (
    ACCURACY,
    GATED_METRICS,
    GRID_STEPS,
    METRIC_DIRECTIONS,
    TAIL_GATED,
    THROUGHPUTS,
    WARN_METRICS,
)

ALPHA_FLOOR = 0.5
"""The floor's one-sided test against a change of exactly the floor: at 0.5 it asks that the
estimate be past the floor. A stricter level (say 0.05) would call a true change within the
floor rarely, but a test would then need about twice the starts to resolve twice its floor
(10% against 5%: 72 starts a side instead of 32 at 9% spread), which nights and ``ab`` on
shared machines cannot pay; so the floor is a threshold on the estimate, and docs/verdicts.md
says how often a true change just within it is called."""

__all__ = ["DEFAULT_THRESHOLD_PCT", "GATED_METRICS", "WARN_METRICS", "Kind", "Verdict",
           "decision", "inconclusive_all", "judge_all", "judge_starts"]


def decide(c: Comparison, alpha: float, alpha_better: float | None = None, *,
           alpha_same: float = multiplicity.ALPHA_SAME, alpha_floor: float | None = None,
           detail: str = "") -> Verdict:
    """The verdict of a comparison with its regression call held to ``alpha`` (one-sided),
    its improvement call to ``alpha_better`` (default the same), and both its "no change"
    call (both one-sided tests of a change past the floor, TOST) to ``alpha_same``, and its
    floor test to ``alpha_floor`` (default ``ALPHA_FLOOR``: the estimate past the floor):
    a wrong "no change" raises no alarm, so it is not held to the alarms' budget."""
    alpha_better = alpha if alpha_better is None else alpha_better
    alpha_same = max(alpha_same, alpha)
    alpha_floor = ALPHA_FLOOR if alpha_floor is None else max(alpha_floor, alpha)
    confidence = 1 - 2 * alpha
    scale = "grid" if math.isfinite(c.grid_pct) else "starts"
    base = Verdict(metric=c.metric, kind=Kind.INCONCLUSIVE, gated=c.gated,
                   direction=c.direction, baseline=c.flat_b, candidate=c.flat_c,
                   baseline_median=_median(c.flat_b), candidate_median=_median(c.flat_c),
                   change_pct=math.nan, threshold_pct=c.threshold_pct, reason="",
                   confidence=confidence, alpha=alpha, baseline_starts=c.starts_b,
                   candidate_starts=c.starts_c, target_pct=power.TARGET_FACTOR * c.threshold_pct,
                   scale=scale)
    if c.problem:
        return replace(base, reason=c.note + c.problem)
    if c.noise is None:
        return replace(base, needs_more=True, resolves_pct=math.inf,
                       reference_resolves_pct=math.inf, reason=c.note + (
                           "no start-to-start evidence: one server start a side and no record "
                           "of this test's starts (runs inside one start never stand in for "
                           "starts): add starts"))
    se, df = c.se, c.noise.df
    half = power.quantile(1 - alpha, df) * se
    change = math.expm1(c.diff) * 100
    interval = (_pct_of(c.diff - half), _pct_of(c.diff + half))
    sign = 1.0 if c.direction == "lower" else -1.0
    tau = c.threshold_pct
    p_worse, p_better = c.p("worse"), c.p("better")
    past_worse, past_better = c.p("worse", tau), c.p("better", tau)
    n_b, n_c = len(c.starts_b), len(c.starts_c)

    def resolving(sd: float) -> float:
        found = power.resolves(sd, df, n_b, n_c, alpha, tau, c.direction, alpha_floor)
        # A change smaller than a grid step may leave the figure where it was.
        return max(found, tau + c.grid_pct) if scale == "grid" else found

    needed = power.starts_needed(c.noise.sd, df, alpha, tau, base.target_pct, c.direction,
                                 paired=c.paired, alpha_floor=alpha_floor)
    reference = resolving(c.reference.sd) if c.reference is not None else math.inf
    numbers = replace(base, change_pct=change, interval_pct=interval, noise_pct=c.noise.pct,
                      noise_df=df, noise_source=c.noise.source, p_worse=p_worse,
                      resolves_pct=resolving(c.noise.sd), starts_needed=needed,
                      reference_resolves_pct=reference)
    starts = f"{n_b} vs {n_c} server start(s)"
    span = f"{pct_text(interval[0])} to {pct_text(interval[1])}"
    held = f"{detail}; " if detail else ""
    def floor(p: float) -> str:
        if alpha_floor >= ALPHA_FLOOR:
            return f"its estimate past the {tau:g}% floor"
        return f"past the {tau:g}% floor (p={p:.2g} for within it, at most {alpha_floor:.2g})"

    if p_worse <= alpha and past_worse <= alpha_floor:
        why = (f"worse by {abs(change):.1f}%: p={p_worse:.2g} for no worse, within its level "
               f"{alpha:.2g} ({held}{starts}), the {level_pct(confidence)} interval {span}, "
               f"{floor(past_worse)}; noise {c.noise.describe()}")
        if n_c == 1 and not c.same_start:
            return replace(numbers, needs_more=True, suspect=True, reason=(
                f"{c.note}undecided: {why}; but on one server start, which a slowed start "
                "explains as well as a slower build: confirm it head to head (pytest-mi300x "
                "ab) before calling it a regression"))
        return replace(numbers, kind=Kind.REGRESSION, reason=c.note + why)
    if p_better <= alpha_better and past_better <= alpha_floor:
        return replace(numbers, kind=Kind.IMPROVEMENT, reason=(
            f"{c.note}better by {abs(change):.1f}%: p={p_better:.2g} for no better, within its "
            f"level {alpha_better:.2g} ({held}{starts}), the {level_pct(confidence)} interval "
            f"{span}, {floor(past_better)}; noise {c.noise.describe()}"))
    same = power.quantile(1 - alpha_same, df) * se
    near = sorted(sign * _pct_of(c.diff + k * same) for k in (-1, 1))
    if near[0] > -tau and near[1] < tau and (scale != "grid" or c.grid_pct < tau):
        level = level_pct(1 - 2 * alpha_same)
        return replace(numbers, kind=Kind.NO_CHANGE, reason=(
            f"{c.note}any change is within {tau:g}%: the {level} interval is "
            f"{pct_text(_pct_of(c.diff - same))} to {pct_text(_pct_of(c.diff + same))} "
            f"({starts}; noise {c.noise.describe()})"))
    return replace(numbers, needs_more=True, reason=(
        f"{c.note}the {level_pct(confidence)} interval ({span}) reaches past the {tau:g}% "
        f"floor without deciding ({starts}; noise {c.noise.describe()}): add starts"))


def _pct_of(log_change: float) -> float:
    """A log change as a percent (a bound so wide that it overflows reads as infinite)."""
    return math.expm1(log_change) * 100 if log_change < 700 else math.inf


def judge_starts(metric: str, baseline: Starts, candidate: Starts, *,
                 threshold_pct: float = DEFAULT_THRESHOLD_PCT, noise_floor_pct: float = 0.0,
                 record: SumSq | None = None, alpha: float | None = None,
                 confidence: float | None = None, inflation: float = 1.0,
                 pool_record: bool = False, direction: str | None = None,
                 gated: bool | None = None, note: str = "", same_start: bool = False
                 ) -> Verdict:
    """Compare a candidate's server starts (each a list of run values) with a baseline's,
    one metric on its own (no family): at the one-sided level ``alpha`` (default a test's
    budget, judge/multiplicity.py), or at a two-sided ``confidence``.

    ``noise_floor_pct`` is the host's recorded noise (a prior), ``record`` the test's stored
    evidence; ``gated`` overrides whether the metric can fail a test; ``note`` prefixes the
    reason; ``same_start``: both sides ran on one server start (their runs are the unit).
    """
    if alpha is None:
        alpha = (1 - confidence) / 2 if confidence is not None else multiplicity.ALPHA_TEST
    return decide(compare(metric, baseline, candidate, threshold_pct=threshold_pct,
                          noise_floor_pct=noise_floor_pct, record=record, inflation=inflation,
                          pool_record=pool_record, direction=direction, gated=gated,
                          note=note, same_start=same_start), alpha)


def _median(values: Sequence[float]) -> float:
    finite = [v for v in values if math.isfinite(v)]
    return float(statistics.median(finite)) if finite else math.nan


def judge_all(baseline_reps: Sequence[Mapping[str, float]],
              candidate_reps: Sequence[Mapping[str, float]], *,
              baseline_starts: Sequence[int] = (), candidate_starts: Sequence[int] = (),
              floors: Mapping[str, float] | None = None,
              noise: Mapping[str, float] | None = None,
              records: Mapping[str, SumSq] | None = None,
              alpha: float = multiplicity.ALPHA_TEST, inflation: float = 1.0,
              pool_record: bool = False, alpha_same: float = multiplicity.ALPHA_SAME,
              paired: bool = False, detail: str = "", same_start: bool = False,
              look: Callable[[float], float] | None = None) -> list[Verdict]:
    """Verdicts for every metric with a direction present on both sides: one test's family.

    ``*_starts`` name the server start of each repetition (all one start when empty);
    ``floors`` are the per-metric thresholds, ``noise`` the host's recorded start-to-start
    noise per metric (percent, a prior), ``records`` the test's stored noise evidence.
    ``alpha`` is the test's one-sided budget: its gated families share it by Holm's
    step-down (the throughputs count once; accuracy by its questions, judge/discrete.py;
    a capacity by its grid; p99 TTFT and ITL only where their noise resolves; the build's
    own steadiness, judge/spreads.py); a metric that only warns is held to ``alpha`` on
    its own. ``detail`` says where ``alpha`` came from (in the reasons). ``pool_record``:
    the baseline's starts and the record are one body of evidence (the gate), rather than
    today's starts refined by an older record (an A/B). ``paired``: an A/B's interleaved
    starts, whose ids are their positions in time (judged with the machine's drift,
    judge/comparison.py). ``same_start``: both sides ran on one server start. ``look``: a
    share of ``alpha`` to the level it is held to at this look of a sequence
    (judge/multiplicity.py ``look_level``).
    """
    floors, noise, records = floors or {}, noise or {}, records or {}
    b_starts = list(baseline_starts) or [0] * len(baseline_reps)
    c_starts = list(candidate_starts) or [0] * len(candidate_reps)
    if len(b_starts) != len(baseline_reps) or len(c_starts) != len(candidate_reps):
        raise ValueError("judge_all: each repetition needs its server start")
    in_candidate = set(metrics_in(candidate_reps))
    paced = all(r.get("arrival_bound") == 1.0 for r in (*baseline_reps, *candidate_reps))
    comparisons: list[Any] = []
    for metric in metrics_in(baseline_reps):
        if metric not in in_candidate or metric not in METRIC_DIRECTIONS:
            continue
        floor = floors.get(metric, DEFAULT_THRESHOLD_PCT)
        if metric == ACCURACY:
            comparisons.append(compare_items(metric, baseline_reps, candidate_reps,
                                             threshold_pct=floor, gated=True))
            continue
        grid, why = grid_of(metric, baseline_reps, candidate_reps) if metric in GRID_STEPS \
            else (math.nan, "")
        c = compare(metric, grouped(baseline_reps, b_starts, metric),
                    grouped(candidate_reps, c_starts, metric), threshold_pct=floor,
                    noise_floor_pct=noise.get(metric, 0.0), record=records.get(metric),
                    inflation=inflation, pool_record=pool_record, paired=paired,
                    order=(start_ids(baseline_reps, b_starts, metric),
                           start_ids(candidate_reps, c_starts, metric)) if paired else None,
                    same_start=same_start, grid_pct=grid,
                    **(ARRIVAL_BOUND if paced and metric in THROUGHPUTS else {}))
        comparisons.append(replace(c, problem=why) if why else c)
    spread = compare_spreads(spread_families(comparisons, b_starts, c_starts, baseline_reps,
                                              candidate_reps),
                             dict(records) if pool_record else None) \
        if not same_start else None
    if spread is not None:
        comparisons.append(spread)
    count = max(1, len({multiplicity.family_of(c.metric) for c in comparisons if c.gated}))
    comparisons = [tail_gated(c, alpha / count, ALPHA_FLOOR)
                   if c.metric in TAIL_GATED else c for c in comparisons]
    levels = {side: family_levels(comparisons, alpha, side, look)
              for side in ("worse", "better")}
    families = len(levels["worse"])
    out = []
    for c in comparisons:
        family = multiplicity.family_of(c.metric)
        held = detail
        worse = better = look(alpha) if look else alpha
        if c.gated and family in levels["worse"]:
            held = (f"{detail + ', ' if detail else ''}Holm over {families} gated "
                    f"famil{'y' if families == 1 else 'ies'} at {alpha:.2g}")
            worse, better = levels["worse"][family], levels["better"][family]
        if isinstance(c, ItemsComparison):
            out.append(decide_items(c, worse, better, detail=held))
        elif isinstance(c, SpreadComparison):
            out.append(decide_spread(c, worse, detail=held))
        else:
            out.append(decide(c, worse, better, alpha_same=alpha_same, detail=held))
    return out


def family_levels(comparisons: Iterable[Any], alpha: float, side: str,
                  look: Callable[[float], float] | None = None) -> dict[str, float]:
    """The level each gated family is held to on one side (Holm's step-down over the
    families, each family's p-value its smallest member's)."""
    pvalues: dict[str, float] = {}
    for c in comparisons:
        if c.gated:
            family = multiplicity.family_of(c.metric)
            pvalues[family] = min(pvalues.get(family, 1.0), c.p(side))
    return multiplicity.holm(pvalues, alpha, look)


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
