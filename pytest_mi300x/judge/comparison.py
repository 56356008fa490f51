"""The numbers of one metric's comparison before any decision: each side's start values,
the change of their means, its start-to-start noise (judge/noise.py) and its one-sided
p-values. judge/verdict.py decides on them."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, replace

from pytest_mi300x.judge import power
from pytest_mi300x.judge.noise import (
    Spread,
    SumSq,
    estimate,
    median_variance,
    start_logs,
    sumsq_of,
)
from pytest_mi300x.judge.records import robust_scale, screen
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
    """Mean log start value, candidate minus baseline."""
    noise: Spread | None = None
    problem: str = ""
    note: str = ""
    paired: bool = False
    """The noise is the interleaved pairs' differences (an A/B's), not the sides' spread."""
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
            note: str = "", same_start: bool = False, grid_pct: float = math.nan
            ) -> Comparison:
    """The numbers of one metric's comparison (see :func:`judge_starts`).

    ``paired``: the i-th baseline start ran next to the i-th candidate start (an A/B's ABBA
    order), so the noise is measured on the pairs' differences: a slow drift of the machine,
    which moves both starts of a pair alike, is left out of it. ``same_start``: both sides
    ran on one server start (a claim on one server), so the runs are the unit. ``grid_pct``:
    the figure's grid step (percent). The baseline is the reference: only its runs floor
    the noise (a candidate's erratic runs are a finding of their own, judge/spreads.py, and
    never lower the power to see its change); in the gate (``pool_record``) a baseline start
    far off the others (judge/records.py) is set aside as slowed."""
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
    pairs = False
    if paired and len(base) == len(baseline) == len(cand) == len(candidate) >= 2:
        # A start value's spread from the pairs: Var(B - A) is twice it.
        diffs = [c - b for b, c in zip(centers_b, centers_c, strict=True)]
        mean = statistics.fmean(diffs)
        fresh = SumSq(sum((d - mean) ** 2 for d in diffs) / 2, len(diffs) - 1)
        source = f"the {len(diffs)} interleaved pairs compared"
        pairs = True
    reference = estimate(fresh, record, noise_floor_pct, pool_record=pool_record,
                         fresh_source=source)
    # The reference's runs say how spread a run is; a start of fewer runs (either side's) is
    # the noisier median, so the floor counts the fewer.
    fewest = min(statistics.fmean(len(x) for x in logs_b), statistics.fmean(len(x) for x in logs_c))
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
    return replace(plain, starts_b=tuple(math.exp(c) for c in centers_b),
                   starts_c=tuple(math.exp(c) for c in centers_c),
                   diff=statistics.fmean(centers_c) - statistics.fmean(centers_b),
                   noise=_widened(reference, inflation), reference=reference,
                   paired=pairs and not pool_record)


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
