"""Change points in a metric's history: where a series steps to a new level and stays.

Detection is ruptures' PELT (penalised piecewise-constant fit, the family asv
uses) on log values, so a step is a ratio whatever the metric's unit. The
penalty scales with the series' own noise, estimated robustly from successive
differences so that the steps themselves do not inflate it. A step must hold
for ``MIN_SEGMENT`` runs (a single bad night is not a change point; the
per-run gate judges that night) and move the median by ``MIN_EFFECT_PCT``, on
its own or with the steps before it in the same direction: a slow drift (3% a
release over five releases, 14% in all) is found as the steps that carry the
level ``MIN_EFFECT_PCT`` or more past where the drift began, each step under the
floor though it is. Before, each such step was dropped for being small, so the
steadier the machine (the finer PELT cuts), the blinder the history: 0 of 40
such series flagged at 0.5% night-to-night noise.

Not apache-otava: it is built as a service (BigQuery, Postgres, Slack and
Graphite clients among its requirements) and pins numpy to one minor release,
which would fight the harness's own numpy; ruptures needs only numpy and scipy.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from pytest_mi300x.results.metrics import METRIC_DIRECTIONS

MIN_SEGMENT = 2
MIN_EFFECT_PCT = 5.0
# Penalty per change point in units of noise variance x log(n): 2 is BIC; 4
# keeps flat series of 30-60 noisy nights nearly free of spurious points.
PENALTY_FACTOR = 4.0
# Noise below this (0.2%) would make any wiggle a step; runs are never that quiet.
MIN_NOISE = 0.002


@dataclass(frozen=True)
class ChangePoint:
    """A step between run ``index - 1`` and run ``index``."""

    index: int
    before: float
    after: float
    change_pct: float
    kind: str  # "regression" or "improvement", by the metric's direction
    since: int = -1
    """Where the drift this step belongs to began (the first run after its first step);
    -1 for a step that counts on its own."""
    drift_pct: float = math.nan
    """The level after this step against the level before the drift began, percent."""

    def describe(self) -> str:
        """The step, and the drift it carries on where it is one."""
        step = f"{self.kind} {self.change_pct:+.1f}% (median {self.before:.4g} -> {self.after:.4g})"
        if self.since < 0:
            return step
        return f"{step}; drift {self.drift_pct:+.1f}% since run {self.since}"


def _noise(logs: np.ndarray) -> float:
    diffs = np.diff(logs)
    if diffs.size == 0:
        return MIN_NOISE
    mad = float(np.median(np.abs(diffs - np.median(diffs))))
    return max(mad / 0.6745 / math.sqrt(2.0), MIN_NOISE)


def find_change_points(values: Sequence[float], metric: str,
                       min_effect_pct: float = MIN_EFFECT_PCT) -> list[ChangePoint]:
    """Change points of a series (oldest first); values must be positive."""
    clean = [float(v) for v in values]
    if len(clean) < 2 * MIN_SEGMENT or any(not (v > 0 and math.isfinite(v)) for v in clean):
        return []
    import ruptures  # imported here: only the history command and the HTML report need it

    logs = np.log(np.asarray(clean))
    sigma = _noise(logs)
    penalty = PENALTY_FACTOR * sigma * sigma * math.log(len(logs))
    algo = ruptures.Pelt(model="l2", min_size=MIN_SEGMENT, jump=1).fit(logs.reshape(-1, 1))
    ends = algo.predict(pen=penalty)
    bounds = [0, *ends]
    direction = METRIC_DIRECTIONS.get(metric, "lower")
    points = []
    origin: float | None = None  # the level before the current run of same-direction steps
    began, sign = 0, 0.0
    for start, cut, stop in zip(bounds, bounds[1:], bounds[2:], strict=False):
        before = statistics.median(clean[start:cut])
        after = statistics.median(clean[cut:stop])
        change = (after - before) / before * 100.0
        if change * sign <= 0:  # a step the other way (or the first) starts a new run
            origin, began, sign = before, cut, math.copysign(1.0, change)
        assert origin is not None
        drift = (after - origin) / origin * 100.0
        alone = abs(change) >= min_effect_pct
        if alone:  # a step that counts on its own; a drift after it counts from it
            origin, began = after, stop
        elif abs(drift) < min_effect_pct:
            continue
        # A step holds when enough runs after it each moved past the effect floor (from
        # the level before it, or before the drift it carries on), not when one wild run
        # drags a short segment's median along.
        ref = before if alone else origin
        moved = [(v - ref) / ref * 100.0 for v in clean[cut:stop]]
        if sum(1 for m in moved if m * change > 0 and abs(m) >= min_effect_pct) < MIN_SEGMENT:
            continue
        worse = change < 0 if direction == "higher" else change > 0
        points.append(ChangePoint(cut, before, after, change,
                                  "regression" if worse else "improvement",
                                  -1 if alone else began, math.nan if alone else drift))
    return points


def find_change_points_within(values: Sequence[float], metric: str,
                              breaks: Sequence[int]) -> list[ChangePoint]:
    """Change points of each stretch between ``breaks`` (indices where the setup changed:
    a step there is the new setup, not a regression), with indices into ``values``."""
    bounds = [0, *sorted(b for b in set(breaks) if 0 < b < len(values)), len(values)]
    found: list[ChangePoint] = []
    for start, stop in zip(bounds, bounds[1:], strict=False):
        for cp in find_change_points(values[start:stop], metric):
            found.append(replace(cp, index=cp.index + start,
                                 since=cp.since + start if cp.since >= 0 else -1))
    return found
