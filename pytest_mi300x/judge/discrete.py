"""Figures that are counts, judged as what they are: the accuracy check's right answers by an
exact paired test on its questions.

Under greedy decoding every run of a build gives the same answers, so a spread of starts or
runs says nothing of how many answers a build could lose by chance, and a t test on them
finds any difference "significant" (p = 0, a zero-width interval). The unit is the
question: each question's outcome on the baseline side against the candidate's (the share
of its runs that answered it right), and under no change a question that changed is as
likely to have been lost as gained. The regression test is the exact sign test over the
changed questions (McNemar's exact test), one-sided; the change is the relative change of
right answers; what it resolves is the smallest loss (all questions lost, none gained)
that is significant at the level and past the floor. More starts add no questions: an
undecided count is no reason to start more servers.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

from pytest_mi300x.judge import power
from pytest_mi300x.judge.model import Kind, Verdict
from pytest_mi300x.results.metrics import items_of


@dataclass(frozen=True)
class ItemsComparison:
    """One count figure's numbers before any decision."""

    metric: str
    gated: bool
    threshold_pct: float
    flat_b: tuple[float, ...]
    flat_c: tuple[float, ...]
    items: int = 0
    lost: int = 0
    gained: int = 0
    right_b: float = math.nan
    """Right answers on the baseline side (each question counted by its share of runs)."""
    right_c: float = math.nan
    problem: str = ""
    direction: str = "higher"

    def p(self, side: str, past_pct: float = 0.0) -> float:
        """One-sided exact p-value of the sign test (the floor plays no part: the drop of
        right answers is counted, not estimated)."""
        if self.problem:
            return 1.0
        k = self.lost if side == "worse" else self.gained
        n = self.lost + self.gained
        if n == 0:
            return 1.0
        from scipy.stats import binom

        return float(binom.sf(k - 1, n, 0.5))

    @property
    def drop_pct(self) -> float:
        """Right answers lost, as a percent of the baseline's."""
        if not self.right_b:
            return math.nan if not self.right_c else -math.inf
        return (self.right_b - self.right_c) / self.right_b * 100


def _shares(reps: Sequence[Mapping[str, float]]) -> list[float] | None:
    runs = [items_of(dict(r)) for r in reps]
    if not runs or any(r is None for r in runs) or len({len(r or []) for r in runs}) != 1:
        return None
    return [statistics.fmean(float(r[i]) for r in runs if r is not None)
            for i in range(len(runs[0] or []))]


def compare_items(metric: str, baseline: Sequence[Mapping[str, float]],
                  candidate: Sequence[Mapping[str, float]], *, threshold_pct: float,
                  gated: bool) -> ItemsComparison:
    """The questions' outcomes of both sides, paired question by question."""
    flat_b = tuple(float(r[metric]) for r in baseline if metric in r)
    flat_c = tuple(float(r[metric]) for r in candidate if metric in r)
    plain = ItemsComparison(metric, gated, threshold_pct, flat_b, flat_c)
    b, c = _shares(baseline), _shares(candidate)
    if b is None or c is None:
        side = "baseline" if b is None else "candidate"
        return replace(plain, problem=(
            f"the {side} recorded no per-question outcomes (a result from before they were "
            "kept): a count is judged question by question; refresh the baseline"))
    if len(b) != len(c):
        return replace(plain, problem=(
            f"{len(b)} questions against {len(c)}: not the same questions"))
    return ItemsComparison(metric, gated, threshold_pct, flat_b, flat_c, items=len(b),
                           lost=sum(x > y for x, y in zip(b, c, strict=True)),
                           gained=sum(x < y for x, y in zip(b, c, strict=True)),
                           right_b=sum(b), right_c=sum(c))


def resolves(right_b: float, items: int, alpha: float, floor_pct: float) -> float:
    """The smallest loss of right answers (percent of the baseline's) that is significant at
    ``alpha`` with no question gained and past the floor: inf when no loss is."""
    if right_b <= 0:
        return math.inf
    significant = math.ceil(math.log(alpha) / math.log(0.5))
    past_floor = math.floor(floor_pct / 100 * right_b) + 1
    lost = max(significant, past_floor)
    return math.inf if lost > right_b else lost / right_b * 100


def decide_items(c: ItemsComparison, alpha: float, alpha_better: float | None = None, *,
                 detail: str = "") -> Verdict:
    """The verdict of a count: a regression when the sign test is significant at ``alpha``
    and the drop is past the floor; "no change" when the drop is within the floor and the
    questions could have shown twice the floor; otherwise undecided, with no more starts
    asked for."""
    alpha_better = alpha if alpha_better is None else alpha_better
    target = power.TARGET_FACTOR * c.threshold_pct
    base = Verdict(metric=c.metric, kind=Kind.INCONCLUSIVE, gated=c.gated,
                   direction=c.direction, baseline=c.flat_b, candidate=c.flat_c,
                   baseline_median=_median(c.flat_b), candidate_median=_median(c.flat_c),
                   change_pct=math.nan, threshold_pct=c.threshold_pct, reason="",
                   alpha=alpha, confidence=1 - 2 * alpha, target_pct=target, scale="items",
                   items=c.items)
    if c.problem:
        return replace(base, reason=c.problem)
    found = resolves(c.right_b, c.items, alpha, c.threshold_pct)
    drop = c.drop_pct
    change = -drop if math.isfinite(drop) else math.nan
    numbers = replace(base, change_pct=change, p_worse=c.p("worse"), resolves_pct=found,
                      reference_resolves_pct=found)
    held = f" ({detail})" if detail else ""
    counts = (f"{c.right_b:g} -> {c.right_c:g} right of {c.items} questions: {c.lost} lost, "
              f"{c.gained} gained")
    if c.p("worse") <= alpha and drop > c.threshold_pct:
        return replace(numbers, kind=Kind.REGRESSION, reason=(
            f"{counts}; an exact sign test over the {c.lost + c.gained} changed questions "
            f"gives p={c.p('worse'):.2g} for no worse, within its level {alpha:.2g}{held}, and "
            f"{drop:.1f}% of the right answers lost is past the {c.threshold_pct:g}% floor"))
    if c.p("better") <= alpha_better and -drop > c.threshold_pct:
        return replace(numbers, kind=Kind.IMPROVEMENT, reason=(
            f"{counts}; an exact sign test gives p={c.p('better'):.2g} for no better, within "
            f"its level {alpha_better:.2g}{held}"))
    if found <= target and abs(drop) <= c.threshold_pct:
        return replace(numbers, kind=Kind.NO_CHANGE, reason=(
            f"{counts}: within the {c.threshold_pct:g}% floor, with questions enough to see "
            f"a loss of {found:.0f}%"))
    return replace(numbers, reason=(
        f"{counts}; an exact sign test gives p={c.p('worse'):.2g} for no worse (level "
        f"{alpha:.2g}{held}): undecided, and more starts add no questions"))


def _median(values: Sequence[float]) -> float:
    finite = [v for v in values if math.isfinite(v)]
    return float(statistics.median(finite)) if finite else math.nan
