"""Tonight's starts against each test's rolling baseline, and what each test's outcome is.

The gate is the one in judge/gate.py (its ``Gate`` settings and ``GateOutcome``, the one
verdict rule ``judge_all`` with the baseline's starts and record pooled), applied to
tonight's gate starts as a pytest session applies it to one: the night runs its starts
outside the gate (ab/starts.py) so that it can judge several of them, after the
reference's steadiness starts around them are measured.

A test's outcome at the gate:

- ``pass``: its comparison could gate (resolves twice its floor) and found no regression;
- ``red``: a gated regression (a suspicion until head to head confirms it);
- ``undecided``: it could not gate tonight (too few starts, a noisy build, no or no
  comparable baseline, invalid runs): never green;
- ``broken``: tonight's build measured nothing on it where the reference did.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from pytest_mi300x.ab.headtohead import Outcome
from pytest_mi300x.ab.starts import Runs, Start
from pytest_mi300x.judge.baselines import BaselineError, BaselineStore
from pytest_mi300x.judge.gate import Gate, GateOutcome
from pytest_mi300x.judge.multiplicity import family_of
from pytest_mi300x.judge.verdict import Verdict, inconclusive_all, judge_all
from pytest_mi300x.results.stack import split_builds, stack_diff


@dataclass
class TestOutcome:
    """One test's night so far."""

    test: str
    gate: str
    """pass, red, undecided or broken."""
    why: str = ""
    head_to_head: str = ""
    """confirmed, no regression, undecided, not run (budget) or '' (not needed)."""
    change_pct: float = math.nan
    resolves_pct: float = math.nan
    can_gate: bool = False
    verdicts: list[Verdict] | None = None

    @property
    def outcome(self) -> str:
        """What the night says of the test: pass, red or undecided."""
        if self.head_to_head == "confirmed":
            return "red"
        if self.head_to_head == "no regression":
            return "pass"
        if self.gate == "pass":
            return "pass"
        if self.gate == "broken" and self.head_to_head in ("", "broken"):
            return "red"
        return "undecided"

    def to_dict(self) -> dict[str, Any]:
        return {"gate": self.gate, "why": self.why, "head_to_head": self.head_to_head,
                "outcome": self.outcome, "change_pct": self.change_pct,
                "resolves_pct": self.resolves_pct, "can_gate": self.can_gate}


def _runs_of(starts: list[Start], test: str) -> list[Runs]:
    return [s.tests[test] for s in starts if test in s.tests and s.tests[test].reps]


def judge_test(store: BaselineStore, test: str, starts: list[Start], *, alpha: float,
               inflation: float = 1.0, detail: str = "") -> GateOutcome:
    """The gate's outcome for ``test``: tonight's starts of it against its stored baseline
    (comparable across builds, never across hardware, workload or flag set)."""
    runs = _runs_of(starts, test)
    if not runs:
        return GateOutcome("no runs", detail="tonight's build measured nothing on it")
    first = runs[0]
    if len(first.store_key) != 3:
        return GateOutcome("no baseline", detail="its starts recorded no baseline key")
    host, engine, model = first.store_key
    try:
        stored = store.load(host, engine, model, test)
    except BaselineError as exc:
        return GateOutcome("not comparable", detail=str(exc))
    if stored is None:
        return GateOutcome("no baseline", detail="no rolling baseline yet (a green night "
                                                 "adds tonight's starts to it)")
    reps = [r for run in runs for r in run.reps]
    _, others = split_builds(stack_diff(stored.comparability, first.stack))
    if others:
        reason = "baseline from a different setup: " + "; ".join(others)
        names = sorted(set(stored.repetitions[0]) & set(reps[0])) if stored.repetitions else []
        return GateOutcome("not comparable", inconclusive_all(names, reason), detail=reason,
                           baseline=stored)
    gate = Gate(store, host, floors=first.floors, noise=first.noise, alpha=alpha,
                alpha_detail=detail, inflation=inflation)
    candidate = [i for i, run in enumerate(runs) for _ in run.reps]
    verdicts = judge_all(stored.repetitions, reps, baseline_starts=stored.server_of,
                         candidate_starts=candidate, floors=gate.floors, noise=gate.noise,
                         records=stored.noise_record(), alpha=gate.alpha,
                         inflation=gate.inflation, pool_record=True, detail=gate.alpha_detail)
    return GateOutcome("compared", verdicts, baseline=stored,
                       detail=f"rolling baseline over {stored.server_count} start(s) against "
                              f"{len(runs)} of tonight's")


def classify(test: str, outcome: GateOutcome, reference_measured: bool) -> TestOutcome:
    """The gate's outcome as the night reads it."""
    change, resolves, can = headline(outcome.verdicts)
    if outcome.status == "no runs":
        gate = "broken" if reference_measured else "undecided"
        return TestOutcome(test, gate, outcome.detail)
    if outcome.failing:
        worst = max(outcome.failing, key=lambda v: abs(v.change_pct))
        return TestOutcome(test, "red", f"{worst.metric} {worst.change_pct:+.1f}% at the gate",
                           change_pct=change, resolves_pct=resolves, can_gate=can,
                           verdicts=outcome.verdicts)
    if outcome.status != "compared":
        return TestOutcome(test, "undecided", f"{outcome.status}: {outcome.detail}",
                           change_pct=change, resolves_pct=resolves,
                           verdicts=outcome.verdicts)
    if outcome.cannot_gate or not can:
        why = outcome.cannot_gate or "no gated metric resolves its target"
        return TestOutcome(test, "undecided", f"cannot gate tonight: {why}",
                           change_pct=change, resolves_pct=resolves, verdicts=outcome.verdicts)
    return TestOutcome(test, "pass", "no regression at the gate", change_pct=change,
                       resolves_pct=resolves, can_gate=True, verdicts=outcome.verdicts)


def headline(verdicts: list[Verdict]) -> tuple[float, float, bool]:
    """(change %, resolving power %, can gate) of a test's throughput family (its first
    gated family otherwise): what the night's tables show."""
    gated = [v for v in verdicts if v.gated and not math.isnan(v.resolves_pct)]
    if not gated:
        return math.nan, math.nan, False
    throughput = [v for v in gated if family_of(v.metric) == "throughput"]
    pool = throughput or gated
    best = min(pool, key=lambda v: (v.metric != "request_throughput", v.resolves_pct))
    families: dict[str, bool] = {}
    for v in gated:
        families[family_of(v.metric)] = families.get(family_of(v.metric), False) or v.can_gate
    return best.change_pct, best.resolves_pct, any(families.values())


def confirmation(outcome: Outcome, test: str) -> tuple[str, str]:
    """What head to head says of ``test``: confirmed, no regression, undecided, broken."""
    side = outcome.dropped.get(test)
    if side == "B":
        return "broken", "tonight's build measured nothing on it head to head"
    verdicts = outcome.verdicts.get(test, [])
    failing = [v for v in verdicts if v.fails]
    if failing:
        worst = max(failing, key=lambda v: abs(v.change_pct))
        return "confirmed", (f"{worst.metric} {worst.change_pct:+.1f}% head to head "
                             f"({len(worst.baseline_starts)}+{len(worst.candidate_starts)} "
                             "starts)")
    gated = [v for v in verdicts if v.gated]
    _, resolves, can = headline(verdicts)
    if gated and (all(v.decided for v in gated) or can):
        return "no regression", (f"no regression head to head, resolving "
                                 f"{_pct(resolves)}")
    left = [v for v in gated if not v.decided]
    why = left[0].resolution() if left else "nothing compared"
    return "undecided", f"undecided head to head: {why}"


def _pct(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.1f}%"
