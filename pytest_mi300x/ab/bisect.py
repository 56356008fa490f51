"""Which build in an ordered range made it slower: Pinpoint's bisect with this project's
verdict rule.

1. The good and the bad build are measured head to head (interleaved starts, balanced looks):
   if they are shown not to differ (every gated metric "no change" or better: equivalence
   within the floor), there is nothing to look for and the bisect says so; if they are
   still undecided at the last look, it says "not confirmed: undecided at N starts,
   resolving X%", never that they do not differ.
2. Each midpoint is classified on the metric that regressed by where it falls between them:
   like the good build (better than the bad one, no regression against the good one), like
   the bad build (the reverse), or ambiguous, which earns more starts up to a limit and then
   stops the bisect with the evidence (the range may hold more than one change). The
   midpoint's starts are interleaved with fresh starts of the good and the bad build
   (M G M B M ...), so the day's drift falls on all three alike; every classification rests
   on at least ``min_starts`` starts and is taken at balanced looks that spend its budget.
   A midpoint that measures nothing (it does not start, or fails the selection) is set
   aside once, like ``git bisect skip``, and the bisect goes on around it.
3. The pair it ends on (last good, first bad) is confirmed head to head, on fresh
   interleaved starts of the two, before the first bad build is named; a pair that does
   not confirm is reported as such.

Nothing is kept in memory only: every start, a failed one included, is in the record, so
running the same command again replays the decisions from it and continues where it
stopped (after a kill too).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

from pytest_mi300x.ab.builds import Build
from pytest_mi300x.ab.headtohead import HeadToHead, Records
from pytest_mi300x.ab.headtohead import Outcome as HeadToHeadOutcome
from pytest_mi300x.ab.starts import Record, RunStart, Start
from pytest_mi300x.judge import multiplicity
from pytest_mi300x.judge.verdict import DEFAULT_THRESHOLD_PCT, Kind, Verdict, judge_starts
from pytest_mi300x.results.metrics import STEADINESS


class ReferenceFailed(RuntimeError):
    """The good or the bad build measured nothing: the bisect cannot go on."""


@dataclass(frozen=True)
class Step:
    """One build classified."""

    build: str
    index: int
    kind: str  # "good", "bad", "ambiguous", "unmeasurable"
    starts: int
    median: float = math.nan
    position: float = math.nan
    """Where it falls from the good build (0) to the bad one (1)."""
    against_good: Verdict | None = None
    against_bad: Verdict | None = None
    why: str = ""

    def line(self) -> str:
        if self.against_good is None or self.against_bad is None:
            return f"#{self.index} {self.build}: {self.kind} ({self.why})"
        return (f"#{self.index} {self.build}: {self.kind} ({self.starts} starts, median "
                f"{self.median:.4g}, {self.position:.0%} of the way from good to bad; vs good "
                f"{self.against_good.kind.value} {self.against_good.change_pct:+.1f}%, vs bad "
                f"{self.against_bad.kind.value} {self.against_bad.change_pct:+.1f}%)")

    def to_dict(self) -> dict[str, object]:
        return {"build": self.build, "index": self.index, "kind": self.kind,
                "starts": self.starts, "median": self.median, "position": self.position,
                "why": self.why,
                "against_good": self.against_good.to_dict() if self.against_good else None,
                "against_bad": self.against_bad.to_dict() if self.against_bad else None}


@dataclass
class Outcome:
    """How the bisect ended."""

    confirmed: bool
    test: str | None = None
    metric: str | None = None
    first_bad: Build | None = None
    last_good: Build | None = None
    ambiguous: Step | None = None
    steps: list[Step] = field(default_factory=list)
    confirmation: dict[str, list[Verdict]] = field(default_factory=dict)
    """Good against bad."""
    culprit_check: dict[str, list[Verdict]] = field(default_factory=dict)
    """Last good against first bad, head to head."""
    culprit_confirmed: bool = False
    skipped: list[str] = field(default_factory=list)
    """Builds that measured nothing and were bisected around."""
    suspects: list[str] = field(default_factory=list)
    """Builds that may hold the change besides the first bad one (set-aside builds
    between the last good and the first bad)."""
    reason: str = ""
    undecided: bool = False
    """Good against bad neither differ nor are shown the same at the last look."""


@dataclass
class Bisect:
    """A bisect over ``builds`` (oldest first) between ``good`` and ``bad`` (indices)."""

    builds: list[Build]
    good: int
    bad: int
    run_start: RunStart
    record: Record
    metric: str | None = None
    min_starts: int = 3
    max_starts: int = 6
    alpha_session: float = multiplicity.ALPHA_SESSION
    records: Records | None = None
    progress: Callable[[str], None] = print

    def run(self) -> Outcome:
        if not 0 <= self.good < self.bad < len(self.builds):
            raise ValueError("bisect: the good build must come before the bad one in the list")
        good, bad = self.builds[self.good], self.builds[self.bad]
        self.progress(f"confirming that {good.name} and {bad.name} differ")
        confirmation = self._head_to_head(good, bad)
        chosen = self._chosen(confirmation)
        if chosen is None:
            asked = f" on {self.metric}" if self.metric else ""
            why = unsettled(confirmation, self.metric)
            if why:
                return Outcome(False, confirmation=confirmation.verdicts, undecided=True,
                               reason=f"not confirmed: {why} ({good.name} against "
                                      f"{bad.name}{asked}); neither a regression nor a false "
                                      "alarm: more starts (--max-starts) would decide it")
            return Outcome(False, confirmation=confirmation.verdicts, reason=(
                f"{good.name} and {bad.name} do not differ{asked}: every gated metric is "
                "within its floor or better (equivalence shown): there is nothing to "
                "bisect"))
        test, metric = chosen
        self.progress(f"{bad.name} regressed on {test}: {metric}; bisecting "
                      f"{self.bad - self.good - 1} build(s) between them")
        outcome = Outcome(True, test, metric, confirmation=confirmation.verdicts)
        lo, hi = self.good, self.bad
        skipped: set[int] = set()
        while True:
            left = [i for i in range(lo + 1, hi) if i not in skipped]
            if not left:
                break
            mid = left[len(left) // 2]
            step = self._classify(mid, test, metric)
            outcome.steps.append(step)
            self.progress(step.line())
            if step.kind == "unmeasurable":
                skipped.add(mid)
                outcome.skipped.append(step.build)
            elif step.kind == "good":
                lo = mid
            elif step.kind == "bad":
                hi = mid
            else:
                outcome.ambiguous = step
                outcome.reason = (f"{step.build} falls between the good and the bad build "
                                  f"after {step.starts} starts: the range may hold more than "
                                  "one change; bisect each part on its own")
                return outcome
        last_good, first_bad = self.builds[lo], self.builds[hi]
        outcome.last_good, outcome.first_bad = last_good, first_bad
        outcome.suspects = [self.builds[i].name for i in range(lo + 1, hi)]
        if lo == self.good and hi == self.bad:
            outcome.culprit_check, outcome.culprit_confirmed = confirmation.verdicts, True
            check = confirmation
        else:
            self.progress(f"confirming the pair head to head: {last_good.name} against "
                          f"{first_bad.name}")
            # Fresh interleaved starts of the two: the classifications that led here are
            # not evidence for their own confirmation.
            check = self._head_to_head(last_good, first_bad,
                                       self.record.since(f"confirm {lo}-{hi}"))
            outcome.culprit_check = check.verdicts
            outcome.culprit_confirmed = any(
                v.fails and multiplicity.family_of(v.metric) == multiplicity.family_of(metric)
                for v in check.verdicts.get(test, []))
        also = (f"; it or one of {', '.join(outcome.suspects)} (they measured nothing)"
                if outcome.suspects else "")
        if outcome.culprit_confirmed:
            outcome.reason = (f"first bad build: {first_bad.name} (after {last_good.name}), "
                              f"confirmed head to head on {metric}{also}")
        elif why := unsettled(check, metric):
            outcome.reason = (f"the bisect ends between {last_good.name} and "
                              f"{first_bad.name}{also}, but head to head on {metric} the pair "
                              f"is not confirmed: {why}")
        else:
            outcome.reason = (f"the bisect ends between {last_good.name} and "
                              f"{first_bad.name}{also}, but the two do not differ on {metric} "
                              "head to head: the change does not reproduce between them "
                              "(a drift, or noise in an earlier classification)")
        return outcome

    def _head_to_head(self, a: Build, b: Build, record: Record | None = None
                      ) -> HeadToHeadOutcome:
        h2h = HeadToHead(a, b, self.run_start, record or self.record,
                         min_starts=self.min_starts, max_starts=self.max_starts,
                         alpha_session=self.alpha_session, records=self.records,
                         progress=self.progress)
        try:
            return h2h.run()
        except RuntimeError as exc:  # StartFailed: a reference build cannot run
            raise ReferenceFailed(str(exc)) from None

    def _chosen(self, outcome: HeadToHeadOutcome) -> tuple[str, str] | None:
        """The (test, metric) to bisect on: the asked metric's, else the largest regression."""
        failing = [(test, v) for test, vs in outcome.verdicts.items() for v in vs if v.fails
                   and v.metric != STEADINESS  # a spread is not a figure to bisect on
                   and (self.metric is None or v.metric == self.metric)]
        if not failing:
            return None
        test, v = max(failing, key=lambda tv: abs(tv[1].change_pct))
        return test, v.metric

    def _classify(self, index: int, test: str, metric: str) -> Step:
        build = self.builds[index]
        good, bad = self.builds[self.good], self.builds[self.bad]
        floors, noise = self.record.thresholds(test)
        threshold = floors.get(metric, DEFAULT_THRESHOLD_PCT)
        while True:
            failed = next((s for s in self.record.of(build) if _measured_nothing(s)), None)
            if failed is not None:
                return Step(build.name, index, "unmeasurable", len(self.record.of(build)),
                            why=f"measured nothing in start {failed.index}; see "
                                f"{failed.folder}/pytest.log; set aside")
            runs = self.record.runs(build, test, metric)
            n = len(runs)
            if n >= self.min_starts:
                step = self._step(index, build, runs, self.record.runs(good, test, metric),
                                  self.record.runs(bad, test, metric), metric, threshold,
                                  noise.get(metric, 0.0), test, n)
                if step.kind != "ambiguous" or n >= self.max_starts:
                    return step
            # M G M B M ...: a fresh reference start after each midpoint start.
            made = self._references_since(build)
            mine = len(self.record.of(build))
            if made < mine:
                ref = (good, bad)[made % 2]
                start = self.run_start(ref, self.record.next_index(ref))
                if _measured_nothing(start):
                    raise ReferenceFailed(f"{ref.name} measured nothing in start {start.index} "
                                          f"while classifying {build.name}; see "
                                          f"{start.folder}/pytest.log")
                self.record.add(start)
            else:
                self.record.add(self.run_start(build, self.record.next_index(build)))

    def _references_since(self, build: Build) -> int:
        """Good and bad starts recorded since the first start of ``build``."""
        names = {self.builds[self.good].name, self.builds[self.bad].name}
        seen = False
        count = 0
        for s in self.record.starts:
            seen = seen or s.build == build.name
            count += seen and s.build in names
        return count

    def _step(self, index: int, build: Build, runs: list[list[float]],
              good_runs: list[list[float]], bad_runs: list[list[float]], metric: str,
              threshold: float, noise: float, test: str, n: int) -> Step:
        alpha = multiplicity.look_level(multiplicity.ALPHA_TEST, min(n, self.max_starts),
                                        self.min_starts, self.max_starts)
        record = (self.records(test) if self.records else {}).get(metric)

        def vs(reference: list[list[float]]) -> Verdict:
            return judge_starts(metric, reference, runs, threshold_pct=threshold,
                                noise_floor_pct=noise, record=record, alpha=alpha)

        against_good, against_bad = vs(good_runs), vs(bad_runs)
        if against_bad.kind is Kind.IMPROVEMENT and against_good.kind is not Kind.REGRESSION:
            kind = "good"
        elif against_good.kind is Kind.REGRESSION and against_bad.kind is not Kind.IMPROVEMENT:
            kind = "bad"
        else:
            kind = "ambiguous"
        g = _log_mean(against_good.baseline_starts)
        b = _log_mean(against_bad.baseline_starts)
        m = _log_mean(against_good.candidate_starts)
        position = (m - g) / (b - g) if b != g else math.nan
        return Step(build.name, index, kind, len(runs), math.exp(m), position,
                    against_good, against_bad)


def unsettled(outcome: HeadToHeadOutcome, metric: str | None = None) -> str:
    """Why a head-to-head without a gated regression is not yet "the same": "undecided at N
    starts, resolving X%" while a gated metric (of ``metric``'s family, when given) is
    undecided, or a build noisier than the other; empty once every one is decided."""
    family = multiplicity.family_of(metric) if metric else None
    chosen = [v for vs in outcome.verdicts.values() for v in vs if v.gated
              and (family is None or multiplicity.family_of(v.metric) == family)]
    noisier = [v for v in chosen if v.fails and v.metric == STEADINESS]
    if noisier:
        return f"B is noisier than A and no figure regressed ({noisier[0].reason})"
    left = [v for v in chosen if not v.decided and v.needs_more]
    if not left:
        return ""
    worst = max(left, key=lambda v: v.resolves_pct)
    resolving = ("nothing" if math.isinf(worst.resolves_pct)
                 else f"{worst.resolves_pct:.0f}%")
    return (f"undecided at {outcome.looks} starts, resolving {resolving} ({worst.metric}: "
            f"{worst.resolution()})")


def _measured_nothing(start: Start) -> bool:
    return not any(t.reps for t in start.tests.values())


def _log_mean(values: tuple[float, ...]) -> float:
    return sum(math.log(v) for v in values) / len(values)
