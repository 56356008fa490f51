"""What a verdict is: its kind and the numbers that justify it (judge/verdict.py holds the
rule that makes one)."""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass


class Kind(enum.StrEnum):
    """What a comparison concluded."""

    REGRESSION = "regression"
    IMPROVEMENT = "improvement"
    NO_CHANGE = "no change"
    INCONCLUSIVE = "inconclusive"


def _fmt(value: float) -> str:
    return f"{value:.6g}"


def pct_text(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:+.1f}%"


def level_pct(confidence: float) -> str:
    """99%, 99.8%, 99.96%: as many digits as the level needs."""
    for digits in range(0, 4):
        text = f"{confidence * 100:.{digits}f}"
        if float(text) < 100 and abs(float(text) - confidence * 100) < 0.5 * 10 ** -digits:
            return text + "%"
    return f"{confidence * 100:.4f}%"


@dataclass(frozen=True)
class Verdict:
    """One metric's verdict with the numbers that justify it."""

    metric: str
    kind: Kind
    gated: bool
    direction: str
    baseline: tuple[float, ...]
    """Every baseline run's value (all starts, in order)."""
    candidate: tuple[float, ...]
    baseline_median: float
    candidate_median: float
    change_pct: float
    """The change of the mean start values, as a percent (B over A)."""
    threshold_pct: float
    reason: str
    interval_pct: tuple[float, float] = (math.nan, math.nan)
    """The change's two-sided interval at ``confidence``, as percents."""
    noise_pct: float = math.nan
    """The start-to-start noise the verdict used (a start value's CV)."""
    confidence: float = math.nan
    baseline_starts: tuple[float, ...] = ()
    """Each baseline start's median."""
    candidate_starts: tuple[float, ...] = ()
    needs_more: bool = False
    """Inconclusive only for lack of starts: more would decide it."""
    alpha: float = math.nan
    """The one-sided level this metric's regression call was held to."""
    noise_df: float = math.nan
    noise_source: str = ""
    p_worse: float = math.nan
    resolves_pct: float = math.nan
    """The change to the worse this comparison catches at 95% power."""
    target_pct: float = math.nan
    """The change the test must resolve to gate this metric (twice the floor)."""
    starts_needed: int | None = None
    """Starts a side (balanced) that catch ``target_pct`` at 95% power."""
    reference_resolves_pct: float = math.nan
    """What it would resolve at the reference's own noise, before today's steadiness
    widened it: a test that could gate there and cannot tonight is undecided."""
    suspect: bool = False
    """Worse past the floor at its level, on one server start of the candidate: a slowed
    start explains that as well as a slower build, so it is undecided, never a regression,
    until starts of both builds, head to head, say which."""
    items: int = 0
    """The questions a count was judged on (``scale`` "items")."""
    scale: str = "starts"
    """What the verdict's evidence is made of: "starts" (start values), "grid" (start values
    on a sweep's grid), "items" (per-question outcomes), "spread" (the spreads of starts or
    runs). More starts decide an undecided verdict of the first two only."""

    @property
    def fails(self) -> bool:
        """Whether this verdict should fail the test."""
        return self.gated and self.kind is Kind.REGRESSION

    @property
    def could_gate(self) -> bool:
        """Whether it resolves the change it must at the reference's own noise."""
        return self.reference_resolves_pct <= self.target_pct

    @property
    def decided(self) -> bool:
        return self.kind is not Kind.INCONCLUSIVE

    @property
    def can_gate(self) -> bool:
        """Whether this comparison resolves the change its metric must resolve."""
        return self.resolves_pct <= self.target_pct

    def resolution(self) -> str:
        """One line: what this comparison resolves, or why it cannot gate and what would."""
        if math.isnan(self.resolves_pct) or self.scale == "spread":
            return ""
        resolved = ("nothing" if math.isinf(self.resolves_pct)
                    else "no change short of 10x" if self.resolves_pct >= 900
                    else f"{self.resolves_pct:.0f}%" if self.resolves_pct >= 20
                    else f"{self.resolves_pct:.1f}%")
        if self.scale == "items":
            items = self.items
            word = "resolves" if self.can_gate else f"cannot gate at {self.target_pct:g}%:"
            return (f"{word} {resolved} of its right answers with {items} questions (an "
                    "exact sign test over the questions whose answers changed); more starts "
                    "add no questions")
        sides = f"{len(self.baseline_starts)}+{len(self.candidate_starts)} starts"
        if math.isnan(self.noise_pct):
            return (f"cannot gate at {self.target_pct:g}%: no start-to-start evidence ("
                    f"{sides}, no record of this test's starts): runs inside one start never "
                    "stand in for starts; give it more server starts (baselines refresh "
                    "--servers 5)")
        need = (f"a {self.target_pct:g}% change needs {self.starts_needed} starts a side in "
                "an A/B" if self.starts_needed is not None else
                f"no number of starts resolves {self.target_pct:g}% against its "
                f"{self.threshold_pct:g}% floor")
        df = "inf" if math.isinf(self.noise_df) else f"{self.noise_df:.3g}"
        if self.can_gate:
            return (f"resolves {resolved} with {sides} (spread {self.noise_pct:.1f}%, df {df}); "
                    f"{need}")
        return (f"cannot gate at {self.target_pct:g}%: its starts spread {self.noise_pct:.1f}% "
                f"(df {df}); {sides} resolve {resolved}; {need}")

    def to_dict(self) -> dict[str, object]:
        """Every number of the verdict, repetitions included (reports plot them)."""
        return {"metric": self.metric, "kind": self.kind.value, "gated": self.gated,
                "direction": self.direction, "baseline": list(self.baseline),
                "candidate": list(self.candidate), "baseline_median": self.baseline_median,
                "candidate_median": self.candidate_median, "change_pct": self.change_pct,
                "threshold_pct": self.threshold_pct,
                "interval_pct": list(self.interval_pct), "noise_pct": self.noise_pct,
                "confidence": self.confidence, "baseline_starts": list(self.baseline_starts),
                "candidate_starts": list(self.candidate_starts),
                "needs_more": self.needs_more, "reason": self.reason, "alpha": self.alpha,
                "noise_df": self.noise_df, "noise_source": self.noise_source,
                "p_worse": self.p_worse, "resolves_pct": self.resolves_pct,
                "target_pct": self.target_pct, "starts_needed": self.starts_needed,
                "can_gate": self.can_gate, "resolution": self.resolution(),
                "reference_resolves_pct": self.reference_resolves_pct,
                "could_gate": self.could_gate, "suspect": self.suspect, "scale": self.scale,
                "items": self.items}

    def message(self) -> str:
        """Human text: the verdict, every repetition and start, the change and its interval."""
        better = "higher" if self.direction == "higher" else "lower"
        role = "gated" if self.gated else "warn only"
        lo, hi = self.interval_pct
        lines = [
            f"{self.metric}: {'UNDECIDED' if self.suspect else self.kind.value.upper()} "
            f"({role}, {better} is better)",
            _side("baseline", self.baseline_median, self.baseline, self.baseline_starts),
            _side("candidate", self.candidate_median, self.candidate, self.candidate_starts),
            f"  change {pct_text(self.change_pct)} (mean of the starts), "
            f"{level_pct(self.confidence)} interval {pct_text(lo)} to {pct_text(hi)}, "
            f"start-to-start noise {self.noise_pct:.1f}% ({self.noise_source})",
            f"  floor {self.threshold_pct:.1f}% (a change within it is called at most 5% of "
            "the time)",
            f"  reason: {self.reason}",
        ]
        if self.resolution():
            lines.append(f"  {self.resolution()}")
        return "\n".join(lines)


def _side(name: str, median: float, values: tuple[float, ...],
          starts: tuple[float, ...]) -> str:
    runs = ", ".join(_fmt(v) for v in values) or "none"
    per_start = (f"; {len(starts)} server starts' medians: "
                 f"{', '.join(_fmt(m) for m in starts)}") if len(starts) > 1 else ""
    return f"  {name} median {_fmt(median)} over {len(values)} runs: {runs}{per_start}"
