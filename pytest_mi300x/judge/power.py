"""What a comparison can resolve: the smallest change it would call at 95% power with the
starts it has, and how many starts a change of a given size needs.

A regression is called when the change is significantly worse than no change at the test's
level ``alpha`` and significantly worse than the floor at the floor's level
``alpha_floor`` (judge/verdict.py); with start-to-start spread ``s`` (log scale, ``df``
degrees of freedom) and ``n_a`` against ``n_b`` starts, the standard error is
s * sqrt(1/n_a + 1/n_b), and a change D is called with probability about
Phi((D - max(q_alpha * se, floor + q_floor * se)) / se). So the change caught at ``POWER``
is max(q_alpha * se, floor + q_floor * se) + q_power * se. A change at the floor itself is
caught at most ``alpha_floor`` of the time, so what a test is asked to resolve is
``TARGET_FACTOR`` times its floor (10% for the default 5% floor).
"""

from __future__ import annotations

import functools
import math
import statistics
from collections.abc import Callable

POWER = 0.95
TARGET_FACTOR = 2.0
"""A test can gate a metric when it would catch a change of this many floors at ``POWER``."""
MAX_STARTS = 10_000
DRIFT_DEGREE = 2
"""The drift an A/B's model absorbs (judge/comparison.py ``fit_drift``): a polynomial of this
degree in the starts' order (a machine that slows down, speeds up, or slows down and
recovers over the A/B)."""


def drift_terms(starts: int) -> int:
    """Drift terms the model fits to ``starts`` starts in all: fewer where the starts would
    leave fewer than two degrees of freedom."""
    return min(DRIFT_DEGREE, max(0, starts - 4))


def drift_df(per_side: int) -> int:
    """Degrees of freedom of an A/B at ``per_side`` starts a side under the drift model."""
    return 2 * per_side - 2 - drift_terms(2 * per_side)


@functools.lru_cache(maxsize=4096)
def quantile(p: float, df: float) -> float:
    """Student t quantile (normal for infinite df)."""
    if math.isinf(df):
        return statistics.NormalDist().inv_cdf(p)
    from scipy.special import stdtrit  # ruptures (change points) already brings scipy

    return float(stdtrit(df, p))


def upper_tail(stat: float, df: float) -> float:
    """P(T > stat) for Student t (normal for infinite df)."""
    if math.isinf(df):
        return 1 - statistics.NormalDist().cdf(stat)
    from scipy.special import stdtr

    return float(stdtr(df, -stat))


def worse_log(pct: float, direction: str) -> float:
    """A change of ``pct`` percent to the worse, as a distance on the log scale (a figure
    that is higher-better cannot lose 100% or more: that is infinitely far)."""
    if direction == "higher":
        return -math.log(1 - pct / 100) if pct < 100 else math.inf
    return math.log1p(pct / 100)


def worse_pct(log_change: float, direction: str) -> float:
    """The inverse of :func:`worse_log`."""
    return (-math.expm1(-log_change) if direction == "higher" else math.expm1(log_change)) * 100


def resolves(sd: float, df: float, n_a: float, n_b: float, alpha: float,
             floor_pct: float, direction: str, alpha_floor: float = 0.5) -> float:
    """The change to the worse (percent) caught at ``POWER``: the comparison's resolving
    power (``alpha_floor`` 0.5: the estimate past the floor is enough)."""
    se = sd * math.sqrt(1 / n_a + 1 / n_b)
    floor = worse_log(floor_pct, direction)
    if math.isinf(floor):
        return math.inf
    need = max(quantile(1 - alpha, df) * se, floor + quantile(1 - alpha_floor, df) * se) \
        + quantile(POWER, df) * se
    return worse_pct(need, direction) if need < 50 else math.inf


def starts_needed(sd: float, df: float, alpha: float | Callable[[int], float],
                  floor_pct: float, target_pct: float, direction: str, paired: bool = False,
                  alpha_floor: float = 0.5, *, dof: Callable[[int], float] | None = None
                  ) -> int | None:
    """Starts a side (balanced, as ``ab`` runs them) for ``target_pct`` to be caught at
    ``POWER``; None when no number of starts does it (the target is within the floor).
    More starts bring more degrees of freedom: the spread's own plus theirs; ``paired``
    (the spread is that of an A/B's own interleaved starts), theirs alone under the A/B's
    drift model (judge/comparison.py ``drift_df``); ``dof`` gives them for n starts a side
    where the caller knows its analysis better. ``alpha`` may depend on n: an A/B run to n
    starts a side judges its last look at the level its boundaries leave (``ab``)."""
    if target_pct <= floor_pct or math.isinf(worse_log(target_pct, direction)):
        return None
    if dof is None:
        dof = drift_df if paired else (lambda n: df + 2 * (n - 1))

    def enough(n: int) -> bool:
        level = alpha(n) if callable(alpha) else alpha
        return resolves(sd, dof(n), n, n, level, floor_pct, direction,
                        alpha_floor) <= target_pct

    if sd <= 0 or enough(2):
        return 2
    hi = 4
    while not enough(hi):
        if hi >= MAX_STARTS:
            return None
        hi *= 2
    lo = hi // 2
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if enough(mid) else (mid, hi)
    return hi
