"""The seed guide's claims as checks on figures measured in one session.

A claim says one setting beats another on a metric ("the 2nd run has a lower TTFT than
the fresh run"; "a much smaller --max-num-seqs lowers throughput"). Both sides are
measured by the same session on the same machine, so the check compares them with each
other, never with a number from the seed's MI300X: it holds on a fast or a slow machine
alike. The rule is the verdicts' (judge/verdict.py): with the worse side as the baseline
and the better side as the candidate, the claim holds when the better side is an
IMPROVEMENT past the claim's stated margin, its interval clear of no change. It is
REVERSED when the same rule finds the other side better past that margin; otherwise (an
effect smaller than the margin, or one the runs cannot tell from their noise) it is NOT
SHOWN: on a shared machine that is no failure of the build, and the claim test reports it
as an expected failure with this run's figures (plugin/claims.py). Only a reversal fails.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from pytest_mi300x.judge.verdict import Kind, Verdict, judge_starts
from pytest_mi300x.results.model import FailureKind


class ClaimNotShown(AssertionError):
    """A seed claim the session's own figures do not bear out."""

    failure_kind = FailureKind.CLAIM


class ClaimReversed(ClaimNotShown):
    """A seed claim the session's own figures contradict: the other side is clearly better."""


@dataclass(frozen=True)
class Claim:
    """One of the seed's claims, as a relative check with a stated margin."""

    name: str
    statement: str
    """What the seed says, in its words (and where)."""
    metric: str
    better: str
    """The side the seed says wins (a label: a flag set, "2nd run")."""
    worse: str
    margin_pct: float
    """The better side must beat the other by more than this (in the metric's direction)."""

    def __post_init__(self) -> None:
        if not math.isfinite(self.margin_pct) or self.margin_pct < 0:
            raise ValueError(f"claim {self.name}: margin_pct must be >= 0, "
                             f"got {self.margin_pct!r}")


@dataclass(frozen=True)
class ClaimCheck:
    """A claim against the figures: whether it holds, and the numbers that say so."""

    claim: Claim
    holds: bool
    verdict: Verdict

    @property
    def reversed(self) -> bool:
        """The other side is better past the claim's margin, its interval clear of zero (on
        one start a side too: a claim is one session's question about its own figures, not
        a night's alarm, which one slowed start must not raise)."""
        return self.verdict.kind is Kind.REGRESSION or self.verdict.suspect

    @property
    def outcome(self) -> str:
        return "holds" if self.holds else "reversed" if self.reversed else "not shown"

    def message(self) -> str:
        """This run's figures on the first line (what tables show), then the seed's words,
        every run and the verdict."""
        c, v = self.claim, self.verdict
        word = {"holds": "holds", "reversed": "is reversed"}.get(self.outcome, "is not shown")
        lo, hi = v.interval_pct
        span = "n/a" if math.isnan(lo) else f"{lo:+.1f}% to {hi:+.1f}%"
        return "\n".join([
            f"seed claim {c.name!r} {word} on this host: {c.metric} {c.better} "
            f"{v.candidate_median:.4g} vs {c.worse} {v.baseline_median:.4g} "
            f"({_change(v.change_pct)}; needed: {c.better} better by more than "
            f"{c.margin_pct:g}%, {v.confidence:.0%} interval {span})",
            f"  the seed: {c.statement}",
            f"  {c.better} runs: {_values(v.candidate)}; {c.worse} runs: {_values(v.baseline)}",
            f"  verdict: {v.kind.value}: {v.reason}",
        ])

    def check(self) -> ClaimCheck:
        """Raise ClaimReversed when reversed, ClaimNotShown when not shown; return self when
        the claim holds."""
        if self.reversed:
            raise ClaimReversed(self.message())
        if not self.holds:
            raise ClaimNotShown(self.message())
        return self


def _change(pct: float) -> str:
    return "change n/a" if math.isnan(pct) else f"{pct:+.1f}%"


def _values(values: Sequence[float]) -> str:
    return ", ".join(f"{v:.4g}" for v in values) or "none"


def check_claim(claim: Claim, better: Sequence[Mapping[str, float]],
                worse: Sequence[Mapping[str, float]], *,
                better_starts: Sequence[int] = (), worse_starts: Sequence[int] = (),
                noise_pct: float = 0.0) -> ClaimCheck:
    """Judge ``better``'s repetitions against ``worse``'s on the claim's metric.

    ``*_starts`` name each repetition's server start (one start when empty); ``noise_pct``
    is the host's recorded start-to-start noise for the metric, for sides served by
    different servers (0 when both sides ran on one server).
    """
    def starts(reps: Sequence[Mapping[str, float]], ids: Sequence[int]) -> list[list[float]]:
        ids = list(ids) or [0] * len(reps)
        groups: dict[int, list[float]] = {}
        for rep, start in zip(reps, ids, strict=True):
            if claim.metric in rep:
                groups.setdefault(start, []).append(float(rep[claim.metric]))
        return list(groups.values())

    # Held to 0.5% a side (a 99% interval): a claim is one question, not a night's family.
    # One server (no host noise given): both sides share its start, so their runs are the
    # unit; two servers are two starts, and their runs never stand in for starts.
    verdict = judge_starts(claim.metric, starts(worse, worse_starts),
                           starts(better, better_starts), threshold_pct=claim.margin_pct,
                           noise_floor_pct=noise_pct, confidence=0.99,
                           same_start=noise_pct == 0 and not better_starts and not worse_starts)
    return ClaimCheck(claim, verdict.kind is Kind.IMPROVEMENT, verdict)


@dataclass(frozen=True)
class NearCheck:
    """A measured rate against the one the workload implies."""

    name: str
    measured: Sequence[float]
    implied: float
    tolerance: float

    @property
    def holds(self) -> bool:
        return bool(self.measured) and all(abs(m - self.implied) <= self.tolerance
                                           for m in self.measured)

    def message(self) -> str:
        got = ", ".join(f"{m:.3f}" for m in self.measured) or "nothing measured"
        word = "holds" if self.holds else "is not shown"
        return (f"{self.name} {word}: measured {got} per repetition, the workload implies "
                f"{self.implied:.3f} (allowed: within {self.tolerance:g})")

    def check(self) -> NearCheck:
        if not self.holds:
            raise ClaimNotShown(self.message())
        return self


def check_near(name: str, measured: Sequence[float | None], implied: float,
               tolerance: float) -> NearCheck:
    """Every repetition's rate within ``tolerance`` of ``implied`` (a missing one fails)."""
    values = [float(m) for m in measured if m is not None and math.isfinite(float(m))]
    if len(values) != len(measured):
        values = []  # a repetition without the figure: nothing to vouch for
    return NearCheck(name, tuple(values), implied, tolerance)


def second_run_hit_rate(prompt_lens: Sequence[int], block_size: int) -> float:
    """The prefix-cache hit rate a 2nd run implies: every prompt was sent before, so every
    full block of it but the last token's is cached (vLLM always computes the last prompt
    token, and caches whole blocks only)."""
    if block_size < 1:
        raise ValueError(f"block_size must be >= 1, got {block_size}")
    total = sum(prompt_lens)
    cached = sum((n - 1) // block_size * block_size for n in prompt_lens)
    return cached / total if total else math.nan
