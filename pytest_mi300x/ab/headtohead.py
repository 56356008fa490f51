"""Two builds head to head: interleaved server starts (A B B A ...), judged per metric on the
start-level data with the one verdict rule, at balanced looks only.

Interleaving puts slow drift and start-to-start spread on both sides alike, and the verdict
fits what drift there is (judge/comparison.py: a regression of the start values on the side
and a quadratic in the starts' order, on every start of both sides): the ABBA order keeps
the side nearly orthogonal to the drift, best when both sides have as many starts, so
verdicts are taken only at balanced looks (n starts a side, from ``min_starts`` to
``max_starts``). The looks share each test's false-alarm budget through group-sequential
boundaries (judge/multiplicity.py: O'Brien-Fleming-type spending on the information
fraction, boundaries from the looks' real correlation), so adding starts while a metric is
undecided does not raise the rate of false alarms; the budget is the session's, split over
the tests selected. ``benchmarks/ab_sim.py`` simulates the rule as this runs it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace

from pytest_mi300x.ab.builds import Build
from pytest_mi300x.ab.starts import Record, RunStart, Start
from pytest_mi300x.judge import multiplicity, power
from pytest_mi300x.judge.noise import SumSq
from pytest_mi300x.judge.verdict import ALPHA_FLOOR, Kind, Verdict, judge_all
from pytest_mi300x.results.metrics import GATED_METRICS, METRIC_DIRECTIONS

MIN_STARTS = 3
MAX_STARTS = 6
NEEDED_LOOKS = 64
"""The longest A/B whose own boundaries size the starts a test needs (see ``needing``)."""

Records = Callable[[str], Mapping[str, SumSq]]
"""A test's stored noise evidence per metric (judge/noise.py), by test id."""


class StartFailed(RuntimeError):
    """A start measured nothing: the build could not run the selection."""

    def __init__(self, message: str, build: str = "") -> None:
        super().__init__(message)
        self.build = build


def abba(a: Build, b: Build, done: int) -> Build:
    """The build of the next start in A B B A A B B A ... after ``done`` starts."""
    return (a, b, b, a)[done % 4]


def next_build(a: Build, b: Build, n_a: int, n_b: int) -> Build:
    """The side with fewer starts, else the ABBA order: a resumed or inherited record
    continues where its counts stand."""
    if n_a != n_b:
        return a if n_a < n_b else b
    return abba(a, b, n_a + n_b)


@dataclass(frozen=True)
class Looks:
    """Balanced looks at ``first``..``last`` starts a side, sharing each test's budget."""

    first: int
    last: int

    def at(self, n: int) -> int:
        """The look a count of starts a side is judged as (a record may hold more)."""
        return min(max(n, self.first), self.last)

    def level(self, share: float, n: int) -> float:
        """The level a share of a test's budget is held to at the look at ``n``."""
        return multiplicity.look_level(share, self.at(n), self.first, self.last)

    def describe(self, alpha: float) -> str:
        levels = ", ".join(f"{n}: {self.level(alpha, n):.2g}"
                           for n in range(self.first, self.last + 1))
        return (f"looks at {self.first}..{self.last} starts a side share each test's "
                f"{alpha:.2g} by O'Brien-Fleming-type group-sequential boundaries (levels "
                f"{levels}); each metric judged on both sides' starts with the machine's "
                "drift fitted (side and a quadratic in the starts' order)")


def in_time(record: Record, build: Build, test: str) -> tuple[list[dict[str, float]], list[int]]:
    """Every valid run of ``test`` under ``build``, each with its start's position in the
    record (time order): the drift model needs when each start ran."""
    reps: list[dict[str, float]] = []
    positions: list[int] = []
    for position, s in enumerate(record.starts):
        runs = s.tests.get(test)
        if s.build == build.name and runs is not None:
            reps += runs.reps
            positions += [position] * len(runs.reps)
    return reps, positions


def judge(record: Record, a: Build, b: Build, *, alpha: float = multiplicity.ALPHA_TEST,
          alpha_same: float = multiplicity.ALPHA_SAME, threshold_pct: float | None = None,
          records: Records | None = None, detail: str = "",
          look: Callable[[float], float] | None = None) -> dict[str, list[Verdict]]:
    """Per test, a verdict per metric both builds measured (B judged against A), each test's
    ``alpha`` held at this look by ``look``."""
    out: dict[str, list[Verdict]] = {}
    for test in record.tests():
        floors, noise = record.thresholds(test)
        if threshold_pct is not None:
            floors = dict.fromkeys(METRIC_DIRECTIONS, threshold_pct)
        reps_a, starts_a = in_time(record, a, test)
        reps_b, starts_b = in_time(record, b, test)
        if reps_a and reps_b:
            out[test] = judge_all(reps_a, reps_b, baseline_starts=starts_a,
                                  candidate_starts=starts_b, floors=floors, noise=noise,
                                  records=records(test) if records else None, alpha=alpha,
                                  alpha_same=alpha_same, paired=True, detail=detail,
                                  look=look)
    return out


def needing(verdicts: list[Verdict], alpha: float, looks: Looks) -> list[Verdict]:
    """The verdicts with the starts a side a test's metric needs re-counted for an A/B
    (``ab --max-starts N``): judged at the last of looks from ``looks.first`` to N, where
    the boundaries leave most of the budget, with the drift model's degrees of freedom;
    not at this look's level, which the looks still to come share."""
    share = alpha / max(1, len({multiplicity.family_of(v.metric) for v in verdicts
                                if v.gated}))

    def level(n: int) -> float:
        # Past NEEDED_LOOKS starts a side, the level of a design that ends there: the
        # count is then a lower bound (more looks leave the last a little less).
        n = min(n, NEEDED_LOOKS)
        return multiplicity.look_level(share, n, min(looks.first, n), n)

    out = []
    for v in verdicts:
        if v.gated and not v.decided and v.noise_pct == v.noise_pct:
            sd = math.log1p(v.noise_pct / 100)
            v = replace(v, starts_needed=power.starts_needed(
                sd, v.noise_df, level, v.threshold_pct, v.target_pct, v.direction,
                alpha_floor=ALPHA_FLOOR, dof=power.drift_df))
        out.append(v)
    return out


def undecided(verdicts: dict[str, list[Verdict]]) -> list[str]:
    """``test: metric`` of every gated metric still inconclusive that more starts could
    decide (a count's questions do not grow with starts: judge/discrete.py)."""
    return [f"{test}: {v.metric}" for test, vs in verdicts.items() for v in vs
            if v.gated and not v.decided and v.needs_more]


@dataclass
class Outcome:
    """Where a head-to-head stopped."""

    verdicts: dict[str, list[Verdict]] = field(default_factory=dict)
    looks: int = 0
    """Starts a side at the last look (0: no look yet)."""
    dropped: dict[str, str] = field(default_factory=dict)
    """Tests one build measured and the other did not, with which side lacks them."""

    @property
    def regressed(self) -> list[Verdict]:
        return [v for vs in self.verdicts.values() for v in vs if v.fails]

    @property
    def undecided(self) -> list[str]:
        return undecided(self.verdicts)


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
    alpha_session: float = multiplicity.ALPHA_SESSION
    records: Records | None = None
    progress: Callable[[str], None] = print
    _described: bool = field(default=False, init=False, repr=False)

    def run(self) -> Outcome:
        """Start builds in ABBA order, looking at each balanced count from ``min_starts``;
        stop at the first look where every gated metric is decided, or at ``max_starts``.
        A recorded start counts (a rerun continues where the record stops)."""
        looked = 0
        while True:
            n_a, n_b = len(self.record.of(self.a)), len(self.record.of(self.b))
            n = min(n_a, n_b)
            if n_a == n_b and n >= self.min_starts and n > looked:
                looked = n
                outcome = self.look(n)
                if outcome.dropped or not outcome.undecided or n >= self.max_starts:
                    return outcome
            build = next_build(self.a, self.b, n_a, n_b)
            index = self.record.next_index(build)
            self.progress(f"start {index} of {build.name}: running")
            start = self.run_start(build, index)
            self._check(start)  # a start that measured nothing is not recorded: it ends the A/B
            self.record.add(start)
            self.progress(self._line(start))

    def look(self, n: int) -> Outcome:
        """The verdicts at ``n`` starts a side, at this look's boundary."""
        tests = self.record.tests()
        alpha = multiplicity.per_test_alpha(len(tests), alpha_session=self.alpha_session)
        looks = Looks(self.min_starts, self.max_starts)
        if not self._described:
            self._described = True
            self.progress(looks.describe(alpha))
        level = looks.level(alpha, n)
        detail = (f"look at {n}+{n} starts of {self.min_starts}..{self.max_starts} at "
                  f"{level:.2g} of the test's {alpha:.2g}, {len(tests)} test(s)")
        same = looks.level(multiplicity.ALPHA_SAME, n)
        verdicts = judge(self.record, self.a, self.b, alpha=alpha, alpha_same=same,
                         threshold_pct=self.threshold_pct, records=self.records, detail=detail,
                         look=lambda share: looks.level(share, n))
        verdicts = {t: needing(vs, alpha, looks) for t, vs in verdicts.items()}
        dropped = {t: side for t in tests for side, build in (("A", self.a), ("B", self.b))
                   if not self.record.reps(build, t)[0]}
        outcome = Outcome(verdicts, n, dropped)
        left = outcome.undecided
        state = (f"{len(outcome.regressed)} gated regression(s)" if outcome.regressed
                 else f"{len(left)} gated metric(s) undecided" if left
                 else "every gated metric decided")
        self.progress(f"look at {n}+{n} starts (each test's {alpha:.2g} held at {level:.2g} "
                      f"at this look): {state}")
        return outcome

    def _check(self, start: Start) -> None:
        if not any(t.reps for t in start.tests.values()):
            problems = [p for t in start.tests.values() for p in t.problems]
            why = problems[0] if problems else f"pytest exited {start.rc}"
            raise StartFailed(f"build {start.build!r} measured nothing in start "
                              f"{start.index} ({why}); see {start.folder}/pytest.log",
                              build=start.build)

    def _line(self, start: Start) -> str:
        n_a, n_b = len(self.record.of(self.a)), len(self.record.of(self.b))
        if n_a == n_b and n_a >= self.min_starts:
            state = "a look follows"
        else:
            state = f"next look at {max(self.min_starts, n_a, n_b)} starts a side"
        return (f"start {start.index} of {start.build} done: {start.seconds:.0f} s, "
                f"{sum(len(t.reps) for t in start.tests.values())} runs ({n_a}+{n_b} "
                f"starts; {state})")


def regressed(verdicts: dict[str, list[Verdict]]) -> list[Verdict]:
    return [v for vs in verdicts.values() for v in vs if v.fails]


def table(verdicts: dict[str, list[Verdict]], gated_only: bool = True) -> list[str]:
    """Fixed-width lines: test, metric, A, B, B/A with its interval, noise, what the
    comparison resolves, verdict."""
    header = ["test", "metric", "A", "B", "B/A", "interval", "starts", "spread", "resolves",
              "verdict"]
    rows = []
    for test, vs in verdicts.items():
        for v in vs:
            if gated_only and v.metric not in GATED_METRICS:
                continue
            lo, hi = v.interval_pct
            a = _mid(v.baseline_starts)
            b = _mid(v.candidate_starts)
            resolves = ("-" if v.resolves_pct != v.resolves_pct
                        else "none" if v.resolves_pct == float("inf")
                        else f"{v.resolves_pct:.1f}%")
            rows.append([test, v.metric, f"{a:.4g}", f"{b:.4g}",
                         f"{1 + v.change_pct / 100:.3f}",
                         f"{1 + lo / 100:.3f}..{1 + hi / 100:.3f}",
                         f"{len(v.baseline_starts)}+{len(v.candidate_starts)}",
                         "-" if v.noise_pct != v.noise_pct else f"{v.noise_pct:.1f}%",
                         resolves,
                         v.kind.value.upper() if v.kind is Kind.REGRESSION else v.kind.value])
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    return ["  ".join(c.ljust(w) if i in (0, 1, 9) else c.rjust(w)
                      for i, (c, w) in enumerate(zip(r, widths, strict=True))).rstrip()
            for r in [header, ["-" * w for w in widths], *rows]]


def _mid(values: tuple[float, ...]) -> float:
    ordered = sorted(values)
    n = len(ordered)
    if not n:
        return float("nan")
    return ordered[n // 2] if n % 2 else (ordered[n // 2 - 1] + ordered[n // 2]) / 2
