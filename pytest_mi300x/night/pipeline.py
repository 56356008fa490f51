"""One night on one host, from the host check to its one status.

1. The host check (hostcheck.py): a failure is ``infra``, never a culprit search.
2. A host with no reference yet adopts tonight's build: ``adopt_starts`` starts of it make
   its rolling baselines; nothing is judged, and the night says so (status ``undecided``,
   marked adopted).
3. Otherwise the reference build (the last green one) and tonight's run in the order
   R T T R (``steadiness_starts`` reference starts around ``gate_starts`` starts of
   tonight's): the reference's starts measure the machine today (judge/steadiness.py),
   never tonight's build, whose own spread must not read as a noisier machine; tonight's
   starts are judged against each test's rolling baseline, widened by what the steadiness
   check found (gating.py).
4. Every red or undecided test is measured again head to head (ab/headtohead.py): fresh
   interleaved starts of the two builds, the reference's steadiness starts counted, the
   gate's own starts not (a test chosen for its slow start is not confirmed by that
   start), within the night's budget of starts and time. A test fails only when confirmed.
5. Green: tonight's starts join the rolling baselines (rolling.py). Red: the culprit search
   (search.py) runs inline or is left pending.

Every start is saved as it ends, so a night cut short continues where it stopped.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from pytest_mi300x.ab.builds import Build
from pytest_mi300x.ab.headtohead import HeadToHead, Outcome, StartFailed, table
from pytest_mi300x.ab.noiselog import NoiseLog
from pytest_mi300x.ab.starts import Record, RunStart, Start
from pytest_mi300x.doctor import Check
from pytest_mi300x.judge import multiplicity
from pytest_mi300x.judge.baselines import BaselineStore
from pytest_mi300x.night import rolling, search
from pytest_mi300x.night.budget import Budget, BudgetSpent
from pytest_mi300x.night.gating import TestOutcome, classify, confirmation, headline, judge_test
from pytest_mi300x.night.state import HostState, NightRecord, now
from pytest_mi300x.results.files import ReadError, write_text_atomic

EXIT = {"green": 0, "red": 1, "infra": 2, "undecided": 3}
FRESH = "fresh"
"""The mark in the head-to-head record where its own starts begin (after the seeded ones)."""
RunnerFactory = Callable[[list[str], Path, list[str]], RunStart]
"""(selection, folder, extra pytest options) -> a start runner (ab/starts.py SessionRunner;
a test double in tests)."""


class Infra(Exception):
    """The host, not the build: the night measures nothing and blames nothing."""


@dataclass
class Settings:
    """How a night runs (cli/night.py fills it from the options and the host's defaults)."""

    tests: list[str]
    """The selection's test paths or ids."""
    options: list[str] = field(default_factory=list)
    """pytest options every start gets (``--gpu-host=H``, ``--repeats``...)."""
    steadiness_tests: list[str] | None = None
    """The reference's steadiness starts' tests (default: the night's own, which lets them
    count as head-to-head starts; a GPU host probes one short test instead)."""
    steadiness_starts: int = 2
    gate_starts: int = 2
    adopt_starts: int = 5
    budget_starts: int = 10
    """Head-to-head starts the night may add (both builds together)."""
    deadline_s: float = 8 * 3600
    """The whole night, culprit search inline included, ends before this."""
    min_starts: int = 3
    max_starts: int = 6
    fleet_hosts: int = 1
    window: int = rolling.DEFAULT_WINDOW
    anchor_nights: int = rolling.ANCHOR_NIGHTS
    culprit: str = "inline"

    @property
    def alpha_session(self) -> float:
        """The night's false-alarm budget, one for the whole fleet: each host's share."""
        return multiplicity.ALPHA_SESSION / max(1, self.fleet_hosts)


@dataclass
class NightRun:
    """A night as it ended, with what its summary shows."""

    record: NightRecord
    outcomes: dict[str, TestOutcome] = field(default_factory=dict)
    tables: list[str] = field(default_factory=list)
    search: search.SearchRecord | None = None


class Night:
    """Runs the night in ``record`` (new or cut short) on the host ``hs``."""

    def __init__(self, hs: HostState, record: NightRecord, builds: dict[str, Build],
                 settings: Settings, runners: RunnerFactory,
                 host_check: Callable[[], list[Check]],
                 progress: Callable[[str], None] = print) -> None:
        self.hs, self.rec, self.settings = hs, record, settings
        self.tonight = builds[record.tonight.name]
        self.reference = builds[record.reference.name] if record.reference else None
        self.builds = builds
        self.runners, self.host_check, self.progress = runners, host_check, progress
        self.dir = hs.night_dir(record.id)
        self.store = BaselineStore(hs.baselines_dir)
        self.began = time.monotonic()
        self.budget = Budget(settings.deadline_s - record.wall_s)
        self._h2h: Record | None = None

    # -- the night -------------------------------------------------------------
    def run(self) -> NightRun:
        try:
            failed = [c for c in self.host_check() if c.failed]
            if failed:
                raise Infra("host check: " + "; ".join(c.line for c in failed))
            if self.reference is None:
                return self._adopt()
            return self._judge()
        except Infra as exc:
            return self._end(NightRun(self.rec), "infra", str(exc))

    def _adopt(self) -> NightRun:
        s = self.settings
        rec = self._record("adopt")
        self._starts(rec, self.tonight, s.adopt_starts, self._runner(s.tests, "adopt"),
                     "adopt", infra_if_nothing="the host's first build measured nothing, "
                                               "so nothing was adopted")
        self.rec.adopted = True
        if "promoted" not in self.rec.learned:  # not twice when a cut-short night resumes
            self.rec.notes += rolling.promote(self.store, rec.of(self.tonight), self.rec.id,
                                              s.window)
            self.rec.learned.append("promoted")
        # Its starts are the baseline itself: a noise entry would count them twice.
        rolling.snapshot(self.hs.baselines_dir, self.hs.anchors_dir, self.rec.id,
                         s.anchor_nights)
        run = NightRun(self.rec)
        for test in rec.tests():
            run.outcomes[test] = TestOutcome(test, "adopted", "first night: its baseline")
        return self._end(run, "undecided", (
            f"first night on {self.hs.host}: nothing was judged; {self.tonight.name} is "
            f"adopted as the reference, its {s.adopt_starts} start(s) make the rolling "
            "baselines the next night is gated against"))

    def _judge(self) -> NightRun:
        s, ref, tonight = self.settings, self.reference, self.tonight
        assert ref is not None
        same = s.steadiness_tests is None or s.steadiness_tests == s.tests
        steady = self._record("steadiness")
        gate = self._record("gate")
        r_run = self._runner(s.tests if same else (s.steadiness_tests or s.tests),
                             "steadiness")
        t_run = self._runner(s.tests, "gate", [f"--history-file={self.hs.history_file}"])
        nothing = (f"the reference build {ref.name} measured nothing: the host, not "
                   "tonight's build")
        first = (s.steadiness_starts + 1) // 2
        self._starts(steady, ref, first, r_run, "steadiness", infra_if_nothing=nothing)
        self._starts(gate, tonight, s.gate_starts, t_run, "gate")
        self._starts(steady, ref, s.steadiness_starts, r_run, "steadiness",
                     infra_if_nothing=nothing)
        factor, said = self._steadiness(steady)
        tests = sorted(set(gate.tests()) | (set(steady.tests()) if same else set()))
        alpha = multiplicity.per_test_alpha(len(tests), alpha_session=s.alpha_session)
        detail = (f"{len(tests)} test(s) share the night's {s.alpha_session:.2%} budget"
                  + (f" (one of {s.fleet_hosts} hosts)" if s.fleet_hosts > 1 else ""))
        run = NightRun(self.rec)
        for test in tests:
            judged = judge_test(self.store, test, gate.of(tonight), alpha=alpha,
                                inflation=factor, detail=detail)
            measured = not same or any(st.tests.get(test) and st.tests[test].reps
                                       for st in steady.of(ref))
            run.outcomes[test] = classify(test, judged, measured)
        self.rec.notes.append(said)
        doubtful = [t for t, o in run.outcomes.items() if o.gate in ("red", "undecided")]
        if doubtful:
            self._head_to_head(run, doubtful, steady if same else None)
        outcomes = [o.outcome for o in run.outcomes.values()]
        if not outcomes:
            raise Infra("no test was measured: check the selection")
        if "red" in outcomes:
            status = "red"
        elif "undecided" in outcomes:
            status = "undecided"
        else:
            status = "green"
        head = headline_of(run, status)
        if self._h2h is not None and "h2h" not in self.rec.learned:
            # Tonight's starts of a green night join its baseline: learned there, not twice.
            learn = (ref,) if status == "green" else (ref, tonight)
            # The seeded steadiness starts were learned with the steadiness check already.
            self.rec.notes += NoiseLog(self._h2h.since(FRESH), self.hs.baselines_dir).learn(
                *learn, source=f"night {self.rec.id} head to head")
            self.rec.learned.append("h2h")
        if status == "green" and "promoted" not in self.rec.learned:
            self._promote(gate, run)
            self.rec.learned.append("promoted")
        elif status == "red":
            start_culprit(self, run)
        return self._end(run, status, head)

    # -- phases ---------------------------------------------------------------------
    def _steadiness(self, steady: Record) -> tuple[float, str]:
        from pytest_mi300x.hosts.fingerprint import host_fingerprint
        from pytest_mi300x.judge.steadiness import assess

        assert self.reference is not None
        noise = NoiseLog(steady, self.hs.baselines_dir)
        found = assess(noise.today(self.reference),
                       {t: noise.records(t) for t in steady.tests()}, host_fingerprint())
        found.write(self.dir / "steadiness.json")
        if "steadiness" not in self.rec.learned:
            self.rec.notes += noise.learn(self.reference,
                                          source=f"night {self.rec.id} steadiness")
            self.rec.learned.append("steadiness")
        return found.factor, f"{found.summary()} (measured with the reference build)"

    def _head_to_head(self, run: NightRun, tests: list[str], steady: Record | None) -> None:
        s, ref, tonight = self.settings, self.reference, self.tonight
        assert ref is not None
        record = self._h2h = self._record("h2h", {"tests": tests})
        if steady is not None:
            search.seed(record, steady.of(ref), tests, (ref.name, ref.name))
        record.since(FRESH)  # marks where the seeded steadiness starts end
        have = len(record.of(ref)) + len(record.of(tonight))
        per_side = min(s.max_starts, (have + s.budget_starts) // 2)
        if per_side < s.min_starts:
            for t in tests:
                run.outcomes[t].head_to_head = "not run (budget)"
            return
        self.budget.limit = s.budget_starts
        runner = self._runner(tests, "h2h")
        noise = NoiseLog(record, self.hs.baselines_dir)
        h2h = HeadToHead(ref, tonight, self._counted(self.budget.wrap(runner), record, "h2h"),
                         record, min_starts=s.min_starts, max_starts=per_side,
                         alpha_session=s.alpha_session, records=noise.records,
                         progress=self.progress)
        outcome: Outcome | None
        try:
            outcome = h2h.run()
        except BudgetSpent as exc:
            self.rec.notes.append(f"head to head stopped: {exc}")
            n = min(len(record.of(ref)), len(record.of(tonight)))
            outcome = h2h.look(n) if n >= s.min_starts else None
        except StartFailed as exc:
            if exc.build == ref.name:
                raise Infra(f"the reference build measured nothing head to head: {exc}") \
                    from None
            for t in tests:
                run.outcomes[t].head_to_head = "broken"
                run.outcomes[t].why = str(exc)
            return
        if outcome is None:
            for t in tests:
                run.outcomes[t].head_to_head = "not run (budget)"
            return
        for t in tests:
            run.outcomes[t].head_to_head, why = confirmation(outcome, t)
            if why:
                run.outcomes[t].why = why
            verdicts = outcome.verdicts.get(t)
            if verdicts:
                change, resolves, can = headline(verdicts)
                o = run.outcomes[t]
                o.change_pct, o.resolves_pct, o.can_gate = change, resolves, can or o.can_gate
        run.tables += ["head to head (reference A, tonight B):", *table(outcome.verdicts)]
        write_text_atomic(self.dir / "h2h" / "h2h.md", "```\n" + "\n".join(run.tables)
                          + "\n```\n")

    def _promote(self, gate: Record, run: NightRun) -> None:
        starts = [*gate.of(self.tonight)]
        if self._h2h is not None:
            starts += self._h2h.of(self.tonight)
        self.rec.notes += rolling.promote(self.store, starts, self.rec.id, self.settings.window)
        rolling.snapshot(self.hs.baselines_dir, self.hs.anchors_dir, self.rec.id,
                         self.settings.anchor_nights)
        self.rec.notes += rolling.drift_lines(self.hs.anchors_dir, self.hs.baselines_dir)

    # -- helpers --------------------------------------------------------------------
    def _record(self, phase: str, extra: dict[str, object] | None = None) -> Record:
        ref = self.reference.name if self.reference else None
        meta = {"night": self.rec.id, "phase": phase, "tonight": self.tonight.name,
                "reference": ref, **(extra or {})}
        try:
            return Record(self.dir / phase / "starts.json", meta)
        except ReadError as exc:
            raise Infra(str(exc)) from None

    def _runner(self, tests: list[str], phase: str, extra: list[str] | None = None) -> RunStart:
        inner = self.runners([*tests, *self.settings.options], self.dir / phase, extra or [])
        wanted = set(tests)

        def only_selected(build: Build, index: int) -> Start:
            start = inner(build, index)
            # A start reports the tests it ran; a narrowed selection keeps to its own.
            if all("::" in t for t in wanted):
                start.tests = {t: r for t, r in start.tests.items() if t in wanted}
            return start

        return only_selected

    def _counted(self, runner: RunStart, record: Record, phase: str) -> RunStart:
        """``runner`` whose starts are counted in the night's record and timings."""
        def run(build: Build, index: int) -> Start:
            start = runner(build, index)
            self.budget.observe(start.seconds)
            self.rec.starts[phase] = self.rec.starts.get(phase, 0) + 1
            self.hs.add_timing(self.rec.id, start.build, phase, start.seconds,
                               len(start.tests))
            self.hs.save_night(self.rec)
            return start
        return run

    def _starts(self, record: Record, build: Build, n: int, runner: RunStart, phase: str,
                infra_if_nothing: str = "") -> None:
        counted = self._counted(runner, record, phase)
        while len(record.of(build)) < n:
            index = record.next_index(build)
            self.progress(f"{phase}: start {index} of {build.name}")
            start = counted(build, index)
            measured = any(t.reps for t in start.tests.values())
            if not measured and infra_if_nothing:
                raise Infra(f"{infra_if_nothing} (start {index}; see {start.folder}"
                            "/pytest.log)")
            record.add(start)
            if not measured:
                return  # tonight's build measures nothing: its tests are broken

    def _end(self, run: NightRun, status: str, head: str) -> NightRun:
        rec = self.rec
        rec.status, rec.exit, rec.headline = status, EXIT[status], head
        rec.tests = {t: o.to_dict() for t, o in run.outcomes.items()}
        rec.wall_s += time.monotonic() - self.began
        rec.ended = now()
        self.hs.save_night(rec)
        return run


def start_culprit(night: Night, run: NightRun) -> None:
    """A confirmed regression's culprit search: said again where one already covers it,
    else opened, and run now when the night runs it inline."""
    s, rec, hs = night.settings, night.rec, night.hs
    red = sorted(t for t, o in run.outcomes.items() if o.head_to_head == "confirmed")
    if not red:
        rec.notes.append("no culprit search: tonight's build measured nothing where the "
                         "reference did (a search needs a measured regression; its "
                         "starts' pytest.log say why)")
        return
    if s.culprit == "off" or rec.reference is None:
        return
    found = search.covering(hs, rec.reference.name, red)
    if found is not None:
        rec.culprit, run.search = found.id, found
        rec.notes.append(f"still red on {', '.join(sorted(set(found.tests) & set(red)))}"
                         f" since the last green build: {found.line()}; not searched "
                         "again")
        return
    known = hs.known_builds()
    names = [b.name for b in known]
    g, b = (names.index(n) if n in names else -1 for n in (rec.reference.name,
                                                            rec.tonight.name))
    refs = known[g:b + 1] if 0 <= g < b else [rec.reference, rec.tonight]
    found = search.open_search(hs, rec.id, refs, red, s.options)
    rec.culprit, run.search = found.id, found
    hs.save_night(rec)
    if s.culprit != "inline":
        return
    night.budget.limit = None
    settings = search.SearchSettings(
        runner=lambda sel, where: night.budget.wrap(night.runners(sel, where, [])),
        options=s.options, alpha_session=s.alpha_session, min_starts=s.min_starts,
        max_starts=s.max_starts, records_dir=hs.baselines_dir, progress=night.progress)
    h2h = night._h2h.starts if night._h2h is not None else []
    try:
        run.search = search.run_search(hs, found, search.builds_for(found, night.builds),
                                       settings, h2h)
    except BudgetSpent as exc:
        rec.notes.append(f"culprit search paused ({exc}); `pytest-mi300x night culprit` "
                         "continues it")


def headline_of(run: NightRun, status: str) -> str:
    by = {k: [t for t, o in run.outcomes.items() if o.outcome == k]
          for k in ("red", "undecided", "pass")}
    gated = sum(1 for o in run.outcomes.values() if o.can_gate)
    parts = [f"{len(by['pass'])} pass", f"{len(by['red'])} red",
             f"{len(by['undecided'])} undecided"]
    words = {"green": "no regression", "red": "confirmed regression",
             "undecided": "not every test could be decided"}[status]
    return (f"{words}: {', '.join(parts)} of {len(run.outcomes)} test(s); {gated} could "
            f"gate")
