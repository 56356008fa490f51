"""A test's noise record as verdicts read it: dated, windowed, and robust to a slowed start.

A record is a list of entries, one per source (a replaced baseline's starts, an ``ab``, a
culprit search, a steadiness check): ``{"source", "date", "metrics": {metric: [sum of
squares, df]}, "starts": {metric: [[start value, ...], ...]}}``, each inner list the starts
of one build (raw values, not logs). Read, they become one sum of squares per metric:

- **windowed**: an entry weighs ``0.5 ** (age / HALF_LIFE_DAYS)`` (its squares and degrees
  of freedom alike), and one older than ``EXPIRE_DAYS`` (or without a date) weighs nothing:
  noise moves from day to day, so last week's starts speak for today more than last
  quarter's, and a slowed start recorded long ago stops speaking at all;
- **robust**: where an entry kept its start values, a start further than ``OUTLIER_K``
  robust spreads from its group's median is set aside as slowed (the robust spread is the
  median within-group pairwise difference of every entry in the window, over
  sqrt(2) * 0.6745, the normal's). Under normal noise a start is set aside about 6 times
  in 100,000 (``OUTLIER_K`` = 4, two-sided): the rule's own false-rejection rate. Entries
  that kept only sums of squares (written before) count as they are.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from pytest_mi300x.judge.noise import SumSq, sumsq_of

HALF_LIFE_DAYS = 14.0
EXPIRE_DAYS = 60.0
OUTLIER_K = 4.0
_PAIR_MEDIAN = math.sqrt(2) * 0.6744897501960817
"""The median |x_i - x_j| of two normal draws, in standard deviations."""


def weight(date: str, now: float | None = None) -> float:
    """How much an entry dated ``date`` (ISO, UTC) counts today."""
    try:
        when = datetime.strptime(date, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp()
    except (TypeError, ValueError):
        return 0.0  # undated: no telling how old
    age = max(0.0, ((now if now is not None else time.time()) - when) / 86400)
    return 0.0 if age > EXPIRE_DAYS else 0.5 ** (age / HALF_LIFE_DAYS)


def robust_scale(groups: Iterable[Sequence[float]]) -> float | None:
    """A start value's spread (log scale) from the median of within-group pairwise
    differences: a slowed start moves few of them. None with fewer than 3 pairs."""
    diffs = [abs(a - b) for g in groups for i, a in enumerate(g) for b in g[i + 1:]]
    if len(diffs) < 3:
        return None
    return statistics.median(diffs) / _PAIR_MEDIAN


def screen(groups: Sequence[Sequence[float]], scale: float | None
           ) -> tuple[list[list[float]], list[float]]:
    """Each group (log values) without its starts further than ``OUTLIER_K`` * ``scale`` from
    the group's median; and the residuals of those set aside."""
    if not scale or scale <= 0:
        return [list(g) for g in groups], []
    kept, aside = [], []
    for group in groups:
        center = statistics.median(group) if group else 0.0
        kept.append([v for v in group if abs(v - center) <= OUTLIER_K * scale])
        aside += [v - center for v in group if abs(v - center) > OUTLIER_K * scale]
    return kept, aside


def _logs(groups: Any) -> list[list[float]]:
    return [[math.log(float(v)) for v in g if float(v) > 0] for g in groups or []]


def record_of(entries: Sequence[Mapping[str, Any]], now: float | None = None
              ) -> dict[str, SumSq]:
    """A record's entries as one weighted, screened sum of squares per metric."""
    now = time.time() if now is None else now
    weighted = [(weight(str(e.get("date") or ""), now), e) for e in entries]
    live = [(w, e) for w, e in weighted if w > 0]
    metrics = sorted({m for _, e in live for m in (e.get("metrics") or {})}
                     | {m for _, e in live for m in (e.get("starts") or {})})
    out: dict[str, SumSq] = {}
    for metric in metrics:
        kept = [(w, _logs((e.get("starts") or {}).get(metric))) for w, e in live]
        scale = robust_scale(g for _, groups in kept for g in groups)
        total = SumSq()
        for (w, entry), (_, groups) in zip(live, kept, strict=True):
            if groups:
                ev = sumsq_of(screen(groups, scale)[0])
            elif metric in (entry.get("metrics") or {}):
                ev = SumSq.from_list(entry["metrics"][metric])
            else:
                continue
            total += SumSq(ev.ss * w, ev.df * w)
        if total.df > 0:
            out[metric] = total
    return out


def entry(source: str, date: str, groups_by_metric: Mapping[str, Iterable[Sequence[float]]]
          ) -> dict[str, Any]:
    """A record entry from groups of start values (each group one build; raw values): its
    sums of squares and the values themselves, so later reads can screen them."""
    starts: dict[str, list[list[float]]] = {}
    metrics: dict[str, list[float]] = {}
    for metric, groups in groups_by_metric.items():
        good = [[float(v) for v in g if v > 0 and math.isfinite(v)] for g in groups]
        good = [g for g in good if len(g) >= 2]
        ev = sumsq_of(_logs(good))
        if ev.df > 0:
            metrics[metric], starts[metric] = ev.to_list(), good
    found: dict[str, Any] = {"source": source, "date": date, "metrics": metrics,
                             "starts": starts}
    return found
