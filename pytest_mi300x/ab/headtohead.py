"""Two builds head to head: interleaved server starts (A B B A ...), judged per metric on the
start-level data with the one verdict rule, stopping once every gated metric is decided.

Interleaving puts slow drift and start-to-start spread on both sides alike; the ABBA order
is symmetric, so a linear drift over the run cancels in the difference of the means.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from pytest_mi300x.ab.builds import Build
from pytest_mi300x.ab.starts import Record, RunStart, Start
from pytest_mi300x.judge.verdict import CONFIDENCE, Kind, Verdict, judge_all
from pytest_mi300x.results.metrics import GATED_METRICS, METRIC_DIRECTIONS

MIN_STARTS = 3
MAX_STARTS = 6


class StartFailed(RuntimeError):
    """A start measured nothing: the build could not run the selection."""


def abba(a: Build, b: Build, done: int) -> Build:
    """The build of the next start in A B B A A B B A ... after ``done`` starts."""
    return (a, b, b, a)[done % 4]


def judge(record: Record, a: Build, b: Build, *, threshold_pct: float | None = None,
          confidence: float = CONFIDENCE) -> dict[str, list[Verdict]]:
    """Per test, a verdict per metric both builds measured (B judged against A)."""
    out: dict[str, list[Verdict]] = {}
    for test in record.tests():
        floors, noise = record.thresholds(test)
        if threshold_pct is not None:
            floors = dict.fromkeys(METRIC_DIRECTIONS, threshold_pct)
        reps_a, starts_a = record.reps(a, test)
        reps_b, starts_b = record.reps(b, test)
        if reps_a and reps_b:
            out[test] = judge_all(reps_a, reps_b, baseline_starts=starts_a,
                                  candidate_starts=starts_b, floors=floors, noise=noise,
                                  confidence=confidence)
    return out


def undecided(verdicts: dict[str, list[Verdict]]) -> list[str]:
    """``test: metric`` of every gated metric more starts could still decide."""
    return [f"{test}: {v.metric}" for test, vs in verdicts.items() for v in vs
            if v.gated and v.needs_more]


@dataclass
class HeadToHead:
    """One A/B: the builds, how starts are made, and when to stop."""

    a: Build
    b: Build
    run_start: RunStart
    record: Record
    min_starts: int = MIN_STARTS
    max_starts: int = MAX_STARTS
    threshold_pct: float | None = None
    confidence: float = CONFIDENCE
    progress: Callable[[str], None] = print

    def run(self) -> dict[str, list[Verdict]]:
        """Start builds in ABBA order until every gated metric is decided (after at least
        ``min_starts`` each) or each build has ``max_starts``; a recorded start counts."""
        verdicts = judge(self.record, self.a, self.b, threshold_pct=self.threshold_pct,
                         confidence=self.confidence)
        while True:
            n_a, n_b = len(self.record.of(self.a)), len(self.record.of(self.b))
            if n_a >= self.min_starts and n_b >= self.min_starts and n_a == n_b:
                open_ = undecided(verdicts)
                if not open_ or n_a >= self.max_starts:
                    return verdicts
            build = abba(self.a, self.b, n_a + n_b)  # a resumed record continues the order
            start = self.run_start(build, len(self.record.of(build)) + 1)
            self._check(start)
            self.record.add(start)
            verdicts = judge(self.record, self.a, self.b, threshold_pct=self.threshold_pct,
                             confidence=self.confidence)
            self.progress(self._line(start, verdicts))

    def _check(self, start: Start) -> None:
        if not any(t.reps for t in start.tests.values()):
            problems = [p for t in start.tests.values() for p in t.problems]
            why = problems[0] if problems else f"pytest exited {start.rc}"
            raise StartFailed(f"build {start.build!r} measured nothing in start "
                              f"{start.index} ({why}); see {start.folder}/pytest.log")

    def _line(self, start: Start, verdicts: dict[str, list[Verdict]]) -> str:
        left = undecided(verdicts)
        if not verdicts:  # one side has no start yet: nothing is judged
            state = "waiting for the other build's first start"
        else:
            state = (f"{len(left)} gated metric(s) undecided" if left
                     else "every gated metric decided")
        return (f"start {start.index} of {start.build}: {start.seconds:.0f} s, "
                f"{sum(len(t.reps) for t in start.tests.values())} runs; {state}")


def regressed(verdicts: dict[str, list[Verdict]]) -> list[Verdict]:
    return [v for vs in verdicts.values() for v in vs if v.fails]


def table(verdicts: dict[str, list[Verdict]], gated_only: bool = True) -> list[str]:
    """Fixed-width lines: test, metric, A, B, B/A with its interval, verdict."""
    header = ["test", "metric", "A", "B", "B/A", "interval", "starts", "verdict"]
    rows = []
    for test, vs in verdicts.items():
        for v in vs:
            if gated_only and v.metric not in GATED_METRICS:
                continue
            lo, hi = v.interval_pct
            a = _mid(v.baseline_starts)
            b = _mid(v.candidate_starts)
            rows.append([test, v.metric, f"{a:.4g}", f"{b:.4g}",
                         f"{1 + v.change_pct / 100:.3f}",
                         f"{1 + lo / 100:.3f}..{1 + hi / 100:.3f}",
                         f"{len(v.baseline_starts)}+{len(v.candidate_starts)}",
                         v.kind.value.upper() if v.kind is Kind.REGRESSION else v.kind.value])
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    return ["  ".join(c.ljust(w) if i in (0, 1, 7) else c.rjust(w)
                      for i, (c, w) in enumerate(zip(r, widths, strict=True))).rstrip()
            for r in [header, ["-" * w for w in widths], *rows]]


def _mid(values: tuple[float, ...]) -> float:
    ordered = sorted(values)
    n = len(ordered)
    return ordered[n // 2] if n % 2 else (ordered[n // 2 - 1] + ordered[n // 2]) / 2
