"""Regression or not: a verdict per metric from a few repetitions on each side.

The rule (per metric, with its direction; values compared on a log scale):

- shift: the Hodges-Lehmann estimate, the median of all baseline/candidate
  pairwise log ratios, reported as a percent. It uses every run yet shrugs
  off a stalled run; medians alone are too coarse with 3 runs (same rule on
  medians at CV 3%: 1.4% false alarms with 94.5% of 10% slowdowns caught).
- noise: pooled robust spread of both sides' runs around their own median
  (median absolute log deviation, scaled to a standard deviation).
- threshold = max(floor, NOISE_K * noise); REGRESSION when the shift is worse
  than the threshold AND at least 80% of the baseline/candidate pairs are
  ordered worse (12 of 15 with 5 vs 3: tolerates one stalled baseline run);
  IMPROVEMENT symmetric; NO_CHANGE within the threshold.
- INCONCLUSIVE: fewer than 2 runs on a side, NaN/inf/zero/negative values,
  run-to-run noise above both MAX_THRESHOLD_PCT and the floor (too noisy to
  decide; a floor wider than the noise already accepts it) unless every run
  pair is apart by more than the floor in one direction (no noise explains
  that: it is decided against the floor), or a shift past the threshold
  without the pairs ordered (borderline: add repetitions).

`benchmarks/detection_sim.py` measured it: 20,000 seeded trials per cell,
5 baseline vs 3 candidate runs, share of REGRESSION verdicts (latency up by
p% | throughput down by p%; normal noise gives the same within 0.5 points):

    log-normal noise        false alarms   5% caught     10% caught    20% caught
    CV 2%                    0.03 | 0.01   35 | 34       99.6 | 99.9   100 | 100
    CV 3%                    0.88 | 0.53   39 | 38       95.9 | 97.9   100 | 100
    CV 4%                    2.9  | 2.2    38 | 38       88.1 | 91.7   100 | 100
    CV 3%, 5% runs stall 3x  2.1  | 1.8    39 | 37       91.4 | 93.5    98 | 98

The targets (<= 1% false alarms, >= 95% of 10% slowdowns caught) hold up to
CV 3%. No pairwise rule meets both much beyond: with 5 vs 3 runs even the mean
of logs has a standard error of 0.73 CV, so 1% false alarms needs a threshold
of 1.7 CV and 95% power at 10% needs one under 10% - 1.2 CV: CV <= 3.4%.
For noisier metrics set a per-metric floor of about 2 x CV (simulated: false
alarms 0.6% at CV 4% floor 8, 0.6% at CV 6% floor 12, 0.8% at CV 10% floor
20) or take more repetitions.
"""

from __future__ import annotations

import enum
import math
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace

from pytest_mi300x.results.metrics import GATED_METRICS, METRIC_DIRECTIONS, WARN_METRICS

__all__ = ["GATED_METRICS", "WARN_METRICS", "Kind", "Verdict", "judge", "judge_all",
           "judge_band"]

# Simulated at CV 3%, 5 vs 3 runs: floor 5.5 gives 0.9% false alarms and 96.1%
# of 10% slowdowns caught; 5.6 gives 0.8% and 95.8%; 5.75 gives 0.7% and
# 95.3%. 5.6 leaves the most slack on both targets at once.
DEFAULT_FLOOR_PCT: float = 5.6
# The noise estimate from 8 runs is itself noisy (its 90th percentile is 1.6x
# its median); k > 1 widens the threshold at CV 3% often enough to cost 1-5
# points of power, while k = 1 still tracks genuinely noisy metrics.
NOISE_K: float = 1.0
# Beyond this no threshold means anything: the verdict is INCONCLUSIVE.
MAX_THRESHOLD_PCT: float = 25.0
# Share of baseline/candidate pairs that must be ordered in the shift's
# direction; 0.8 keeps power when one baseline run stalled (complete
# separation loses a quarter of catches when 5% of runs stall).
PAIR_FRACTION: float = 0.8
MIN_REPETITIONS: int = 2
# Median absolute deviation (each side's median run left out, its deviation is
# zero by construction) to standard deviation, for 5 + 3 normal runs; the
# simulation prints the calibration.
MAD_TO_SD: float = 1.43


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
    candidate: tuple[float, ...]
    baseline_median: float
    candidate_median: float
    change_pct: float
    threshold_pct: float
    reason: str
    # Beyond the medians: what the decision actually used.
    shift_pct: float = math.nan
    noise_pct: float = math.nan
    floor_pct: float = math.nan
    server_medians: tuple[float, ...] = ()
    """Per server start of a multi-start baseline: what the band was."""

    @property
    def fails(self) -> bool:
        """Whether this verdict should fail the test."""
        return self.gated and self.kind is Kind.REGRESSION

    def to_dict(self) -> dict[str, object]:
        """Every number of the verdict, repetitions included (reports plot them)."""
        return {"metric": self.metric, "kind": self.kind.value, "gated": self.gated,
                "direction": self.direction, "baseline": list(self.baseline),
                "candidate": list(self.candidate), "baseline_median": self.baseline_median,
                "candidate_median": self.candidate_median, "change_pct": self.change_pct,
                "threshold_pct": self.threshold_pct, "shift_pct": self.shift_pct,
                "noise_pct": self.noise_pct, "floor_pct": self.floor_pct,
                "server_medians": list(self.server_medians), "reason": self.reason}

    def message(self) -> str:
        """Human text: the verdict, every repetition, the effect and the noise."""
        better = "higher" if self.direction == "higher" else "lower"
        role = "gated" if self.gated else "warn only"
        threshold = "n/a" if math.isnan(self.threshold_pct) else f"{self.threshold_pct:.1f}%"
        if not math.isnan(self.noise_pct):
            threshold += (
                f" = max(floor {self.floor_pct:.1f}%, {NOISE_K:g} x noise {self.noise_pct:.1f}%)"
            )
        starts = ([f"  baseline server starts' medians: "
                   f"{', '.join(_fmt(m) for m in self.server_medians)}"]
                  if self.server_medians else [])
        return "\n".join(
            [
                f"{self.metric}: {self.kind.value.upper()} ({role}, {better} is better)",
                _side("baseline", self.baseline_median, self.baseline),
                *starts,
                _side("candidate", self.candidate_median, self.candidate),
                f"  change {_pct(self.change_pct)} (medians), "
                f"shift {_pct(self.shift_pct)} (Hodges-Lehmann)",
                f"  threshold {threshold}",
                f"  reason: {self.reason}",
            ]
        )


def _side(name: str, median: float, values: tuple[float, ...]) -> str:
    runs = ", ".join(_fmt(v) for v in values) or "none"
    return f"  {name} median {_fmt(median)} over {len(values)} runs: {runs}"


def _median(values: Sequence[float]) -> float:
    if not values or not all(math.isfinite(v) for v in values):
        return math.nan
    return float(statistics.median(values))


def _change(base: float, cand: float) -> float:
    if math.isnan(base) or math.isnan(cand) or base <= 0:
        return math.nan
    return (cand - base) / base * 100


def _problem(name: str, values: Sequence[float]) -> str | None:
    if len(values) < MIN_REPETITIONS:
        return None  # reported for both sides together
    bad = [v for v in values if not math.isfinite(v)]
    if bad:
        return f"{name} has non-finite values ({', '.join(_fmt(v) for v in bad)})"
    low = [v for v in values if v <= 0]
    if low:
        return f"{name} has zero or negative values ({', '.join(_fmt(v) for v in low)})"
    return None


def _robust_noise(logs: Sequence[Sequence[float]]) -> float:
    """Pooled spread of log values around each side's own median, as a log SD."""
    deviations: list[float] = []
    for side in logs:
        center = statistics.median(side)
        spread = sorted(abs(v - center) for v in side)
        # An odd side's median run deviates by exactly zero: not information.
        deviations.extend(spread[1:] if len(side) % 2 else spread)
    return MAD_TO_SD * statistics.median(deviations)


def _as_float(value: object) -> float:
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return math.nan


def _verdict(metric: str, direction: str, base: tuple[float, ...], cand: tuple[float, ...],
             kind: Kind, reason: str, **numbers: float) -> Verdict:
    base_median, cand_median = _median(base), _median(cand)
    return Verdict(
        metric=metric,
        kind=kind,
        gated=metric in GATED_METRICS,
        direction=direction,
        baseline=base,
        candidate=cand,
        baseline_median=base_median,
        candidate_median=cand_median,
        change_pct=_change(base_median, cand_median),
        threshold_pct=numbers.get("threshold_pct", math.nan),
        reason=reason,
        shift_pct=numbers.get("shift_pct", math.nan),
        noise_pct=numbers.get("noise_pct", math.nan),
        floor_pct=numbers.get("floor_pct", math.nan),
    )


def judge(
    metric: str,
    baseline: Sequence[float],
    candidate: Sequence[float],
    *,
    floor_pct: float = DEFAULT_FLOOR_PCT,
    direction: str | None = None,
) -> Verdict:
    """Compare a candidate's repetitions of one metric with the baseline's."""
    direction = direction if direction is not None else METRIC_DIRECTIONS.get(metric)
    if direction not in ("higher", "lower"):
        raise ValueError(f"{metric}: direction must be 'higher' or 'lower', got {direction!r}")
    base = tuple(_as_float(v) for v in baseline)
    cand = tuple(_as_float(v) for v in candidate)

    def verdict(kind: Kind, reason: str, **numbers: float) -> Verdict:
        return _verdict(metric, direction, base, cand, kind, reason, floor_pct=floor_pct,
                        **numbers)

    if len(base) < MIN_REPETITIONS or len(cand) < MIN_REPETITIONS:
        return verdict(
            Kind.INCONCLUSIVE,
            f"needs at least {MIN_REPETITIONS} repetitions per side, "
            f"got {len(base)} baseline and {len(cand)} candidate",
        )
    problem = _problem("baseline", base) or _problem("candidate", cand)
    if problem is not None:
        return verdict(Kind.INCONCLUSIVE, f"{problem}: not a valid measurement")

    # Orient so that positive means worse, whatever the metric's direction.
    sign = 1.0 if direction == "lower" else -1.0
    log_base = [math.log(v) for v in base]
    log_cand = [math.log(v) for v in cand]
    diffs = [c - b for b in log_base for c in log_cand]
    shift_pct = math.expm1(statistics.median(diffs)) * 100
    worse_pct = sign * shift_pct
    noise_pct = math.expm1(_robust_noise((log_base, log_cand))) * 100
    threshold_pct = max(floor_pct, NOISE_K * noise_pct)
    numbers = {"shift_pct": shift_pct, "noise_pct": noise_pct, "threshold_pct": threshold_pct}

    # A wide floor is a deliberate setting that accepts noise up to it; only noise
    # past both the cap and the floor makes a verdict meaningless. Unless even the
    # closest run pair is apart by more than the floor: then no noise explains it.
    closest = min(abs(d) for d in diffs)
    separated = (all(d > 0 for d in diffs) or all(d < 0 for d in diffs)) \
        and closest > math.log1p(floor_pct / 100)
    noisy = NOISE_K * noise_pct > max(MAX_THRESHOLD_PCT, floor_pct)
    if noisy and not separated:
        return verdict(
            Kind.INCONCLUSIVE,
            f"run-to-run noise of {noise_pct:.1f}% puts the threshold above "
            f"{max(MAX_THRESHOLD_PCT, floor_pct):g}%: too noisy to decide",
            **numbers,
        )
    if noisy:
        threshold_pct = numbers["threshold_pct"] = floor_pct
    if abs(worse_pct) <= threshold_pct:
        return verdict(
            Kind.NO_CHANGE,
            f"the shift of {shift_pct:+.1f}% is within the {threshold_pct:.1f}% threshold",
            **numbers,
        )
    word = "worse" if worse_pct > 0 else "better"
    # Ties count half, as in the Mann-Whitney U statistic.
    ordered = sum(1.0 if d * shift_pct > 0 else 0.5 if d == 0 else 0.0 for d in diffs)
    pairs = len(diffs)
    needed = math.ceil(PAIR_FRACTION * pairs - 1e-9)
    if ordered < needed:
        return verdict(
            Kind.INCONCLUSIVE,
            f"the shift of {shift_pct:+.1f}% passes the {threshold_pct:.1f}% threshold but "
            f"only {ordered:g} of {pairs} run pairs are {word} ({needed} needed): "
            "add repetitions",
            **numbers,
        )
    kind = Kind.REGRESSION if worse_pct > 0 else Kind.IMPROVEMENT
    if noisy:
        return verdict(
            kind,
            f"{word} by {abs(shift_pct):.1f}% (shift): every run pair {word} by more than "
            f"the {floor_pct:g}% floor ({math.expm1(closest) * 100:.1f}% at the closest), "
            f"which no run-to-run noise ({noise_pct:.1f}%) explains",
            **numbers,
        )
    return verdict(
        kind,
        f"{word} by {abs(shift_pct):.1f}% (shift), beyond the {threshold_pct:.1f}% "
        f"threshold, with {ordered:g} of {pairs} run pairs {word}",
        **numbers,
    )


def judge_band(
    metric: str,
    server_sets: Sequence[Sequence[float]],
    candidate: Sequence[float],
    *,
    floor_pct: float = DEFAULT_FLOOR_PCT,
    direction: str | None = None,
) -> Verdict:
    """Judge a candidate against a baseline measured over several server starts.

    A regression must be one against the worst start (its runs against the
    candidate's, by ``judge``); an improvement one against the best. Anywhere in
    between is what restarting the same build already does: no change. With one
    start this is ``judge``.
    """
    sets = [tuple(_as_float(v) for v in s) for s in server_sets if len(s)]
    flat = [v for s in sets for v in s]
    if len(sets) < 2:
        return judge(metric, flat, candidate, floor_pct=floor_pct, direction=direction)
    direction = direction if direction is not None else METRIC_DIRECTIONS.get(metric)
    if direction not in ("higher", "lower"):
        raise ValueError(f"{metric}: direction must be 'higher' or 'lower', got {direction!r}")
    medians = [_median(s) for s in sets]
    if any(math.isnan(m) for m in medians) or any(len(s) < MIN_REPETITIONS for s in sets):
        return _rebase(judge(metric, flat, candidate, floor_pct=floor_pct,
                             direction=direction), flat, medians, "")
    order = sorted(range(len(sets)), key=lambda i: medians[i], reverse=direction == "higher")
    best, worst = order[0], order[-1]
    n = len(sets)
    against_worst = judge(metric, sets[worst], candidate, floor_pct=floor_pct,
                          direction=direction)
    against_best = judge(metric, sets[best], candidate, floor_pct=floor_pct,
                         direction=direction)
    if against_worst.kind is Kind.REGRESSION:
        return _rebase(against_worst, flat, medians, f"against the worst of {n} server starts: ")
    if against_best.kind is Kind.IMPROVEMENT:
        return _rebase(against_best, flat, medians, f"against the best of {n} server starts: ")
    # The side the candidate leans to decides what "no change" or "inconclusive" rests on.
    cand_median = _median([_as_float(v) for v in candidate])
    leans_worse = (cand_median > _median(flat)) == (direction == "lower")
    side, label = ((against_worst, "worst") if leans_worse else (against_best, "best"))
    if side.kind is Kind.INCONCLUSIVE:
        return _rebase(side, flat, medians, f"against the {label} of {n} server starts: ")
    lo, hi = sorted((medians[best], medians[worst]))
    return _rebase(
        side, flat, medians,
        f"within the band of {n} server starts (medians {_fmt(lo)} to {_fmt(hi)}) "
        f"plus the threshold; against the {label}: ",
        kind=Kind.NO_CHANGE)


def _rebase(side: Verdict, flat: Sequence[float], medians: Sequence[float], prefix: str,
            kind: Kind | None = None) -> Verdict:
    """A verdict judged against one server start, reported against the whole baseline."""
    base_median = _median(flat)
    return replace(side, kind=kind or side.kind, baseline=tuple(flat),
                   baseline_median=base_median,
                   change_pct=_change(base_median, side.candidate_median),
                   reason=prefix + side.reason, server_medians=tuple(medians))


def _column(reps: Sequence[Mapping[str, float]], metric: str) -> list[float]:
    return [_as_float(rep[metric]) for rep in reps if metric in rep]


def _metrics_in(reps: Sequence[Mapping[str, float]]) -> list[str]:
    seen: dict[str, None] = {}
    for rep in reps:
        seen.update(dict.fromkeys(rep))
    return list(seen)


def judge_all(
    baseline_reps: Sequence[Mapping[str, float]],
    candidate_reps: Sequence[Mapping[str, float]],
    *,
    floors: Mapping[str, float] | None = None,
    baseline_servers: Sequence[int] = (),
) -> list[Verdict]:
    """Verdicts for every metric with a direction present on both sides.

    ``baseline_servers`` names the server start of each baseline repetition; with
    more than one start the candidate is judged against their band (``judge_band``).
    """
    floors = floors or {}
    in_candidate = set(_metrics_in(candidate_reps))
    starts = list(baseline_servers) or [0] * len(baseline_reps)
    if len(starts) != len(baseline_reps):
        raise ValueError(f"baseline_servers names {len(starts)} repetitions, "
                         f"the baseline has {len(baseline_reps)}")
    groups = {s: [r for r, k in zip(baseline_reps, starts, strict=True) if k == s]
              for s in dict.fromkeys(starts)}
    return [
        judge_band(
            metric,
            [_column(reps, metric) for reps in groups.values()],
            _column(candidate_reps, metric),
            floor_pct=floors.get(metric, DEFAULT_FLOOR_PCT),
        )
        for metric in _metrics_in(baseline_reps)
        if metric in in_candidate and metric in METRIC_DIRECTIONS
    ]




def inconclusive_all(
    metrics: Iterable[str],
    reason: str,
    *,
    baseline_reps: Sequence[Mapping[str, float]] = (),
    candidate_reps: Sequence[Mapping[str, float]] = (),
) -> list[Verdict]:
    """Every metric with a direction INCONCLUSIVE for one reason (e.g. a
    fingerprint mismatch or an invalid run), keeping any runs given for the report."""
    verdicts = []
    for metric in metrics:
        direction = METRIC_DIRECTIONS.get(metric)
        if direction is None:
            continue
        base = tuple(_column(baseline_reps, metric))
        cand = tuple(_column(candidate_reps, metric))
        verdicts.append(_verdict(metric, direction, base, cand, Kind.INCONCLUSIVE, reason))
    return verdicts
