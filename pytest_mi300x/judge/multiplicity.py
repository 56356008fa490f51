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
  with a Kim-DeMets power function, t**3, close to O'Brien-Fleming: little at the first look,
  most at the last; since the looks' levels add up to the budget, the rate holds whatever
  the looks' correlation.
"""

from __future__ import annotations

from collections.abc import Mapping

from pytest_mi300x.results.metrics import THROUGHPUTS

ALPHA_TEST = 0.01
"""At most this false-alarm rate per test and direction (one-sided)."""
ALPHA_SESSION = 0.05
"""At most this false-alarm rate per session (a night) and direction, over all its tests."""
ALPHA_SAME = 0.05
"""How often a "no change" may be wrong about a change at the floor, per metric: such an
error raises no alarm (it misses one), so it is not held to the alarms' budget; repeated
looks spend it like the rest."""
SPENDING_POWER = 3.0


def family_of(metric: str) -> str:
    """The family a gated metric counts in: the throughputs are one."""
    return "throughput" if metric in THROUGHPUTS else metric


def per_test_alpha(tests: int, *, alpha_test: float = ALPHA_TEST,
                   alpha_session: float = ALPHA_SESSION, hosts: int = 1) -> float:
    """Each of ``tests`` gated tests' share of the night's budget, on one of ``hosts``
    hosts whose sessions share it."""
    return min(alpha_test, alpha_session / max(1, hosts) / max(1, tests))


def holm(pvalues: Mapping[str, float], alpha: float) -> dict[str, float]:
    """Holm's step-down over families: the level each family's p-value was held to. A family
    rejects when its p-value is within its level; the first that does not stops the steps,
    and it and every family after it are held to the level of that step."""
    levels: dict[str, float] = {}
    ordered = sorted(pvalues.items(), key=lambda kv: kv[1])
    m = len(ordered)
    stopped: float | None = None
    for rank, (family, p) in enumerate(ordered):
        level = stopped if stopped is not None else alpha / (m - rank)
        levels[family] = level
        if stopped is None and p > level:
            stopped = level
    return levels


def spent(alpha: float, look: int, first: int, last: int) -> float:
    """The level of the look at ``look`` starts a side, where looks come at every balanced
    count from ``first`` to ``last``: the spending function's increase since the look
    before (the first look also spends what lies before it). The levels add up to
    ``alpha`` over the looks."""
    if not 1 <= first <= last or not first <= look <= last:
        raise ValueError(f"look at {look} starts is outside the looks {first}..{last}")
    before = _share(look - 1, last) if look > first else 0.0
    return alpha * (_share(look, last) - before)


def _share(n: int, last: int) -> float:
    return (min(n, last) / last) ** SPENDING_POWER
