"""Change points in a metric's history: where a series steps to a new level and stays.

Detection is ruptures' PELT (penalised piecewise-constant fit, the family asv
uses) on log values, so a step is a ratio whatever the metric's unit. The
penalty scales with the series' own noise, estimated robustly from successive
differences so that the steps themselves do not inflate it. A step must hold
for ``MIN_SEGMENT`` runs (a single bad night is not a change point; the
per-run gate judges that night) and move the median by ``MIN_EFFECT_PCT``.

Not apache-otava: it is built as a service (BigQuery, Postgres, Slack and
Graphite clients among its requirements) and pins numpy to one minor release,
which would fight the harness's own numpy; ruptures needs only numpy and scipy.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

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
    for start, cut, stop in zip(bounds, bounds[1:], bounds[2:], strict=False):
        before = statistics.median(clean[start:cut])
        after = statistics.median(clean[cut:stop])
        change = (after - before) / before * 100.0
        if abs(change) < min_effect_pct:
            continue
        # A step holds when enough runs after it each moved past the effect floor,
        # not when one wild run drags a short segment's median along.
        moved = [(v - before) / before * 100.0 for v in clean[cut:stop]]
        if sum(1 for m in moved if m * change > 0 and abs(m) >= min_effect_pct) < MIN_SEGMENT:
            continue
        worse = change < 0 if direction == "higher" else change > 0
        points.append(ChangePoint(cut, before, after, change,
                                  "regression" if worse else "improvement"))
    return points


def find_change_points_within(values: Sequence[float], metric: str,
                              breaks: Sequence[int]) -> list[ChangePoint]:
    """Change points of each stretch between ``breaks`` (indices where the setup changed:
    a step there is the new setup, not a regression), with indices into ``values``."""
    bounds = [0, *sorted(b for b in set(breaks) if 0 < b < len(values)), len(values)]
    found: list[ChangePoint] = []
    for start, stop in zip(bounds, bounds[1:], strict=False):
        for cp in find_change_points(values[start:stop], metric):
            found.append(ChangePoint(cp.index + start, cp.before, cp.after, cp.change_pct,
                                     cp.kind))
    return found
