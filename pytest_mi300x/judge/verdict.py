"""Regression or not: one rule for every verdict (the gate, compare, A/B runs, bisect).

The unit of repetition is the server start. One start of the same build serves faster or
slower than the next for its whole life, so runs within a start are not independent
evidence about the build. Per metric, with its direction, on a log scale:

- each start's value is the median of its runs;
- the change is the difference of the two sides' mean start values (reported as a ratio);
- its noise is the start values' spread, pooled with the host's recorded start-to-start
  noise where the host has one (``noise_floor_pct``, measured once over many starts and
  worth HOST_RECORD_DF of them: it lets a single start be judged), and never below the
  runs' spread within starts divided by the runs per start (a start is never less noisy
  than its own runs make it);
- an interval at ``confidence`` (Student t on the pooled spread's degrees of freedom,
  normal where the host's recorded noise decides) around the change.

Then, with the practical threshold T (the floor: a change smaller than T does not count):

- REGRESSION: the interval lies wholly on the worse side of no change, and the change
  is worse than T; IMPROVEMENT symmetric;
- NO CHANGE: the whole interval lies within plus or minus T;
- otherwise INCONCLUSIVE with ``needs_more``: more starts would decide it (the A/B and
  bisect commands add them); and INCONCLUSIVE for invalid values or too few starts.

False alarms need the estimate past T and the interval clear of zero at once: at a noise
well under T that never happens, and at a noise near T the interval is too wide.
``benchmarks/ab_sim.py`` measures both goals (A/A false alarms, catch rate of a 10%
change) for this rule at the noise levels measured on the hosts.
"""

from __future__ import annotations

import enum
import math
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pytest_mi300x.results.metrics import (
    GATED_METRICS,
    METRIC_DIRECTIONS,
    THROUGHPUTS,
    WARN_METRICS,
)

__all__ = ["CONFIDENCE", "DEFAULT_THRESHOLD_PCT", "GATED_METRICS", "WARN_METRICS", "Kind",
           "Verdict", "inconclusive_all", "judge_all", "judge_starts"]

DEFAULT_THRESHOLD_PCT: float = 5.0
"""The smallest change that counts where neither the host nor the test sets a floor."""
CONFIDENCE: float = 0.99
"""Two-sided: each side of the interval is wrong 0.5% of the time."""
HOST_RECORD_DF: int = 10
"""What a host's recorded start-to-start noise weighs, in starts: it was measured over
many, so a few new starts refine it instead of replacing it."""

Starts = Sequence[Sequence[float]]
"""Per server start, the values of its runs."""


class Kind(enum.StrEnum):
    """What a comparison concluded."""

    REGRESSION = "regression"
    IMPROVEMENT = "improvement"
    NO_CHANGE = "no change"
    INCONCLUSIVE = "inconclusive"


def _fmt(value: float) -> str:
    return f"{value:.6g}"


def _pct(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:+.1f}%"


@dataclass(frozen=True)
class Verdict:
    """One metric's verdict with the numbers that justify it."""

    metric: str
    kind: Kind
    gated: bool
    direction: str
    baseline: tuple[float, ...]
    """Every baseline run's value (all starts, in order)."""
    candidate: tuple[float, ...]
    baseline_median: float
    candidate_median: float
    change_pct: float
    """The change of the mean start values, as a percent (B over A)."""
    threshold_pct: float
    reason: str
    interval_pct: tuple[float, float] = (math.nan, math.nan)
    """The change's interval at ``confidence``, as percents."""
    noise_pct: float = math.nan
    """The start-to-start noise the interval used (a start value's CV)."""
    confidence: float = CONFIDENCE
    baseline_starts: tuple[float, ...] = ()
    """Each baseline start's median."""
    candidate_starts: tuple[float, ...] = ()
    needs_more: bool = False
    """Inconclusive only for lack of starts: more would decide it."""

    @property
    def fails(self) -> bool:
        """Whether this verdict should fail the test."""
        return self.gated and self.kind is Kind.REGRESSION

    @property
    def decided(self) -> bool:
        return self.kind is not Kind.INCONCLUSIVE

    def to_dict(self) -> dict[str, object]:
        """Every number of the verdict, repetitions included (reports plot them)."""
        return {"metric": self.metric, "kind": self.kind.value, "gated": self.gated,
                "direction": self.direction, "baseline": list(self.baseline),
                "candidate": list(self.candidate), "baseline_median": self.baseline_median,
                "candidate_median": self.candidate_median, "change_pct": self.change_pct,
                "threshold_pct": self.threshold_pct,
                "interval_pct": list(self.interval_pct), "noise_pct": self.noise_pct,
                "confidence": self.confidence, "baseline_starts": list(self.baseline_starts),
                "candidate_starts": list(self.candidate_starts),
                "needs_more": self.needs_more, "reason": self.reason}

    def message(self) -> str:
        """Human text: the verdict, every repetition and start, the change and its interval."""
        better = "higher" if self.direction == "higher" else "lower"
        role = "gated" if self.gated else "warn only"
        lo, hi = self.interval_pct
        return "\n".join([
            f"{self.metric}: {self.kind.value.upper()} ({role}, {better} is better)",
            _side("baseline", self.baseline_median, self.baseline, self.baseline_starts),
            _side("candidate", self.candidate_median, self.candidate, self.candidate_starts),
            f"  change {_pct(self.change_pct)} (mean of the starts), "
            f"{self.confidence:.0%} interval {_pct(lo)} to {_pct(hi)}, "
            f"start-to-start noise {self.noise_pct:.1f}%",
            f"  threshold {self.threshold_pct:.1f}% (a smaller change does not count)",
            f"  reason: {self.reason}",
        ])


def _side(name: str, median: float, values: tuple[float, ...],
          starts: tuple[float, ...]) -> str:
    runs = ", ".join(_fmt(v) for v in values) or "none"
    per_start = (f"; {len(starts)} server starts' medians: "
                 f"{', '.join(_fmt(m) for m in starts)}") if len(starts) > 1 else ""
    return f"  {name} median {_fmt(median)} over {len(values)} runs: {runs}{per_start}"


def _as_float(value: object) -> float:
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return math.nan


def _t_quantile(p: float, df: float) -> float:
    """Student t quantile (normal for infinite df)."""
    if math.isinf(df):
        return statistics.NormalDist().inv_cdf(p)
    from scipy.stats import t  # ruptures (change points) already brings scipy

    return float(t.ppf(p, df))


@dataclass(frozen=True)
class _Noise:
    """The spread a start value has, on the log scale, and its degrees of freedom."""

    sd: float
    df: float
    source: str


def _noise(logs_a: list[list[float]], logs_b: list[list[float]],
           floor_pct: float) -> _Noise | None:
    """The spread of a start value: the starts' own spread pooled with the host's record
    (worth HOST_RECORD_DF starts), never below what the runs within starts show."""
    centers_a = [statistics.median(s) for s in logs_a]
    centers_b = [statistics.median(s) for s in logs_b]
    df_between = len(centers_a) + len(centers_b) - 2
    ss_between = sum((c - statistics.fmean(centers_a)) ** 2 for c in centers_a) + \
        sum((c - statistics.fmean(centers_b)) ** 2 for c in centers_b)
    estimate: _Noise | None = None
    if floor_pct > 0:
        prior = math.log1p(floor_pct / 100)
        df = HOST_RECORD_DF + max(df_between, 0)
        source = "the host's record" + (f" and {df_between + 2} starts" if df_between else "")
        estimate = _Noise(math.sqrt((HOST_RECORD_DF * prior ** 2 + ss_between) / df), df,
                          source)
    elif df_between >= 1:
        estimate = _Noise(math.sqrt(ss_between / df_between), df_between, "between starts")
    starts = [*logs_a, *logs_b]
    df_within = sum(len(s) - 1 for s in starts)
    if df_within >= 1:
        ss = sum((v - statistics.fmean(s)) ** 2 for s in starts for v in s)
        runs_per_start = statistics.fmean(len(s) for s in starts)
        within = _Noise(math.sqrt(ss / df_within / runs_per_start), df_within, "within starts")
        if estimate is None or within.sd > estimate.sd:
            estimate = within
    return estimate


def judge_starts(metric: str, baseline: Starts, candidate: Starts, *,
                 threshold_pct: float = DEFAULT_THRESHOLD_PCT, noise_floor_pct: float = 0.0,
                 confidence: float = CONFIDENCE, direction: str | None = None,
                 gated: bool | None = None, note: str = "") -> Verdict:
    """Compare a candidate's server starts (each a list of run values) with a baseline's.

    ``gated`` overrides whether the metric can fail a test; ``note`` prefixes the reason.
    """
    direction = direction if direction is not None else METRIC_DIRECTIONS.get(metric)
    if direction not in ("higher", "lower"):
        raise ValueError(f"{metric}: direction must be 'higher' or 'lower', got {direction!r}")
    base = [[_as_float(v) for v in s] for s in baseline if len(s)]
    cand = [[_as_float(v) for v in s] for s in candidate if len(s)]
    flat_b = tuple(v for s in base for v in s)
    flat_c = tuple(v for s in cand for v in s)

    def verdict(kind: Kind, reason: str, change_pct: float = math.nan,
                interval_pct: tuple[float, float] = (math.nan, math.nan),
                noise_pct: float = math.nan, baseline_starts: tuple[float, ...] = (),
                candidate_starts: tuple[float, ...] = (), needs_more: bool = False) -> Verdict:
        return Verdict(metric=metric, kind=kind,
                       gated=metric in GATED_METRICS if gated is None else gated,
                       direction=direction, baseline=flat_b, candidate=flat_c,
                       baseline_median=_median(flat_b), candidate_median=_median(flat_c),
                       change_pct=change_pct, threshold_pct=threshold_pct,
                       reason=note + reason,
                       interval_pct=interval_pct, noise_pct=noise_pct, confidence=confidence,
                       baseline_starts=baseline_starts, candidate_starts=candidate_starts,
                       needs_more=needs_more)

    if not base or not cand:
        side = "baseline" if not base else "candidate"
        return verdict(Kind.INCONCLUSIVE, f"no runs on the {side} side")
    bad = [v for v in (*flat_b, *flat_c) if not math.isfinite(v) or v <= 0]
    if bad:
        return verdict(Kind.INCONCLUSIVE, f"values {', '.join(_fmt(v) for v in bad[:3])} are "
                                          "not positive finite numbers: not a valid measurement")
    logs_b = [[math.log(v) for v in s] for s in base]
    logs_c = [[math.log(v) for v in s] for s in cand]
    starts_b = tuple(math.exp(statistics.median(s)) for s in logs_b)
    starts_c = tuple(math.exp(statistics.median(s)) for s in logs_c)
    noise = _noise(logs_b, logs_c, noise_floor_pct)
    if noise is None:
        return verdict(Kind.INCONCLUSIVE, "one run on each side and no recorded start-to-start "
                                          "noise for this host: add runs or starts",
                       baseline_starts=starts_b, candidate_starts=starts_c, needs_more=True)
    diff = (statistics.fmean(math.log(v) for v in starts_c)
            - statistics.fmean(math.log(v) for v in starts_b))
    se = noise.sd * math.sqrt(1 / len(base) + 1 / len(cand))
    half = _t_quantile(0.5 + confidence / 2, noise.df) * se
    # Judged as percents, as users state thresholds: a 20% floor on throughput is a ratio
    # of 0.8, on latency one of 1.2. Oriented so that positive is worse.
    sign = 1.0 if direction == "lower" else -1.0
    change = math.expm1(diff) * 100
    interval = (math.expm1(diff - half) * 100, math.expm1(diff + half) * 100)
    worse, lo_w, hi_w = sign * change, *sorted(sign * x for x in interval)
    tau = threshold_pct
    numbers = {"change_pct": change, "interval_pct": interval,
               "noise_pct": math.expm1(noise.sd) * 100, "baseline_starts": starts_b,
               "candidate_starts": starts_c}
    starts = f"{len(base)} vs {len(cand)} server start(s)"
    span = f"{_pct(interval[0])} to {_pct(interval[1])}"
    if lo_w > 0 and worse > tau:
        return verdict(Kind.REGRESSION, f"worse by {abs(change):.1f}%: the "
                       f"{confidence:.0%} interval ({span}) is wholly worse and the change is "
                       f"past the {threshold_pct:g}% threshold ({starts}; noise from "
                       f"{noise.source})", **numbers)  # type: ignore[arg-type]
    if hi_w < 0 and worse < -tau:
        return verdict(Kind.IMPROVEMENT, f"better by {abs(change):.1f}%: the "
                       f"{confidence:.0%} interval ({span}) is wholly better and the change is "
                       f"past the {threshold_pct:g}% threshold ({starts}; noise from "
                       f"{noise.source})", **numbers)  # type: ignore[arg-type]
    if lo_w > -tau and hi_w < tau:
        return verdict(Kind.NO_CHANGE, f"any change is within {threshold_pct:g}%: the "
                       f"{confidence:.0%} interval is {span} ({starts})", **numbers)  # type: ignore[arg-type]
    return verdict(Kind.INCONCLUSIVE, f"the {confidence:.0%} interval ({span}) reaches past "
                   f"the {threshold_pct:g}% threshold without deciding ({starts}; noise "
                   f"{math.expm1(noise.sd) * 100:.1f}% from {noise.source}): add starts",
                   needs_more=True, **numbers)  # type: ignore[arg-type]


def _median(values: Sequence[float]) -> float:
    finite = [v for v in values if math.isfinite(v)]
    return float(statistics.median(finite)) if finite else math.nan


def _grouped(reps: Sequence[Mapping[str, float]], starts: Sequence[int],
             metric: str) -> list[list[float]]:
    groups: dict[int, list[float]] = {}
    for rep, start in zip(reps, starts, strict=True):
        if metric in rep:
            groups.setdefault(start, []).append(_as_float(rep[metric]))
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
              confidence: float = CONFIDENCE) -> list[Verdict]:
    """Verdicts for every metric with a direction present on both sides.

    ``*_starts`` name the server start of each repetition (all one start when empty);
    ``floors`` are the per-metric thresholds, ``noise`` the host's recorded start-to-start
    noise per metric (percent).
    """
    floors, noise = floors or {}, noise or {}
    b_starts = list(baseline_starts) or [0] * len(baseline_reps)
    c_starts = list(candidate_starts) or [0] * len(candidate_reps)
    if len(b_starts) != len(baseline_reps) or len(c_starts) != len(candidate_reps):
        raise ValueError("judge_all: each repetition needs its server start")
    in_candidate = set(_metrics_in(candidate_reps))
    paced = all(r.get("arrival_bound") == 1.0 for r in (*baseline_reps, *candidate_reps))
    return [
        judge_starts(metric, _grouped(baseline_reps, b_starts, metric),
                     _grouped(candidate_reps, c_starts, metric),
                     threshold_pct=floors.get(metric, DEFAULT_THRESHOLD_PCT),
                     noise_floor_pct=noise.get(metric, 0.0), confidence=confidence,
                     **(ARRIVAL_BOUND if paced and metric in THROUGHPUTS else {}))
        for metric in _metrics_in(baseline_reps)
        if metric in in_candidate and metric in METRIC_DIRECTIONS
    ]


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
        base = tuple(_as_float(r[metric]) for r in baseline_reps if metric in r)
        cand = tuple(_as_float(r[metric]) for r in candidate_reps if metric in r)
        verdicts.append(Verdict(metric=metric, kind=Kind.INCONCLUSIVE,
                                gated=metric in GATED_METRICS, direction=direction,
                                baseline=base, candidate=cand, baseline_median=_median(base),
                                candidate_median=_median(cand), change_pct=math.nan,
                                threshold_pct=math.nan, reason=reason))
    return verdicts
