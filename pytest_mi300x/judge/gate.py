"""The gate: a test's repetitions against its stored baseline, and what that means for the test."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from pytest_mi300x.judge import multiplicity, verdict
from pytest_mi300x.judge.baselines import MIN_GATING_STARTS, Baseline, BaselineStore
from pytest_mi300x.results.model import FailureKind
from pytest_mi300x.results.stack import comparability, sent_as_burst, split_builds, stack_diff

if TYPE_CHECKING:
    from pytest_mi300x.config import Settings
    from pytest_mi300x.hosts.profile import HostProfile


class PerfRegression(AssertionError):
    """A gated metric regressed against the baseline."""

    failure_kind = FailureKind.REGRESSION


class PerfUndecided(AssertionError):
    """A gated metric moved past its floor on one server start, or the test could gate on
    its reference's noise and cannot tonight: neither a pass nor a regression."""

    failure_kind = FailureKind.UNDECIDED


class MissingBaseline(AssertionError):
    """No baseline for a test while ``--require-baseline`` is on."""

    failure_kind = FailureKind.HARNESS


@dataclass(frozen=True)
class Gate:
    """Where baselines live and how this session uses them."""

    store: BaselineStore
    host: str
    update: bool = False
    require: bool = False
    across_builds: bool = False
    floors: Mapping[str, float] = field(default_factory=dict)
    burst_floors: Mapping[str, float] = field(default_factory=dict)
    """Used over ``floors`` when the workload was sent as one burst."""
    noise: Mapping[str, float] = field(default_factory=dict)
    """The host's recorded start-to-start noise per metric (percent)."""
    burst_noise: Mapping[str, float] = field(default_factory=dict)
    target: str = ""
    """How a refresh selects what was measured (default ``--gpu-host HOST``; an endpoint's
    baselines: ``--endpoint URL``)."""
    alpha: float = multiplicity.ALPHA_TEST
    """Each test's one-sided false-alarm budget: the session's split over its gated tests."""
    alpha_detail: str = ""
    """Where ``alpha`` came from, for the verdicts' reasons."""
    inflation: float = 1.0
    """How much noisier than its record this machine measured today (judge/steadiness.py);
    every test's noise is widened by it."""
    steadiness_build: str = ""
    """The build today's steadiness check measured with: machine noise is the reference
    build's, so a check made with the build under judgement widens nothing."""
    hosts: int = 1
    """Hosts of the fleet whose sessions share one night's budget (``--fleet-hosts``)."""

    def sharing(self, tests: int, alpha_session: float) -> Gate:
        """This gate with each test's share of the night's false-alarm budget: split over
        the fleet's hosts, then over this session's gated tests."""
        fleet = f" over {self.hosts} fleet hosts" if self.hosts > 1 else ""
        return replace(self, alpha=multiplicity.per_test_alpha(
            tests, alpha_session=alpha_session, hosts=self.hosts),
                       alpha_detail=f"{tests} gated test(s){fleet} share the night's "
                                    f"{alpha_session:.0%} budget")

    def refresh_command(self, nodeid: str) -> str:
        target = self.target or f"--gpu-host {self.host}"
        return f"pytest-mi300x baselines refresh {target} '{nodeid}'"


@dataclass
class GateOutcome:
    """What the gate concluded for one test."""

    status: str  # "compared", "no baseline", "not comparable", "baseline written"
    verdicts: list[verdict.Verdict] = field(default_factory=list)
    detail: str = ""
    baseline: Baseline | None = None

    required: bool = False
    refused: str = ""
    """Why the baseline cannot gate at all (one server start), in one line."""

    @property
    def failing(self) -> list[verdict.Verdict]:
        return [v for v in self.verdicts if v.fails]

    @property
    def decision(self) -> str:
        """For a compared test, "regression", "undecided", "no change" or "cannot gate"
        (verdict.decision); empty otherwise (``status`` says why)."""
        if self.status != "compared":
            return ""
        if self.refused:  # gates nothing, but a regression called anyway still counts
            return "regression" if self.failing else "cannot gate"
        return verdict.decision(self.verdicts)

    @property
    def undecided(self) -> str:
        """Why the test is undecided, in one line; empty when it is not."""
        if self.decision != "undecided":
            return ""
        found = next((v for v in self.verdicts if v.gated and v.suspect), None)
        if found is not None:
            return f"{found.metric}: {found.reason}"
        families: dict[str, list[verdict.Verdict]] = {}
        for v in self.verdicts:
            if v.gated and v.scale != "spread":
                families.setdefault(multiplicity.family_of(v.metric), []).append(v)
        lost = next(v for vs in families.values() if not any(x.can_gate for x in vs)
                    for v in vs if v.could_gate)
        return (f"{lost.metric}: gates on its reference's noise (resolves "
                f"{lost.reference_resolves_pct:.1f}%) but not tonight: {lost.resolution()}")

    def check(self) -> None:
        """Raise what the outcome means: a regression, an undecided test, or a missing (or
        only not comparable) baseline under ``--require-baseline``."""
        if self.failing:
            raise PerfRegression(regression_message(self))
        if self.undecided:
            raise PerfUndecided(undecided_message(self))
        if self.status in ("no baseline", "not comparable") and self.required:
            raise MissingBaseline(f"{self.detail} (--require-baseline is on)")

    @property
    def unresolved(self) -> list[verdict.Verdict]:
        """One verdict per gated family that cannot resolve the change it must (twice its
        floor) with the starts compared: a family resolves when any of its metrics does (the
        throughputs are one ratio), and request_throughput speaks for it otherwise."""
        families: dict[str, list[verdict.Verdict]] = {}
        for v in self.verdicts:
            if v.gated and not math.isnan(v.resolves_pct):
                families.setdefault(multiplicity.family_of(v.metric), []).append(v)
        return [min(vs, key=lambda v: v.metric != "request_throughput")
                for vs in families.values() if not any(v.can_gate for v in vs)]

    @property
    def cannot_gate(self) -> str:
        """Why this test gated nothing, in one line; empty unless its decision is "cannot
        gate"."""
        if self.decision != "cannot gate":
            return ""
        if self.refused:
            return self.refused
        unresolved = self.unresolved
        if not unresolved:
            return "no gated metric to judge"
        worst = max(unresolved, key=lambda v: v.resolves_pct)
        return f"{worst.metric}: {worst.resolution()}"

    def to_dict(self) -> dict[str, Any]:
        return {"status": self.status, "detail": self.detail,
                # the build the baseline was made with: the last build known good
                "baseline_build": (self.baseline.comparability.get("engine_build")
                                   if self.baseline is not None else None),
                "verdicts": [v.to_dict() for v in self.verdicts],
                "decision": self.decision, "undecided": self.undecided,
                "cannot_gate": self.cannot_gate,
                "unresolved": [f"{v.metric}: {v.resolution()}" for v in self.unresolved]}


def session_gate(settings: Settings, host: HostProfile) -> tuple[Gate, str]:
    """A session's gate from its settings and host, and what today's steadiness check
    (``--steadiness``) said; a check from another day or machine raises SteadinessError."""
    # An endpoint's baselines are its own: under endpoint-<host-port>, not the host's.
    gate_host = host.name
    if settings.endpoint:
        from pytest_mi300x.servers.endpoint import endpoint_label

        gate_host = endpoint_label(settings.endpoint)
    gate = Gate(BaselineStore(settings.baselines_dir), gate_host,
                update=settings.update_baselines, require=settings.require_baseline,
                across_builds=settings.across_builds,
                floors={**host.floors, **dict(settings.floors)},
                # ini floors are the user's word: they win over the host's burst ones
                burst_floors={k: v for k, v in host.burst_floors.items()
                              if k not in dict(settings.floors)},
                noise=host.noise, burst_noise=host.burst_noise,
                target=f"--endpoint {settings.endpoint}" if settings.endpoint else "")
    said = ""
    if settings.steadiness_file is not None:
        from pytest_mi300x.hosts.fingerprint import host_fingerprint
        from pytest_mi300x.judge.steadiness import load_check

        check = load_check(settings.steadiness_file, host_fingerprint())
        said = check.summary + (f" (measured with {check.build})" if check.build else "")
        gate = replace(gate, inflation=check.factor, steadiness_build=check.build)
    gate = replace(gate, hosts=max(1, settings.fleet_hosts))
    return gate.sharing(1, settings.gate_alpha), said


def evaluate(gate: Gate, *, nodeid: str, engine_name: str, model: str,
             repetitions: Sequence[Mapping[str, float]], fingerprint: dict[str, Any],
             engine: dict[str, Any], provenance: dict[str, Any],
             floors: Mapping[str, float] | None = None) -> GateOutcome:
    """Compare (or, when updating, hand back as the new baseline) the repetitions of one test.

    Never raises for what it finds: ``GateOutcome.check`` does, once the result is written.
    """
    stack = comparability(fingerprint, engine, provenance.get("workload"),
                          provenance.get("server", {}).get("flag_set"))
    reps = [dict(r) for r in repetitions]
    if gate.update:
        new = Baseline(test=nodeid, host=gate.host, engine=engine_name, model=model,
                       repetitions=reps, comparability=stack, provenance=provenance)
        return GateOutcome("baseline written", detail="", baseline=new)
    stored = gate.store.load(gate.host, engine_name, model, nodeid)
    if stored is None:
        detail = f"no baseline; make one with: {gate.refresh_command(nodeid)}"
        return GateOutcome("no baseline", detail=detail, required=gate.require)
    differs = stack_diff(stored.comparability, stack)
    builds, others = split_builds(differs)
    if others or (builds and not gate.across_builds):
        reason = "baseline from a different stack: " + "; ".join(differs)
        if not others:
            reason += " (add --across-builds to judge one build against the other)"
        elif any(d.startswith(("workload", "flag_set")) for d in others):
            reason += f" (refresh it: {gate.refresh_command(nodeid)})"
        names = sorted(set(stored.repetitions[0]) & set(reps[0])) if stored.repetitions else []
        return GateOutcome("not comparable", verdict.inconclusive_all(names, reason),
                           detail=reason, baseline=stored, required=gate.require)
    burst = sent_as_burst(provenance.get("workload"))
    merged = {**gate.floors, **(gate.burst_floors if burst else {}), **(floors or {})}
    noise = {**gate.noise, **(gate.burst_noise if burst else {})}
    records = stored.noise_record()
    refused = ""
    if stored.server_count < MIN_GATING_STARTS:
        # Runs inside one start never stand in for starts: no start-to-start evidence at
        # all, not the record's, not the host's (a count, judged by its questions, still is).
        refused = (f"baseline of {stored.server_count} server start: no start-to-start "
                   "evidence to judge a start against (runs inside one start never stand in "
                   f"for starts); refresh it over 5 starts: {gate.refresh_command(nodeid)}")
        noise, records = {}, {}
    inflation, ignored = gate.inflation, ""
    candidate_build = str(engine.get("build") or "")
    if inflation > 1 and gate.steadiness_build and gate.steadiness_build == candidate_build \
            and stored.comparability.get("engine_build") != candidate_build:
        # The build under judgement brings its own spread: that is a finding about it
        # (judge/spreads.py), never the machine's noise.
        inflation, ignored = 1.0, (f"today's steadiness check was measured with the build "
                                   f"under judgement ({candidate_build}), not its reference: "
                                   "not used")
    verdicts = verdict.judge_all(stored.repetitions, reps, baseline_starts=stored.server_of,
                                 floors=merged, noise=noise, records=records,
                                 alpha=gate.alpha, inflation=inflation,
                                 pool_record=True, detail=gate.alpha_detail)
    detail = "across builds: " + "; ".join(builds) if builds else ""
    detail = "; ".join(filter(None, [detail, ignored]))
    detail = "; ".join(filter(None, [detail, f"baseline over {stored.server_count} server "
                                     "start(s) against this one"]))
    decided = verdict.decision(verdicts)
    old = stored.comparability.get("engine_build")
    if builds and decided == "undecided":
        detail += ("\nto confirm it head to head: pytest-mi300x ab "
                   f"--a '{old}' --b '{candidate_build}' '{nodeid}'")
    if builds and decided in ("regression", "undecided"):
        detail += ("\nto find the build that did it, list the builds between them in a file "
                   f"and run: pytest-mi300x bisect --good '{old}' "
                   f"--bad '{candidate_build}' --builds BUILDS.txt '{nodeid}'")
    return GateOutcome("compared", verdicts, detail=detail, baseline=stored, refused=refused)


def preview(stored: Baseline, alpha: float) -> list[verdict.Verdict]:
    """What one more server start (a nightly's) would be judged with against ``stored``:
    per gated metric, the noise and the resolving power, with the host's floors and noise
    as the baseline recorded them. The candidate stands in with the baseline's last start
    (what a comparison resolves depends on the starts and the spread, not on the values)."""
    host = stored.provenance.get("host") or {}
    last = max(stored.server_of, default=0)
    candidate = [r for r, s in zip(stored.repetitions, stored.server_of, strict=True)
                 if s == last]
    return [v for v in verdict.judge_all(stored.repetitions, candidate,
                                         baseline_starts=stored.server_of,
                                         floors=host.get("floors") or {},
                                         noise=host.get("noise") or {},
                                         records=stored.noise_record(), alpha=alpha,
                                         pool_record=True)
            if v.gated]


def undecided_message(outcome: GateOutcome) -> str:
    lines = [f"undecided (not a pass, not yet a regression): {outcome.undecided}"]
    if outcome.detail:
        lines.append(outcome.detail)
    lines += [v.message() for v in outcome.verdicts if v.gated and v.suspect]
    return "\n".join(lines)


def regression_message(outcome: GateOutcome) -> str:
    lines = [f"performance regression in {len(outcome.failing)} gated metric(s):"]
    if outcome.detail:
        lines.append(outcome.detail)
    for v in outcome.failing:
        lines.append(v.message())
    return "\n".join(lines)
