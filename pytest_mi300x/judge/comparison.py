"""The numbers of one metric's comparison before any decision: each side's start values,
the change of their means, its start-to-start noise (judge/noise.py) and its one-sided
p-values. judge/verdict.py decides on them."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, replace

from pytest_mi300x.judge import power
from pytest_mi300x.judge.noise import Spread, SumSq, estimate, start_logs, sumsq_of
from pytest_mi300x.results.metrics import GATED_METRICS, METRIC_DIRECTIONS

DEFAULT_THRESHOLD_PCT: float = 5.0
"""The smallest change that counts where neither the host nor the test sets a floor."""

Starts = Sequence[Sequence[float]]
"""Per server start, the values of its runs."""


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
    """Mean log start value, candidate minus baseline."""
    noise: Spread | None = None
    problem: str = ""
    note: str = ""
    paired: bool = False
    """The noise is the interleaved pairs' differences (an A/B's), not the sides' spread."""

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
            note: str = "") -> Comparison:
    """The numbers of one metric's comparison (see :func:`judge_starts`).

    ``paired``: the i-th baseline start ran next to the i-th candidate start (an A/B's ABBA
    order), so the noise is measured on the pairs' differences: a slow drift of the machine,
    which moves both starts of a pair alike, is left out of it."""
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
    pairs = False
    if paired and len(base) == len(baseline) == len(cand) == len(candidate) >= 2:
        # A start value's spread from the pairs: Var(B - A) is twice it.
        diffs = [c - b for b, c in zip(centers_b, centers_c, strict=True)]
        mean = statistics.fmean(diffs)
        fresh = SumSq(sum((d - mean) ** 2 for d in diffs) / 2, len(diffs) - 1)
        source = f"the {len(diffs)} interleaved pairs compared"
        pairs = True
    noise = estimate(fresh, record, noise_floor_pct, inflation=inflation,
                     pool_record=pool_record, fresh_source=source)
    within = _within([*logs_b, *logs_c])
    if within is not None and noise is None:
        noise = within  # no start-to-start spread to go by: the runs' is the least it is
    elif within is not None and noise is not None and within.sd > noise.sd:
        # A floor on the spread, not a measure of it: it keeps the degrees of freedom of the
        # start-to-start estimate (the runs' many would claim a precision starts lack).
        noise = Spread(within.sd, noise.df, f"{noise.source}; raised to the runs' spread "
                                            "within starts")
    return replace(plain, starts_b=tuple(math.exp(c) for c in centers_b),
                   starts_c=tuple(math.exp(c) for c in centers_c),
                   diff=statistics.fmean(centers_c) - statistics.fmean(centers_b), noise=noise,
                   paired=pairs and not pool_record)


