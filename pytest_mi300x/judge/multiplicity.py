"""How many false alarms a night may raise, and how that budget is shared out.

The rate that matters is per night, not per metric: a nightly that fails an unchanged build
on one test in seven nights is switched off. So:

- the night's budget (``ALPHA_SESSION``, one-sided, per direction) is split evenly over the
  fleet's hosts (``--fleet-hosts``: each host's session spends its share) and then over the
  gated tests each session selected (Bonferroni; a test is judged when it runs, before the
  others are known), and no test gets more than ``ALPHA_TEST``;
- within a test, the gated metrics form one family judged by Holm's step-down, with request,
  output and total-token throughput counted once (under a fixed workload they are one ratio);
- repeated looks (``ab`` adding starts while undecided) spend a test's budget over the looks
  with group-sequential boundaries: Lan-DeMets' O'Brien-Fleming-type spending function on the
  information fraction (starts a side at the look over starts a side at the last look),
  the boundaries computed from the looks' real correlation (the statistic at a look shares
  all the starts of the looks before it) by recursive numerical integration over the looks
  (Armitage, McPherson and Rowe 1969; Jennison and Turnbull 2000, ch. 19). A look is
  judged at the boundary's nominal one-sided level, which the verdict applies to its
  Student t p-value (the significance-level approach to group-sequential t tests). The
  looks' levels then add up to more than the budget while the chance of any false alarm
  over them stays within it: a union bound (levels that add up to the budget) left the
  last of looks at 3..6 starts a side at 0.42 of it, these boundaries leave 0.87.
  ``benchmarks/ab_sim.py`` checks the rate by simulation of the rule as ``ab`` runs it.
"""

from __future__ import annotations

import functools
import math
import statistics
from collections.abc import Callable, Mapping

import numpy as np

from pytest_mi300x.results.metrics import THROUGHPUTS

ALPHA_TEST = 0.01
"""At most this false-alarm rate per test and direction (one-sided)."""
ALPHA_SESSION = 0.05
"""At most this false-alarm rate per session (a night) and direction, over all its tests."""
ALPHA_SAME = 0.05
"""How often a "no change" may be wrong about a change at the floor, per metric: such an
error raises no alarm (it misses one), so it is not held to the alarms' budget; repeated
looks spend it like the rest."""


def family_of(metric: str) -> str:
    """The family a gated metric counts in: the throughputs are one."""
    return "throughput" if metric in THROUGHPUTS else metric


def per_test_alpha(tests: int, *, alpha_test: float = ALPHA_TEST,
                   alpha_session: float = ALPHA_SESSION, hosts: int = 1) -> float:
    """Each of ``tests`` gated tests' share of the night's budget, on one of ``hosts``
    hosts whose sessions share it."""
    return min(alpha_test, alpha_session / max(1, hosts) / max(1, tests))


def holm(pvalues: Mapping[str, float], alpha: float,
         nominal: Callable[[float], float] | None = None) -> dict[str, float]:
    """Holm's step-down over families: the level each family's p-value was held to. A family
    rejects when its p-value is within its level; the first that does not stops the steps,
    and it and every family after it are held to the level of that step. ``nominal`` turns
    a step's share of the budget into the level a p-value is held to at this look (see
    :func:`look_level`): group-sequential boundaries pass a rejected family's share on to
    the others at every look (Maurer and Bretz 2013), so Holm holds over looks too."""
    levels: dict[str, float] = {}
    ordered = sorted(pvalues.items(), key=lambda kv: kv[1])
    m = len(ordered)
    stopped: float | None = None
    for rank, (family, p) in enumerate(ordered):
        share = alpha / (m - rank)
        level = stopped if stopped is not None else nominal(share) if nominal else share
        levels[family] = level
        if stopped is None and p > level:
            stopped = level
    return levels


def spent(alpha: float, fraction: float) -> float:
    """Lan-DeMets' O'Brien-Fleming-type spending function: how much of ``alpha`` (one-sided)
    the looks up to information ``fraction`` (0-1] may spend, 2 - 2 Phi(z_(1-alpha/2) / sqrt
    t). Almost nothing early (at half the starts, 0.3% of a 1% budget), all of it at 1."""
    normal = statistics.NormalDist()
    return 2 - 2 * normal.cdf(normal.inv_cdf(1 - alpha / 2) / math.sqrt(fraction))


_GRID = 401
"""Points of the integration grid per look (odd, for Simpson's rule): the boundaries of
Jennison and Turnbull's tables to 3-4 decimals."""
_FAR = 8.0
"""Standard deviations below which the statistic's density is left out (below 1e-15)."""
_MAX_Z = 8.5
"""A boundary no look can cross (the budget left for it is below 1e-17)."""
MIN_LEVEL = 1e-6
"""The least level a look is held to. An early look of a long sequence (3 of 16 starts a side)
would be held to 1e-12 or less, a boundary no change can cross, whose Student t quantile at
2 degrees of freedom (1e6) no interval can be drawn with; held to 1e-6 instead, such a look
spends 1e-6 more than its boundary, a thousandth of a test's smallest share."""


def _simpson(n: int, step: float) -> np.ndarray:
    weights = np.ones(n)
    weights[1:-1:2], weights[2:-1:2] = 4.0, 2.0
    return weights * step / 3


@functools.lru_cache(maxsize=256)
def boundaries(alpha: float, fractions: tuple[float, ...]) -> tuple[float, ...]:
    """One-sided z boundaries of looks at information ``fractions`` (increasing, the last 1)
    that together spend ``alpha`` by :func:`spent`: look k crosses with probability
    spent(t_k) - spent(t_(k-1)) under no change, having crossed at no earlier look.

    The statistic at each look is the sum S_k of the information so far (Brownian motion on
    the information scale: independent increments of variance t_k - t_(k-1)); the density
    of S_k among the paths that crossed at no look so far is carried from look to look on a
    grid (Simpson's rule), and each boundary solved for its share."""
    from scipy.optimize import brentq
    from scipy.special import ndtr  # the normal cdf as a bare ufunc: 100x scipy.stats' cost

    if not fractions or fractions[-1] != 1.0 or any(
            b <= a for a, b in zip((0.0, *fractions), fractions, strict=False)):
        raise ValueError(f"information fractions {fractions} must increase to 1")
    if not 0 < alpha < 0.5:
        raise ValueError(f"alpha {alpha} must be in (0, 0.5)")
    out: list[float] = []
    # The sub-density of S among paths not stopped yet, on a grid (start: a point mass at 0).
    grid, weights, density = np.zeros(1), np.ones(1), np.ones(1)
    before = 0.0
    for t in fractions:
        share = spent(alpha, t) - (spent(alpha, before) if before else 0.0)
        step = math.sqrt(t - before)

        def crossing(z: float, t: float = t, step: float = step, grid: np.ndarray = grid,
                     mass: np.ndarray = weights * density) -> float:
            return float(np.sum(mass * ndtr((grid - z * math.sqrt(t)) / step)))

        z = _MAX_Z if crossing(_MAX_Z) >= share else float(brentq(
            lambda x, f=crossing, share=share: f(x) - share, -_MAX_Z, _MAX_Z, xtol=1e-10))
        out.append(z)
        top = z * math.sqrt(t)
        new_grid = np.linspace(min(-_FAR * math.sqrt(t), top - 1.0), top, _GRID)
        kernel = np.exp(-0.5 * ((new_grid[:, None] - grid[None, :]) / step) ** 2) \
            / (step * math.sqrt(2 * math.pi))
        density = kernel @ (weights * density)
        grid, weights = new_grid, _simpson(_GRID, float(new_grid[1] - new_grid[0]))
        before = t
    return tuple(out)


def look_fractions(first: int, last: int) -> tuple[float, ...]:
    """Information fractions of looks at every balanced count ``first``..``last`` starts a
    side: a look's information grows with its starts."""
    if not 1 <= first <= last:
        raise ValueError(f"looks {first}..{last} starts a side: need 1 <= first <= last")
    return tuple(n / last for n in range(first, last + 1))


def look_level(alpha: float, look: int, first: int, last: int) -> float:
    """The nominal one-sided level of the look at ``look`` starts a side, where looks come at
    every balanced count from ``first`` to ``last`` and spend ``alpha`` together
    (:func:`boundaries`)."""
    if not first <= look <= last:
        raise ValueError(f"look at {look} starts is outside the looks {first}..{last}")
    z = boundaries(alpha, look_fractions(first, last))[look - first]
    return max(statistics.NormalDist().cdf(-z), MIN_LEVEL)
