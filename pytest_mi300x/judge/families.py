"""A test's verdicts as families: which figure is judged how, and what they decide.

- a capacity (``max_rate_under_slo``) is found on a grid: its step, as a percent of the
  baseline's level, floors its noise and what it resolves (judge/verdict.py);
- p99 TTFT and ITL are gated only where their noise resolves the change a test must;
- the build's own steadiness is watched on its first gated family (judge/spreads.py);
- the verdicts of a test decide it: "regression", "undecided", "cannot gate" or "no
  change" (:func:`decision`).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from typing import Any

from pytest_mi300x.judge import multiplicity, power
from pytest_mi300x.judge.comparison import Comparison, as_float
from pytest_mi300x.judge.model import Kind, Verdict
from pytest_mi300x.results.metrics import GRID_STEPS, TAIL_GATED, THROUGHPUTS


def median(values: Sequence[float]) -> float:
    finite = [v for v in values if math.isfinite(v)]
    return float(statistics.median(finite)) if finite else math.nan


def grouped(reps: Sequence[Mapping[str, float]], starts: Sequence[int],
             metric: str) -> list[list[float]]:
    groups: dict[int, list[float]] = {}
    for rep, start in zip(reps, starts, strict=True):
        if metric in rep:
            groups.setdefault(start, []).append(as_float(rep[metric]))
    return list(groups.values())


def start_ids(reps: Sequence[Mapping[str, float]], starts: Sequence[int], metric: str
              ) -> list[float]:
    """The start ids of :func:`grouped`'s groups, in the same order (an A/B's starts are
    numbered in the order they ran: their positions in time)."""
    return [float(k) for k in dict.fromkeys(s for r, s in zip(reps, starts, strict=True)
                                           if metric in r)]


def metrics_in(reps: Sequence[Mapping[str, float]]) -> list[str]:
    seen: dict[str, None] = {}
    for rep in reps:
        seen.update(dict.fromkeys(rep))
    return list(seen)


def grid_of(metric: str, base: Sequence[Mapping[str, float]],
          cand: Sequence[Mapping[str, float]]) -> tuple[float, str]:
    """A grid figure's step as a percent of the baseline's level, or why it has none: a
    sweep whose top rate held measured only a lower bound."""
    reps = [r for r in (*base, *cand) if metric in r]
    steps = [as_float(r.get(GRID_STEPS[metric])) for r in reps]
    if any(math.isinf(x) or r.get("max_rate_capped") == 1.0 for x, r in zip(steps, reps,
                                                                          strict=True)):
        return math.nan, ("a sweep's top rate held, so it measured only a lower bound of "
                          "the capacity: add higher rates")
    level = median([as_float(r[metric]) for r in base])
    known = [x for x in steps if math.isfinite(x) and x > 0]
    if not known:  # a result from before steps were kept: the gaps between values found
        values = sorted({as_float(r[metric]) for r in reps})
        known = [b - a for a, b in zip(values, values[1:], strict=False) if b > a]
    if not known or not level > 0:
        return math.nan, "its grid step was not recorded (a result from before it was): " \
                         "refresh the baseline"
    return max(known) / level * 100, ""


def tail_gated(c: Comparison, level: float, alpha_same: float) -> Comparison:
    """A tail is gated where its noise resolves the change a test must resolve, at the most
    stringent level its family can be held to; elsewhere it warns, saying why."""
    target = power.TARGET_FACTOR * c.threshold_pct
    found = (power.resolves(c.noise.sd, c.noise.df, len(c.starts_b), len(c.starts_c), level,
                            c.threshold_pct, c.direction, alpha_same)
             if c.noise is not None and not c.problem else math.inf)
    if found <= target:
        return c
    said = "nothing" if math.isinf(found) else f"{found:.0f}%"
    return replace(c, gated=False, note=f"{c.note}not gated: its noise resolves {said}, not "
                                        f"the {target:g}% a gated tail must; ")


def spread_families(comparisons: Sequence[Any], b_starts: Sequence[int],
                     c_starts: Sequence[int], baseline_reps: Sequence[Mapping[str, float]],
                     candidate_reps: Sequence[Mapping[str, float]]
                     ) -> dict[str, tuple[list[list[float]], list[list[float]]]]:
    """The metric the steadiness family watches: the first gated family's (throughput
    before latency), on its start values."""
    for c in comparisons:
        if isinstance(c, Comparison) and c.gated and not c.problem and c.metric not in \
                TAIL_GATED and c.metric not in GRID_STEPS:
            metric = "request_throughput" if c.metric in THROUGHPUTS and any(
                "request_throughput" in r for r in baseline_reps) else c.metric
            return {metric: (grouped(baseline_reps, b_starts, metric),
                             grouped(candidate_reps, c_starts, metric))}
    return {}


def decision(verdicts: Iterable[Verdict]) -> str:
    """What one test's verdicts say, in one word:

    - "regression": a gated metric regressed (a finding whatever the test resolves);
    - "undecided": a gated metric moved past its floor on one start (a suspect), or a
      family that resolves its target at the reference's own noise cannot tonight;
    - "cannot gate": no gated family resolves its target, even at the reference's noise;
    - "no change": no regression, with every family that could gate resolving tonight, or
      calling an improvement (families that cannot are named in the test's outcome, never
      passed for it)."""
    gated = [v for v in verdicts if v.gated]
    if any(v.fails for v in gated):
        return "regression"
    if any(v.suspect for v in gated):
        return "undecided"
    families: dict[str, list[Verdict]] = {}
    for v in gated:
        if v.scale != "spread" and not math.isnan(v.resolves_pct):
            families.setdefault(multiplicity.family_of(v.metric), []).append(v)
    # A family resolves where it can gate, or where it called an improvement anyway.
    resolved = {f for f, vs in families.items()
                if any(v.can_gate or v.kind is Kind.IMPROVEMENT for v in vs)}
    could = {f for f, vs in families.items() if any(v.could_gate for v in vs)}
    if could - resolved:
        return "undecided"
    return "no change" if resolved else "cannot gate"
