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
from pytest_mi300x.judge.noise import Spread, SumSq, estimate, start_logs, sumsq_of
from pytest_mi300x.judge.power import drift_terms
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


def _within(logs: list[list[float]]) -> Spread | None:
    """What the runs within starts say of a start value's spread: their pooled spread over
    the square root of the runs per start."""
    df = sum(len(s) - 1 for s in logs)
    if df < 1:
        return None
    ss = sum((v - statistics.fmean(s)) ** 2 for s in logs for v in s)
    runs_per_start = statistics.fmean(len(s) for s in logs)
    return Spread(math.sqrt(ss / df / runs_per_start), df, "the runs within starts")


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

    @property
    def se(self) -> float:
        return self.noise.sd * math.sqrt(1 / len(self.starts_b) + 1 / len(self.starts_c)) \
            if self.noise else math.nan

    @property
    def worse(self) -> float:
        """The change oriented so that positive is worse (log scale)."""
        return self.diff if self.direction == "lower" else -self.diff

    def p(self, side: str) -> float:
        """One-sided p-value of the change being ``worse`` (or ``better``)."""
        if self.noise is None or self.problem:
            return 1.0
        if self.se == 0:
            return 0.0 if (self.worse > 0) == (side == "worse") and self.worse != 0 else 1.0
        stat = self.worse / self.se if side == "worse" else -self.worse / self.se
        return power.upper_tail(stat, self.noise.df)


def compare(metric: str, baseline: Starts, candidate: Starts, *,
            threshold_pct: float = DEFAULT_THRESHOLD_PCT, noise_floor_pct: float = 0.0,
            record: SumSq | None = None, inflation: float = 1.0, pool_record: bool = False,
            paired: bool = False, direction: str | None = None, gated: bool | None = None,
            note: str = "", order: tuple[Sequence[float], Sequence[float]] | None = None
            ) -> Comparison:
    """The numbers of one metric's comparison (see :func:`judge_starts`).

    ``paired``: the starts are an A/B's, interleaved in time, and ``order`` gives each
    baseline and candidate start's position in time (default: the A B B A order); the
    change and its noise come from the drift model (:func:`fit_drift`), so a machine that
    drifts over the A/B moves neither the change nor its noise, and one that does not costs
    two degrees of freedom."""
    direction = direction if direction is not None else METRIC_DIRECTIONS.get(metric)
    if direction not in ("higher", "lower"):
        raise ValueError(f"{metric}: direction must be 'higher' or 'lower', got {direction!r}")
    base = [[as_float(v) for v in s] for s in baseline if len(s)]
    cand = [[as_float(v) for v in s] for s in candidate if len(s)]
    plain = Comparison(metric, direction, metric in GATED_METRICS if gated is None else gated,
                       threshold_pct, tuple(v for s in base for v in s),
                       tuple(v for s in cand for v in s), note=note)
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
    fresh, source = sumsq_of([centers_b, centers_c]), f"the {len(base)}+{len(cand)} starts compared"
    fit = None
    if paired:
        kept_b = [i for i, runs in enumerate(baseline) if len(runs)]
        kept_c = [i for i, runs in enumerate(candidate) if len(runs)]
        when_b, when_c = order if order is not None else abba_order(len(baseline),
                                                                    len(candidate))
        fit = fit_drift(centers_b, centers_c, [when_b[i] for i in kept_b],
                        [when_c[i] for i in kept_c])
    if fit is not None:
        fresh = fit.residual
        drift = ("the machine's drift fitted (side and a "
                 f"{('line', 'quadratic')[fit.terms - 1]} in their order)" if fit.terms
                 else "each side's mean (too few to fit the machine's drift)")
        source = f"the {len(base)}+{len(cand)} starts around {drift}"
    noise = estimate(fresh, record, noise_floor_pct, inflation=inflation,
                     pool_record=pool_record and fit is None, fresh_source=source)
    within = _within([*logs_b, *logs_c])
    if within is not None and noise is None:
        noise = within  # no start-to-start spread to go by: the runs' is the least it is
    elif within is not None and noise is not None and within.sd > noise.sd:
        # A floor on the spread, not a measure of it: it keeps the degrees of freedom of the
        # start-to-start estimate (the runs' many would claim a precision starts lack).
        noise = Spread(within.sd, noise.df, f"{noise.source}; raised to the runs' spread "
                                            "within starts")
    diff = statistics.fmean(centers_c) - statistics.fmean(centers_b)
    if fit is not None:
        diff = fit.diff
        if noise is not None and fit.variance_factor != 1.0:
            # The change's standard error is the spread times sqrt(1/n_b + 1/n_c) times the
            # fit's factor: folded into the spread, so every reader of the spread agrees.
            noise = Spread(noise.sd * math.sqrt(fit.variance_factor), noise.df,
                           f"{noise.source}; x{math.sqrt(fit.variance_factor):.3f} for the "
                           "drift fitted")
    return replace(plain, starts_b=tuple(math.exp(c) for c in centers_b),
                   starts_c=tuple(math.exp(c) for c in centers_c), diff=diff, noise=noise,
                   paired=fit is not None)


