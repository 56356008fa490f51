"""The gate: a test's repetitions against its stored baseline, and what that means for the test."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from pytest_mi300x.judge import multiplicity, verdict
from pytest_mi300x.judge.baselines import Baseline, BaselineStore
from pytest_mi300x.results.model import FailureKind
from pytest_mi300x.results.stack import comparability, sent_as_burst, split_builds, stack_diff

if TYPE_CHECKING:
    from pytest_mi300x.config import Settings
    from pytest_mi300x.hosts.profile import HostProfile


class PerfRegression(AssertionError):
    """A gated metric regressed against the baseline."""

    failure_kind = FailureKind.REGRESSION


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

    def sharing(self, tests: int, alpha_session: float) -> Gate:
        """This gate with each test's share of the session's false-alarm budget."""
        return replace(self, alpha=multiplicity.per_test_alpha(tests,
                                                               alpha_session=alpha_session),
                       alpha_detail=f"{tests} gated test(s) share the session's "
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

    @property
    def failing(self) -> list[verdict.Verdict]:
        return [v for v in self.verdicts if v.fails]

    def check(self) -> None:
        """Raise what the outcome means: a regression, or a missing (or only not comparable)
        baseline under ``--require-baseline``."""
        if self.failing:
            raise PerfRegression(regression_message(self))
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
        """Why this test gated nothing, in one line; empty when it gated something (or
        found a regression, or was not compared)."""
        if self.status != "compared" or self.failing:
            return ""
        gated = {multiplicity.family_of(v.metric) for v in self.verdicts
                 if v.gated and not math.isnan(v.resolves_pct)}
        unresolved = self.unresolved
        if not gated or len(unresolved) < len(gated):
            return ""
        worst = max(unresolved, key=lambda v: v.resolves_pct)
        return f"{worst.metric}: {worst.resolution()}"

    def to_dict(self) -> dict[str, Any]:
        return {"status": self.status, "detail": self.detail,
                # the build the baseline was made with: the last build known good
                "baseline_build": (self.baseline.comparability.get("engine_build")
                                   if self.baseline is not None else None),
                "verdicts": [v.to_dict() for v in self.verdicts],
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
        from pytest_mi300x.judge.steadiness import load

        factor, said = load(settings.steadiness_file, host_fingerprint())
        gate = replace(gate, inflation=factor)
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
    verdicts = verdict.judge_all(stored.repetitions, reps, baseline_starts=stored.server_of,
                                 floors=merged, noise=noise, records=stored.noise_record(),
                                 alpha=gate.alpha, inflation=gate.inflation,
                                 pool_record=True, detail=gate.alpha_detail)
    detail = "across builds: " + "; ".join(builds) if builds else ""
    detail = "; ".join(filter(None, [detail, f"baseline over {stored.server_count} server "
                                     "start(s) against this one"]))
    if builds and any(v.fails for v in verdicts):
        old = stored.comparability.get("engine_build")
        detail += ("\nto find the build that did it, list the builds between them in a file "
                   f"and run: pytest-mi300x bisect --good '{old}' "
                   f"--bad '{engine.get('build')}' --builds BUILDS.txt '{nodeid}'")
    return GateOutcome("compared", verdicts, detail=detail, baseline=stored)


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


def regression_message(outcome: GateOutcome) -> str:
    lines = [f"performance regression in {len(outcome.failing)} gated metric(s):"]
    if outcome.detail:
        lines.append(outcome.detail)
    for v in outcome.failing:
        lines.append(v.message())
    return "\n".join(lines)
