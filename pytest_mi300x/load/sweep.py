"""Rate sweep: the highest request rate at which the server still meets given SLOs."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from pytest_mi300x.load.figures import check_slos

# DistServe's SLO attainment: the share of requests meeting every SLO.
DEFAULT_ATTAINMENT = 0.9


@dataclass(frozen=True)
class SweepPoint:
    """One measured rate."""

    rate: float
    attainment: float  # requests meeting every SLO / requests sent (failures count as misses)
    valid: bool  # a run with problems (failures, saturated client) never counts as a pass
    figures: dict[str, Any]

    def passes(self, target: float) -> bool:
        return self.valid and self.attainment >= target


@dataclass
class SweepResult:
    """Every point measured, and the highest passing rate (None if none passed)."""

    slos: dict[str, float]
    attainment: float
    points: list[SweepPoint] = field(default_factory=list)

    @property
    def best_rate(self) -> float | None:
        passing = [p.rate for p in self.points if p.passes(self.attainment)]
        return max(passing) if passing else None

    def describe(self) -> dict[str, Any]:
        return {"slos": self.slos, "attainment": self.attainment, "best_rate": self.best_rate,
                "points": [{"rate": p.rate, "attainment": p.attainment, "valid": p.valid}
                           for p in self.points]}


def find_max_rate(
    measure: Callable[[float], tuple[dict[str, Any], bool]],
    rates: Sequence[float],
    slos: dict[str, float],
    *,
    attainment: float = DEFAULT_ATTAINMENT,
    refine: int = 2,
    retries: int = 0,
    near_miss: float = 0.0,
    start_at: float | None = None,
) -> SweepResult:
    """Walk `rates` upwards until one misses, then bisect `refine` times between the
    last passing and first failing rate.

    With `start_at` (an earlier sweep's result) the walk begins at the highest listed
    rate not above it, since the lower ones held there; if that rate misses, the rates
    below it are walked from the lowest after all.

    With `retries`, a rate that misses is measured again (up to that many times) and
    passes if any try does: one stall of a shared machine then does not end the walk
    below the knee, where a real miss repeats. Only near misses are tried again (an
    attainment of at least `near_miss`, or an invalid run): past the knee most requests
    miss, which no stall explains; nor are misses above `start_at`, which the earlier
    sweep found too. Every try is kept as a point.

    `measure(rate)` runs the load at that rate with `slos` and returns
    (figures, valid); figures need `slo_attainment` (metrics.compute_figures
    with slos). Rates above the first failing one are not run: past the knee,
    latency only grows.
    """
    check_slos(slos)
    if not rates or any(r <= 0 for r in rates) or list(rates) != sorted(rates):
        raise ValueError(f"find_max_rate: rates must be ascending and > 0, got {list(rates)}")
    if not 0 < attainment <= 1:
        raise ValueError(f"find_max_rate: attainment must be in (0, 1], got {attainment}")
    if retries < 0:
        raise ValueError(f"find_max_rate: retries must be >= 0, got {retries}")
    result = SweepResult(dict(slos), attainment)

    def once(rate: float) -> SweepPoint:
        figures, valid = measure(rate)
        if "slo_attainment" not in figures:
            raise ValueError("find_max_rate: measure() must return figures computed with slos "
                             "(metrics.compute_figures(run, slos=...)); slo_attainment missing")
        point = SweepPoint(rate, float(figures["slo_attainment"]), valid, figures)
        result.points.append(point)
        return point

    def run(rate: float) -> bool:
        # Above an earlier sweep's result a miss is what that sweep found there, not a
        # stall: it counts at once (a later sweep retries only what contradicts it).
        tries = 1 if start_at is not None and rate > start_at else retries + 1
        for _ in range(tries):
            point = once(rate)
            if point.passes(attainment):
                return True
            if point.valid and point.attainment < near_miss:
                return False  # a clear miss
        return False

    def walk(candidates: Sequence[float]) -> tuple[float | None, float | None]:
        good = None
        for rate in candidates:
            if not run(rate):
                return good, rate
            good = rate
        return good, None

    below = [i for i, r in enumerate(rates) if start_at is not None and r <= start_at]
    first = below[-1] if below else 0
    good, bad = walk(rates[first:])
    if good is None and first:
        good, lower_bad = walk(rates[:first])
        bad = lower_bad if lower_bad is not None else bad
    if good is None or bad is None:
        return result
    for _ in range(refine):
        middle = (good + bad) / 2
        if run(middle):
            good = middle
        else:
            bad = middle
    return result
