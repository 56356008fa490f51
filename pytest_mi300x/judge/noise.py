"""A test's start-to-start noise: measured on its own starts, with its degrees of freedom.

Noise belongs to the test, on the machine where it runs: one start of the same build is
faster or slower than the next for its whole life, by an amount that differs by test (a
40-prompt burst with chunked prefill spread 16-20% where a steadier test spread 1-2%) and by
machine and day. So every verdict's noise is the test's own:

1. the starts being compared (both sides' start values around their own side's mean);
2. the test's stored record (its baseline's starts and the evidence of earlier A/B runs and
   steadiness checks on this host, kept in its baseline file, dated, weighted to the recent
   days and screened for slowed starts: judge/records.py), where the starts compared have
   none, or added to them in the gate;
3. the host's recorded noise only for a test with no starts of its own at all.

The host's record is never pooled with a test's own spread: with a few starts an F test
cannot tell a 2% host from a 5% test, and pooling would lend the prior's degrees of freedom
to a spread it does not describe (a simulation of the gate at 5% noise against a 2% record
failed 7% of unchanged tests that way). The two are still tested against each other, and
the verdict says whether the test is in line with its host. A machine found noisier than its
record today (judge/steadiness.py) widens the spread by the factor measured. All on the log
scale: a start's value is the median of its runs' logs.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

HOST_RECORD_DF = 10
"""The degrees of freedom a host's recorded noise is taken with, for a test with no starts
of its own (it was measured over many starts)."""
AGREEMENT_LEVEL = 0.05
"""Two-sided level of the F tests that compare two spreads (a test's with its host's, today's
with a record)."""


MEDIAN_VARIANCE = {1: 1.0, 2: 1.0, 3: 1.345, 4: 1.193, 5: 1.436, 6: 1.289, 7: 1.475,
                   8: 1.347, 9: 1.493, 10: 1.382}
"""k times the variance of the median of k normal runs, in run variances (simulated over
4 million draws each): a start's value is its runs' median, 1.16 to 1.2 times as spread
as their mean for 3 to 5 runs. Past 10 runs, pi/2, the large-sample value."""


def median_variance(runs: float) -> float:
    """The variance of a start value (the median of ``runs`` runs) over a run's variance."""
    k = max(1, round(runs))
    return MEDIAN_VARIANCE.get(k, math.pi / 2) / k


@dataclass(frozen=True)
class Spread:
    """The spread of one start's value on the log scale, its degrees of freedom and source."""

    sd: float
    df: float
    source: str

    @property
    def pct(self) -> float:
        """The spread as a percent (a start value's coefficient of variation)."""
        return math.expm1(self.sd) * 100

    @classmethod
    def from_pct(cls, pct: float, df: float, source: str) -> Spread:
        return cls(math.log1p(pct / 100), df, source)

    def describe(self) -> str:
        df = "inf" if math.isinf(self.df) else f"{self.df:g}"
        return f"{self.pct:.1f}% (df {df}; {self.source})"


@dataclass(frozen=True)
class SumSq:
    """Squared deviations of log start values from their group's mean, summed, and their
    degrees of freedom: the form in which noise evidence adds up across sources."""

    ss: float = 0.0
    df: float = 0
    """Degrees of freedom: whole for starts counted once, fractional once a record's entries
    are weighted by their age (judge/records.py)."""

    def __add__(self, other: SumSq) -> SumSq:
        return SumSq(self.ss + other.ss, self.df + other.df)

    def spread(self, source: str) -> Spread | None:
        return Spread(math.sqrt(self.ss / self.df), self.df, source) if self.df > 0 else None

    def to_list(self) -> list[float]:
        return [self.ss, self.df]

    @classmethod
    def from_list(cls, value: Sequence[float]) -> SumSq:
        ss, df = float(value[0]), float(value[1])
        if not (math.isfinite(ss) and ss >= 0 and df >= 0):
            raise ValueError(f"not a sum of squares and degrees of freedom: {list(value)!r}")
        return cls(ss, df)


def sumsq_of(groups: Iterable[Sequence[float]]) -> SumSq:
    """Evidence from groups of log start values, each group one build (its own mean)."""
    total = SumSq()
    for group in groups:
        if len(group) >= 2:
            mean = statistics.fmean(group)
            total += SumSq(sum((v - mean) ** 2 for v in group), len(group) - 1)
    return total


def start_logs(starts: Sequence[Sequence[float]]) -> list[float]:
    """Each start's value (the median of its runs) on the log scale; starts with a value
    that is not a positive finite number are left out."""
    out = []
    for runs in starts:
        good = [v for v in runs if math.isfinite(v) and v > 0]
        if good:
            out.append(statistics.median(math.log(v) for v in good))
    return out


def agreement(own: Spread, prior: Spread) -> float:
    """Two-sided p-value of an F test: could both spreads be the same noise?"""
    from scipy.stats import f  # ruptures (change points) already brings scipy

    ratio = (own.sd / prior.sd) ** 2 if prior.sd > 0 else math.inf
    if math.isinf(ratio):
        return 0.0
    d1, d2 = own.df, prior.df
    if math.isinf(d2):  # a prior known exactly: chi-square on own.df
        from scipy.stats import chi2

        lower = float(chi2.cdf(ratio * d1, d1))
    else:
        lower = float(f.cdf(ratio, d1, d2))
    return min(1.0, 2 * min(lower, 1 - lower))


def against_host(own: Spread, host: Spread | None) -> Spread:
    """``own`` with a word on how it compares with the host's record (an F test): said, not
    pooled."""
    if host is None:
        return own
    p = agreement(own, host)
    word = ("in line with" if p >= AGREEMENT_LEVEL
            else "above" if own.sd > host.sd else "below")
    return Spread(own.sd, own.df, f"{own.source}; {word} the host's record "
                                  f"{host.pct:.1f}% (p={p:.2g})")


def host_prior(pct: float) -> Spread | None:
    return (Spread.from_pct(pct, HOST_RECORD_DF, "the host's record")
            if pct and pct > 0 else None)


def estimate(fresh: SumSq, record: SumSq | None, host_pct: float, *,
             fresh_source: str = "these starts", pool_record: bool = False) -> Spread | None:
    """The spread a verdict uses: the test's own, where it has any.

    - ``fresh``: the starts compared (an A/B's, measured here today) speak for themselves
      as soon as they have a degree of freedom;
    - ``record``: the test's stored evidence stands in only where the starts compared have
      none; with ``pool_record`` (the gate, whose baseline starts are themselves part of
      the record, measured on another day) the two add up;
    - the host's record is a prior for a test that has no starts of its own at all, never
      pooled with a test's own spread: with a few starts an F test cannot tell a 2% host
      from a 5% test, and pooling them would claim the prior's degrees of freedom for the
      test's spread.

    Today's steadiness widens it afterwards (judge/comparison.py)."""
    stored = record.spread("the test's record") if record is not None else None
    if pool_record and record is not None:
        spread = (fresh + record).spread(f"{fresh_source} and the test's record"
                                         if record.df else fresh_source)
    else:
        spread = fresh.spread(fresh_source) or stored
    if spread is None:
        spread = host_prior(host_pct)
        if spread is not None:
            spread = Spread(spread.sd, spread.df,
                            "the host's record (the test has no starts of its own to measure)")
    else:
        spread = against_host(spread, host_prior(host_pct))
    return spread
