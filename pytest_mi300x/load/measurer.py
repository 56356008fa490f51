"""A test's measurement: warm-up, repetitions against a live server, checks, the result
document, and the gate's verdict against the baseline."""

from __future__ import annotations

import contextlib
import json
import math
import os
import secrets
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from pytest_mi300x.accuracy.check import AccuracyCheck
from pytest_mi300x.hosts.fingerprint import harness_info, host_fingerprint
from pytest_mi300x.hosts.placement import pinned
from pytest_mi300x.hosts.profile import HostProfile
from pytest_mi300x.judge.baselines import BASELINE_PROPERTY
from pytest_mi300x.judge.gate import Gate, evaluate
from pytest_mi300x.load import figures as metrics
from pytest_mi300x.load.capacity import sweeps
from pytest_mi300x.load.figures import check_slos
from pytest_mi300x.load.records import LoadRun
from pytest_mi300x.load.runs import (
    EngineStalled,
    InvalidRun,
    Measured,
    OutputLengthDrift,
    PerfResult,
    Repetition,
    fresh_seeds,
)
from pytest_mi300x.load.spread import run_load_sync
from pytest_mi300x.load.sweep import DEFAULT_ATTAINMENT
from pytest_mi300x.results.files import result_path, write_json_atomic
from pytest_mi300x.results.metrics import HEADLINE_FIGURES
from pytest_mi300x.results.model import SCHEMA, finite_figures
from pytest_mi300x.servers.endpoint import Endpoint
from pytest_mi300x.servers.pool import RunningServer
from pytest_mi300x.telemetry.engine import TelemetrySampler
from pytest_mi300x.telemetry.gpu import warn_if_throttled
from pytest_mi300x.workload.arrivals import Arrivals
from pytest_mi300x.workload.datasets import Tokenizer
from pytest_mi300x.workload.tokenizer import for_chat
from pytest_mi300x.workload.workload import Workload

WARMUP_SEED_OFFSET = 1_000_003
DEATH_GRACE_S = 10.0
"""How long a server whose requests failed is given to be seen dead (before the run is
called invalid instead)."""
"""Warm-up prompts come from another seed, so they never pre-fill the prefix cache
with the measured prompts."""


Progress = Callable[[str], None]

ADDITIVE_SERVER_FIGURES = ("server_prompt_tokens", "server_generation_tokens",
                           "server_preemptions")
"""Engine counters that add up over instances (means and peaks do not: they stay per
instance)."""


def _server_telemetry(samplers: Sequence[TelemetrySampler]) -> dict[str, object]:
    """The engine's view of a run: one server's as before; several instances' each under
    ``instances``, with the counters that add up summed in ``figures``."""
    if len(samplers) == 1:
        return {"figures": samplers[0].figures, **samplers[0].describe()}
    instances = [{"base_url": t.base_url, "figures": t.figures, **t.describe()}
                 for t in samplers]
    figures = {k: sum(t.figures[k] for t in samplers) for k in ADDITIVE_SERVER_FIGURES
               if all(k in t.figures for t in samplers)}
    return {"figures": figures, "instances": instances}


class Measurer:
    """Drives workloads at one server for one test; the ``perf`` fixture hands this out."""

    def __init__(self, *, server: RunningServer | Endpoint, tokenizer: Tokenizer,
                 host: HostProfile,
                 test_id: str, results_dir: Path, model: dict[str, Any],
                 engine: dict[str, Any], run_id: str, repeats: int = 1,
                 gate: Gate | None = None, floors: dict[str, float] | None = None,
                 telemetry: Callable[[], Any] | None = None,
                 progress: Progress | None = None,
                 servers: Sequence[RunningServer | Endpoint] | None = None,
                 measured: dict[str, Measured] | None = None,
                 client_cpus: tuple[int, ...] = ()) -> None:
        self.server = server
        self.client_cpus = client_cpus
        """The CPUs the load client runs on during a run (the host's placement); ()
        leaves it where it is."""
        self.servers: list[RunningServer | Endpoint] = list(servers) if servers else [server]
        """Every instance the load goes to (request i to instance i % n); ``server`` first."""
        if self.servers[0] is not server:
            raise ValueError("Measurer: servers must start with server")
        self.tokenizer = tokenizer
        self.host = host
        self.test_id = test_id
        self.results_dir = results_dir
        self.model = model
        self.engine = engine
        self.run_id = run_id
        self.repeats = repeats
        self.gate = gate
        self.floors = floors or {}
        self.results: list[PerfResult] = []
        self.telemetry = telemetry
        """Factory of a GPU sampler (a context manager) run during the measured repetitions."""
        self.telemetry_summary: dict[str, Any] | None = None
        self.progress = progress
        self.measured = measured
        """The session's valid results by test id, for claims that compare them."""

    def run(self, workload: Workload) -> PerfResult:
        """Warm up, measure ``repeats`` times, check, record, then gate against the baseline.

        Raises InvalidRun when a repetition is not valid, PerfRegression when a
        gated metric regressed, MissingBaseline under ``--require-baseline``.
        """
        scaled = workload.scaled(self.host.scale)
        return self._run(workload, scaled, lambda result: self._measure(scaled, result))

    def run_capacity(self, workload: Workload, rates: Sequence[float],
                     slos: Mapping[str, float], *, attainment: float = DEFAULT_ATTAINMENT,
                     refine: int = 3, point_s: float = 5.0, retries: int = 1,
                     sweeps: int | None = None) -> PerfResult:
        """The highest request rate at which ``attainment`` of the requests meet every SLO
        (ms on ttft, tpot, e2el), as the figure ``max_rate_under_slo`` (req/s), gated
        against the baseline like a throughput.

        Each repetition is one sweep (load/sweep.py find_max_rate): ``rates`` (written at
        full size; the host scales them, never into a burst) are walked upwards until one
        misses (a later sweep from the highest not above the previous sweep's result:
        the rates below held there), then the gap is bisected ``refine`` times. Every
        point sends fresh prompts of the workload's dataset for at least ``point_s``
        seconds (more prompts at higher rates: a queue needs time to build past the knee),
        and a near miss (at least half the attainment asked) is tried ``retries`` more
        times before it counts. The warm-up runs at the lowest rate. A sweep where no rate
        met the SLOs is an invalid run. There is one sweep per ``--repeats``, or at most
        ``sweeps``.
        """
        check_slos(dict(slos))
        if sweeps is not None and sweeps < 1:
            raise ValueError(f"capacity(sweeps={sweeps!r}): write a whole number >= 1 "
                             "or leave it out (one sweep per --repeats)")
        host_rates = [self.host.scale.request_rate(r, burst_above_max=False) for r in rates]
        scaled = workload.scaled(self.host.scale)
        scaled = replace(scaled, slos=dict(slos),
                         arrivals=replace(scaled.arrivals, request_rate=min(host_rates),
                                          ramp_up=None, ramp_start_rps=None,
                                          ramp_end_rps=None),
                         sweep={"rates": host_rates, "attainment": attainment,
                                "refine": refine, "point_s": point_s, "retries": retries})
        count = self.repeats if sweeps is None else min(self.repeats, sweeps)
        return self._run(workload, scaled, lambda result: self._sweep(
            scaled, host_rates, dict(slos), attainment, refine, count, result))

    def _run(self, workload: Workload, scaled: Workload,
             measure: Callable[[PerfResult], None]) -> PerfResult:
        if scaled.warmup_requests != 0:
            self._warm_up(scaled)
        result = PerfResult([], result_path(self.results_dir, self.test_id))
        self.results.append(result)
        try:
            with self._gpu_sampling():
                measure(result)
            if scaled.accuracy is not None:
                self._check_answers(scaled.accuracy, result)
        finally:
            if not result.valid:
                self._write(workload, scaled)
        if self.measured is not None:
            self.measured[self.test_id] = Measured(workload.describe(), result,
                                                   self.server.key)
        try:
            if self.gate is not None:
                result.outcome = evaluate(
                    self.gate, nodeid=self.test_id, engine_name=self.server.engine.name,
                    model=str(self.model["logical"]),
                    repetitions=[finite_figures(r.figures) for r in result.repetitions],
                    fingerprint=host_fingerprint(), engine=self.engine,
                    provenance=self._provenance(scaled), floors=self.floors)
        finally:
            self._write(workload, scaled)
        if result.outcome is not None:
            result.outcome.check()
        return result

    def _measure(self, scaled: Workload, result: PerfResult) -> None:
        dataset: Any = scaled.dataset  # a frozen dataclass (datasets.Dataset)
        exact = self.server.engine.exact_output_lengths
        salt_field = self._cache_salt_field(scaled)
        seeds = fresh_seeds(getattr(self.server, "measured_seeds", None), scaled,
                            self.repeats, self.test_id)
        for rep, seed in enumerate(seeds):
            requests = replace(dataset, seed=seed).build(self.tokenizer)
            if scaled.endpoint == "chat":
                requests = for_chat(requests, self.tokenizer)
            # A salt never used before: the cache holds nothing these requests can find,
            # whatever ran on the server earlier (the guide's empty cache, without a reset).
            salt = {salt_field: secrets.token_hex(8)} if salt_field else None
            if scaled.prefix_cache == "second-run":
                self._load(requests, scaled.arrivals, seed=seed, workload=scaled,
                           label="second-run warm-up", extra_body=salt)
            run = self._load(requests, scaled.arrivals, seed=seed, workload=scaled,
                             label=f"repetition {rep + 1}/{self.repeats}", extra_body=salt)
            problems = metrics.find_problems(run, exact_output=exact)
            figures = metrics.compute_figures(run, slos=scaled.slos)
            if not exact:
                figures.update(self._drift(run))
            result.repetitions.append(Repetition(seed, figures, problems, run))
            if problems:
                # A dead server explains failed requests better than the requests do.
                self._check_alive("during the measured run", run)
                stalled = [r for r in run.records if (r.error or "").startswith("StallTimeout")]
                if stalled:
                    for server in self.servers:
                        server.healthy = False  # the next test gets fresh servers
                    raise EngineStalled(
                        f"the engine stalled (repetition {rep + 1} of {self.repeats}): "
                        f"{len(stalled)} of {len(run.records)} streams sent nothing for "
                        f"{scaled.stall_timeout_s:g} s; its server is replaced for the next test")
                raise InvalidRun(f"invalid run (repetition {rep + 1} of {self.repeats}), "
                                 "figures not used: " + "; ".join(problems))

    def _check_answers(self, check: AccuracyCheck, result: PerfResult) -> None:
        """After the speed runs: one pass of the questions per repetition, spread over the
        servers; each repetition gets that pass's accuracy figures (judged with them)."""
        if self.model.get("dummy_weights"):
            reason = (f"accuracy check skipped: {self.model.get('logical')} is served with "
                      f"random weights on host {self.host.name!r} ({self.model.get('ref')}), "
                      "so its answers are noise; it runs where the host serves real weights")
            result.accuracy = {"skipped": reason}  # said once, under the session table
            return
        passes = []
        for rep in result.repetitions:
            answered = check.run([s.base_url for s in self.servers], self.server.api_key,
                                 self.server.spec.served_model_name)
            rep.figures.update(answered.figures())
            passes.append(answered.to_dict())
        result.accuracy = {"check": check.describe(), "passes": passes}

    def _sweep(self, scaled: Workload, rates: list[float], slos: dict[str, float],
               attainment: float, refine: int, count: int, result: PerfResult) -> None:
        for rep, repetition in enumerate(sweeps(
                self._load, self.tokenizer, scaled, rates, slos, attainment, refine,
                count=count, exact=self.server.engine.exact_output_lengths)):
            result.repetitions.append(repetition)
            if repetition.problems:
                self._check_alive("during the sweep", repetition.run)
                raise InvalidRun(f"invalid sweep (repetition {rep + 1} of {count}), "
                                 "figures not used: " + "; ".join(repetition.problems))

    @contextlib.contextmanager
    def _gpu_sampling(self) -> Iterator[None]:
        """GPU telemetry around the measured repetitions (GPU hosts); its summary is kept."""
        if self.telemetry is None:
            yield
            return
        with self.telemetry() as sampler:
            yield
        self.telemetry_summary = sampler.summary()
        warn_if_throttled(self.telemetry_summary, self.test_id)

    def _warm_up(self, scaled: Workload) -> None:
        """Unmeasured load with other prompts (a seed no repetition uses), so the
        measured runs neither pay first-run costs nor find their prompts cached."""
        dataset: Any = scaled.dataset
        seed = dataset.seed + WARMUP_SEED_OFFSET
        if scaled.warmup_requests is None:
            warm, arrivals = replace(dataset, seed=seed), scaled.arrivals
        else:
            warm, arrivals = replace(dataset, num_prompts=scaled.warmup_requests,
                                     seed=seed), Arrivals()
        requests = warm.build(self.tokenizer)
        if scaled.endpoint == "chat":
            requests = for_chat(requests, self.tokenizer)
        self._load(requests, arrivals, seed=seed, workload=scaled, label="warm-up")
        self._check_alive("during warm-up")

    def _check_alive(self, during: str, run: LoadRun | None = None) -> None:
        # Failed requests may be a server's death not yet collectable: give it a moment.
        failed = run is not None and any(r.error for r in run.records)
        for server in self.servers:
            server.check_alive(during, grace_s=DEATH_GRACE_S if failed else 0.0)

    def _drift(self, run: LoadRun) -> dict[str, float]:
        drift = metrics.output_length_drift(run)
        pct = drift.get("output_len_drift_pct", 0.0)
        if abs(pct) > metrics.DRIFT_WARN_PCT:
            warnings.warn(OutputLengthDrift(
                f"{self.test_id}: {self.server.engine.name} stopped at EOS: outputs "
                f"{pct:+.0f}% off the target on average; per-token figures use the real "
                "lengths, totals are not comparable with an engine that honours ignore_eos"),
                stacklevel=2)
        return drift

    def _cache_salt_field(self, scaled: Workload) -> str | None:
        """The request field a fresh or second-run workload keys the prefix cache with;
        None for ``as-is``."""
        if scaled.prefix_cache == "as-is":
            return None
        field = self.server.engine.cache_salt_field
        if field is None:
            raise InvalidRun(f"a {scaled.prefix_cache} workload keys the prefix cache per "
                             f"run, which {self.server.engine.name} cannot (no per-request "
                             "cache salt); it runs on vLLM")
        return field

    def _write(self, workload: Workload, scaled: Workload) -> None:
        write_json_atomic(result_path(self.results_dir, self.test_id),
                          self._document(workload, scaled))

    def _load(self, requests: Any, arrivals: Arrivals, seed: int,
              workload: Workload, label: str = "",
              extra_body: Mapping[str, object] | None = None) -> LoadRun:
        """One run with the engine's /metrics around it; a saturated client is
        retried with twice the load processes (up to the cores), then kept as is."""
        processes = workload.processes or 1
        live = getattr(self.progress, "live", None)
        started = time.monotonic()

        def on_progress(done: int, total: int) -> None:
            if live is not None:
                live(f"{self.test_id.rsplit('::', 1)[-1]}: {label}: {done}/{total} requests, "
                     f"{time.monotonic() - started:.0f} s")

        while True:
            with contextlib.ExitStack() as stack:
                stack.enter_context(pinned(self.client_cpus))
                samplers = [stack.enter_context(TelemetrySampler(
                    s.base_url, s.engine.metric_series)) for s in self.servers]
                run = run_load_sync(
                    base_url=[s.base_url for s in self.servers], api_key=self.server.api_key,
                    model=self.server.spec.served_model_name, requests=requests,
                    arrivals=arrivals, seed=seed, endpoint=workload.endpoint,
                    processes=processes, on_progress=on_progress,
                    stall_timeout=workload.stall_timeout_s, extra_body=extra_body)
            run.server = _server_telemetry(samplers)
            cap = arrivals.max_concurrency
            if (workload.processes is not None or not run.saturation
                    or processes * 2 > (os.cpu_count() or 1)
                    or (cap is not None and cap < processes * 2)):
                return run  # healthy, or nothing left to spread: find_problems says why
            processes *= 2

    def summary(self) -> dict[str, Any]:
        """What the terminal table shows: median figures of the last workload and its verdicts."""
        last = self.results[-1]
        # A workload that raised before its first repetition (say, a dataset
        # that cannot be built) has no figures; its test fails on its own error.
        figures = last.figures if last.repetitions else {}
        row: dict[str, Any] = {k: figures.get(k) for k in
                               (*HEADLINE_FIGURES, "completed", "failed")}
        if "max_rate_under_slo" in figures:
            row["max_rate_under_slo"] = figures["max_rate_under_slo"]
        if last.accuracy and "skipped" in last.accuracy:
            row["accuracy_skipped"] = last.accuracy["skipped"]
        row["valid"] = last.valid
        row["repeats"] = len(last.repetitions)
        row["result"] = str(last.path)
        if last.outcome is not None:
            row["gate"] = last.outcome.to_dict()
        return row

    def cannot_gate(self) -> str:
        """Why this test gated nothing (every workload compared with its baseline, none
        resolving the change it must): empty when it gated something."""
        compared = [r.outcome for r in self.results
                    if r.outcome is not None and r.outcome.status == "compared"]
        reasons = [o.cannot_gate for o in compared]
        return reasons[-1] if compared and all(reasons) else ""

    def baseline_properties(self) -> list[tuple[str, str]]:
        """New baselines, shipped in the test report to the process that writes them."""
        return [(BASELINE_PROPERTY, json.dumps(r.outcome.baseline.to_dict()))
                for r in self.results
                if r.outcome is not None and r.outcome.baseline is not None
                and r.outcome.status == "baseline written"]

    def junit_properties(self) -> list[tuple[str, str]]:
        """Median figures and verdicts of the last workload as flat junit properties."""
        last = self.results[-1]
        props = [(f"mi300x.{k}", f"{v:.6g}") for k, v in sorted(last.figures.items())
                 if math.isfinite(v)]
        props.append(("mi300x.repeats", str(len(last.repetitions))))
        if last.outcome is not None:
            props.append(("mi300x.baseline", last.outcome.status))
            if last.outcome.decision:
                props.append(("mi300x.decision", last.outcome.decision))
            props += [(f"mi300x.verdict.{v.metric}", v.kind.value) for v in last.outcome.verdicts]
        props.append(("mi300x.result", str(last.path)))
        return props

    def _provenance(self, scaled: Workload) -> dict[str, Any]:
        return {"engine": self.engine, "server": self.server.describe(),
                **({"servers": [s.describe() for s in self.servers]}
                   if len(self.servers) > 1 else {}),
                "workload": scaled.describe(), "host": self.host.describe(),
                "fingerprint": host_fingerprint(),
                "harness": harness_info(), "run_id": self.run_id,
                "seeds": [r.seed for r in self.results[-1].repetitions]}

    def _document(self, workload: Workload, scaled: Workload) -> dict[str, Any]:
        return {
            "schema": SCHEMA,
            "test": self.test_id,
            "run_id": self.run_id,
            "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "valid": all(r.valid for r in self.results),
            "runs": [
                {
                    **rep.run.to_dict(),
                    "seed": rep.seed,
                    "figures": finite_figures(rep.figures),
                    "problems": rep.problems,
                    **({"sweep": rep.sweep} if rep.sweep is not None else {}),
                }
                for r in self.results for rep in r.repetitions
            ],
            "gate": [r.outcome.to_dict() for r in self.results if r.outcome is not None],
            **({"accuracy": [r.accuracy for r in self.results if r.accuracy]}
               if any(r.accuracy for r in self.results) else {}),
            "workload": {"full_size": workload.describe(), "scaled": scaled.describe()},
            "formulas": metrics.FORMULAS,
            "server": self.server.describe(),
            **({"servers": [s.describe() for s in self.servers]}
               if len(self.servers) > 1 else {}),
            "engine": self.engine,
            "model": self.model,
            "host": self.host.describe(),
            "fingerprint": host_fingerprint(),
            "harness": harness_info(),
            **({"telemetry": self.telemetry_summary} if self.telemetry_summary else {}),
            **self._tokenizer_record(),
        }

    def _tokenizer_record(self) -> dict[str, Any]:
        """How prompt lengths were counted and prompt text made (exact or not)."""
        describe = getattr(self.tokenizer, "describe", None)
        return {"tokenizer": describe()} if callable(describe) else {}
