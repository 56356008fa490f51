"""The numbers of one metric's comparison before any decision: each side's start values,
the change of their means, its start-to-start noise (judge/noise.py) and its one-sided
p-values. judge/verdict.py decides on them.

An A/B's interleaved starts (``paired``) are judged with a model of the machine's drift: a
regression of the start values on the side and a quadratic in the starts' order. A shared
machine drifts over an A/B's hour (measured: the k-th A and B starts, which ran next to each
other, differed 0.4-0.6 times as much as the sides' spread in 6 of 14 runs, as much in 5,
more in 3), and the drift it slows down and speeds up with is absorbed at the cost of two
degrees of freedom; judging the differences of pairs instead halves the degrees of freedom
whether or not the machine drifted (6+6 starts: 5 instead of 10), which is the power
the issue found thrown away. One fixed model, never chosen by its result: a choice by the
data (pairs where they spread less) raised the false alarms 1.5-1.9 times at 3-10 starts a
side. ABBA order keeps the side nearly orthogonal to the drift terms (the change's
variance grows 0-5%)."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from pytest_mi300x.judge import power
from pytest_mi300x.judge.noise import (
    Spread,
    SumSq,
    estimate,
    median_variance,
    start_logs,
    sumsq_of,
)
from pytest_mi300x.judge.power import drift_terms
from pytest_mi300x.judge.records import OUTLIER_K, robust_scale, screen
from pytest_mi300x.results.metrics import GATED_METRICS, METRIC_DIRECTIONS

DEFAULT_THRESHOLD_PCT: float = 5.0
"""The smallest change that counts where neither the host nor the test sets a floor."""

Starts = Sequence[Sequence[float]]
"""Per server start, the values of its runs."""


def abba_order(n_b: int, n_c: int) -> tuple[list[float], list[float]]:
    """The starts' positions in time when an A/B ran them A B B A ... (the k-th of each
    side in that order): what ``order`` defaults to."""
    order: tuple[list[float], list[float]] = ([], [])
    k = 0
    while len(order[0]) < n_b or len(order[1]) < n_c:
        side = (0, 1, 1, 0)[k % 4]
        if len(order[side]) >= (n_b, n_c)[side]:
            side = 1 - side
        order[side].append(float(len(order[0]) + len(order[1])))
        k += 1
    return order


@dataclass(frozen=True)
class DriftFit:
    """The change of an A/B adjusted for the machine's drift, and what is left as noise."""

    diff: float
    """The side's coefficient: candidate minus baseline, log scale."""
    residual: SumSq
    """The starts' squared deviations from the fitted drift, and their degrees of freedom."""
    variance_factor: float
    """The change's variance over that of a difference of two means with these starts: what
    fitting the drift costs (1.0-1.05 in ABBA order)."""
    terms: int


def fit_drift(logs_b: Sequence[float], logs_c: Sequence[float],
              order_b: Sequence[float], order_c: Sequence[float]) -> DriftFit | None:
    """Least squares of the start values (log) on a constant, the side and a polynomial in
    the starts' order; None when the starts leave no degree of freedom."""
    n_b, n_c = len(logs_b), len(logs_c)
    if n_b < 1 or n_c < 1 or len(order_b) != n_b or len(order_c) != n_c:
        return None
    y = np.array([*logs_b, *logs_c], dtype=float)
    when = np.array([*order_b, *order_c], dtype=float)
    scale = float(when.std()) or 1.0
    when = (when - when.mean()) / scale
    terms = drift_terms(len(y))
    columns = [np.ones(len(y)), np.array([0.0] * n_b + [1.0] * n_c)]
    columns += [when ** (d + 1) for d in range(terms)]
    x = np.column_stack(columns)
    df = len(y) - x.shape[1]
    if df < 1 or np.linalg.matrix_rank(x) < x.shape[1]:
        return None
    inverse = np.linalg.inv(x.T @ x)
    beta = inverse @ x.T @ y
    resid = y - x @ beta
    return DriftFit(float(beta[1]), SumSq(float(resid @ resid), df),
                    float(inverse[1, 1]) / (1 / n_b + 1 / n_c), terms)


def _fmt(value: float) -> str:
    return f"{value:.6g}"


def as_float(value: object) -> float:
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return math.nan


def _within(logs: list[list[float]], runs_per_start: float | None = None) -> Spread | None:
    """What the runs within starts say of a start value's spread: a start's value is the
    median of its runs, so their pooled variance times the median's share of it (for
    ``runs_per_start`` runs, default these starts' own)."""
    df = sum(len(s) - 1 for s in logs)
    if df < 1:
        return None
    ss = sum((v - statistics.fmean(s)) ** 2 for s in logs for v in s)
    runs = runs_per_start or statistics.fmean(len(s) for s in logs)
    return Spread(math.sqrt(ss / df * median_variance(runs)), df, "the runs within starts")


def _raised(noise: Spread | None, floor_sd: float, why: str) -> Spread | None:
    """``noise`` never below ``floor_sd``: a floor on the spread, not a measure of it, so it
    keeps the degrees of freedom of the start-to-start estimate."""
    if noise is None or floor_sd <= noise.sd:
        return noise
    return Spread(floor_sd, noise.df, f"{noise.source}; raised to {why}")


def _widened(noise: Spread | None, inflation: float) -> Spread | None:
    if noise is None or inflation <= 1:
        return noise
    return Spread(noise.sd * inflation, noise.df,
                  f"{noise.source}; x{inflation:.2f} for today's steadiness")


@dataclass(frozen=True)
class Comparison:
    """One metric's numbers before any decision: the change, its noise, its p-values."""

    metric: str
    direction: str
    gated: bool
    threshold_pct: float
    flat_b: tuple[float, ...]
    flat_c: tuple[float, ...]
    starts_b: tuple[float, ...] = ()
    starts_c: tuple[float, ...] = ()
    diff: float = math.nan
    """Mean log start value, candidate minus baseline (for an A/B's interleaved starts, the
    same adjusted for the machine's drift)."""
    noise: Spread | None = None
    problem: str = ""
    note: str = ""
    paired: bool = False
    """An A/B's interleaved starts, judged with the drift model (:func:`fit_drift`)."""
    reference: Spread | None = None
    """The noise before today's steadiness widened it: what the reference's own evidence
    says (the resolving power the test had before tonight)."""
    same_start: bool = False
    """Both sides ran on one server start: its offset cancels and the runs are the unit."""
    grid_pct: float = math.nan
    """A figure found on a grid (a capacity sweep's rates): the step, as a percent of the
    baseline's level; a change smaller than a step is not resolvable."""

    @property
    def se(self) -> float:
        return self.noise.sd * math.sqrt(1 / len(self.starts_b) + 1 / len(self.starts_c)) \
            if self.noise else math.nan

    @property
    def worse(self) -> float:
        """The change oriented so that positive is worse (log scale)."""
        return self.diff if self.direction == "lower" else -self.diff

    def p(self, side: str, past_pct: float = 0.0) -> float:
        """One-sided p-value against the change being no more ``worse`` (or ``better``) than
        ``past_pct`` percent: no change by default, the floor for the floor's test."""
        if self.noise is None or self.problem:
            return 1.0
        # ``better`` by x% is ``worse`` by x% in the other direction.
        away = power.worse_log(past_pct, self.direction if side == "worse"
                               else "lower" if self.direction == "higher" else "higher")
        if math.isinf(away):
            return 1.0
        distance = (self.worse if side == "worse" else -self.worse) - away
        if self.se == 0:
            return 0.0 if distance > 0 else 1.0
        return power.upper_tail(distance / self.se, self.noise.df)


def compare(metric: str, baseline: Starts, candidate: Starts, *,
            threshold_pct: float = DEFAULT_THRESHOLD_PCT, noise_floor_pct: float = 0.0,
            record: SumSq | None = None, inflation: float = 1.0, pool_record: bool = False,
            paired: bool = False, direction: str | None = None, gated: bool | None = None,
            note: str = "", order: tuple[Sequence[float], Sequence[float]] | None = None,
            same_start: bool = False, grid_pct: float = math.nan) -> Comparison:
    """The numbers of one metric's comparison (see :func:`judge_starts`).

    ``paired``: the starts are an A/B's, interleaved in time, and ``order`` gives each
    baseline and candidate start's position in time (default: the A B B A order); the
    change and its noise come from the drift model (:func:`fit_drift`), so a machine that
    drifts over the A/B moves neither the change nor its noise, and one that does not costs
    two degrees of freedom. ``same_start``: both sides ran on one server start (a claim on
    one server), so the runs are the unit. ``grid_pct``: the figure's grid step (percent).
    The baseline is the reference: only its runs floor the noise (a candidate's erratic
    runs are a finding of their own, judge/spreads.py, and never lower the power to see its
    change); in the gate (``pool_record``) a baseline start far off the others
    (judge/records.py) is set aside as slowed."""
    direction = direction if direction is not None else METRIC_DIRECTIONS.get(metric)
    if direction not in ("higher", "lower"):
        raise ValueError(f"{metric}: direction must be 'higher' or 'lower', got {direction!r}")
    base = [[as_float(v) for v in s] for s in baseline if len(s)]
    cand = [[as_float(v) for v in s] for s in candidate if len(s)]
    plain = Comparison(metric, direction, metric in GATED_METRICS if gated is None else gated,
                       threshold_pct, tuple(v for s in base for v in s),
                       tuple(v for s in cand for v in s), note=note, same_start=same_start,
                       grid_pct=grid_pct)
    if not base or not cand:
        side = "baseline" if not base else "candidate"
        return replace(plain, problem=f"no runs on the {side} side")
    bad = [v for v in (*plain.flat_b, *plain.flat_c) if not math.isfinite(v) or v <= 0]
    if bad:
        return replace(plain, problem=f"values {', '.join(_fmt(v) for v in bad[:3])} are not "
                                      "positive finite numbers: not a valid measurement")
    logs_b = [[math.log(v) for v in s] for s in base]
    logs_c = [[math.log(v) for v in s] for s in cand]
    centers_b, centers_c = start_logs(base), start_logs(cand)
    if pool_record and not paired and len(centers_b) >= 3:
        centers_b, note = _set_aside(centers_b, record, note)
        plain = replace(plain, note=note)
    fresh, source = sumsq_of([centers_b, centers_c]), f"the {len(base)}+{len(cand)} starts compared"
    fit = None
    if paired:
        kept_b = [i for i, runs in enumerate(baseline) if len(runs)]
        kept_c = [i for i, runs in enumerate(candidate) if len(runs)]
        when_b, when_c = order if order is not None else abba_order(len(baseline),
                                                                    len(candidate))
        sides, note = _set_aside_sides(
            [(centers_b, [when_b[i] for i in kept_b]), (centers_c, [when_c[i] for i in kept_c])],
            record, note)
        (centers_b, order_b), (centers_c, order_c) = sides
        plain = replace(plain, note=note)
        fit = fit_drift(centers_b, centers_c, order_b, order_c)
    if fit is not None:
        fresh = fit.residual
        drift = ("the machine's drift fitted (side and a "
                 f"{('line', 'quadratic')[fit.terms - 1]} in their order)" if fit.terms
                 else "each side's mean (too few to fit the machine's drift)")
        source = f"the {len(base)}+{len(cand)} starts around {drift}"
    reference = estimate(fresh, record, noise_floor_pct,
                         pool_record=pool_record and fit is None, fresh_source=source)
    # The reference's runs say how spread a run is; a start of fewer runs (either side's) is
    # the noisier median, so the floor counts the fewer.
    fewest = min(statistics.fmean(len(x) for x in logs_b),
                 statistics.fmean(len(x) for x in logs_c))
    within = _within([*logs_b, *logs_c] if same_start else logs_b, fewest)
    if same_start and within is not None and reference is None:
        reference = within  # one start: its offset cancels, the runs are the unit
    elif within is not None:
        reference = _raised(reference, within.sd, "the runs' spread within the baseline's "
                                                  "starts")
    if math.isfinite(grid_pct):
        # Rounding to a grid adds a uniform error of a step's width (Sheppard).
        reference = _raised(reference, math.log1p(grid_pct / 100) / math.sqrt(12),
                            f"its grid step of {grid_pct:.1f}%")
    diff = statistics.fmean(centers_c) - statistics.fmean(centers_b)
    if fit is not None:
        diff = fit.diff
        if reference is not None and fit.variance_factor != 1.0:
            # The change's standard error is the spread times sqrt(1/n_b + 1/n_c) times the
            # fit's factor: folded into the spread, so every reader of the spread agrees.
            reference = Spread(reference.sd * math.sqrt(fit.variance_factor), reference.df,
                               f"{reference.source}; x{math.sqrt(fit.variance_factor):.3f} "
                               "for the drift fitted")
    return replace(plain, starts_b=tuple(math.exp(c) for c in centers_b),
                   starts_c=tuple(math.exp(c) for c in centers_c), diff=diff,
                   noise=_widened(reference, inflation), reference=reference,
                   paired=fit is not None)


def _set_aside_sides(sides: list[tuple[list[float], list[float]]], record: SumSq | None,
                     note: str) -> tuple[list[tuple[list[float], list[float]]], str]:
    """An A/B's starts (log values with their positions in time) without a start far off
    the others of its side (a start slowed for its whole life: one in ten on shared
    machines, which a t statistic on 3 to 6 starts a side takes for a change of build, 2% of
    unchanged tests instead of 1% in simulation). Judged on the record's spread when it has
    enough evidence, else on the sides' own (robust); a side keeps at least 2 starts."""
    stored = record.spread("record") if record is not None and record.df >= 4 else None
    scale = stored.sd if stored is not None else robust_scale([v for v, _ in sides])
    if not scale or all(len(v) < 3 for v, _ in sides):
        return sides, note
    out, offs = [], []
    for values, when in sides:
        if len(values) < 3:
            out.append((values, when))
            continue
        center = statistics.median(values)
        keep = [abs(v - center) <= OUTLIER_K * scale for v in values]
        if sum(keep) < 2:
            out.append((values, when))
            continue
        out.append(([v for v, k in zip(values, keep, strict=True) if k],
                    [t for t, k in zip(when, keep, strict=True) if k]))
        offs += [f"{math.expm1(v - center) * 100:+.0f}%"
                 for v, k in zip(values, keep, strict=True) if not k]
    if not offs:
        return sides, note
    return out, (f"{note}{len(offs)} start(s) set aside as slowed ({', '.join(offs)} off their "
                 f"side's median, past {OUTLIER_K:g} robust spreads); ")


def _set_aside(centers: list[float], record: SumSq | None, note: str
               ) -> tuple[list[float], str]:
    """The baseline's start values without one far off the others (a slowed start), judged
    on the record's spread when it has enough evidence, else on the starts' own."""
    stored = record.spread("record") if record is not None and record.df >= 4 else None
    scale = stored.sd if stored is not None else robust_scale([centers])
    kept, aside = screen([centers], scale)
    if not aside or len(kept[0]) < 2:
        return centers, note
    offs = ", ".join(f"{math.expm1(r) * 100:+.0f}%" for r in aside)
    return kept[0], (f"{note}{len(aside)} baseline start(s) set aside as slowed ({offs} off "
                     "the others' median, past 4 robust spreads); ")
