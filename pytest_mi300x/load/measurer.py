"""A test's measurement: warm-up, repetitions against a live server, checks, the result
document, and the gate's verdict against the baseline."""

from __future__ import annotations

import contextlib
import json
import math
import os
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from pytest_mi300x.hosts.fingerprint import harness_info, host_fingerprint
from pytest_mi300x.hosts.profile import HostProfile
from pytest_mi300x.judge.baselines import BASELINE_PROPERTY
from pytest_mi300x.judge.gate import Gate, GateOutcome, evaluate
from pytest_mi300x.load import figures as metrics
from pytest_mi300x.load.client import run_load_sync
from pytest_mi300x.load.figures import check_slos
from pytest_mi300x.load.records import LoadRun
from pytest_mi300x.load.sweep import DEFAULT_ATTAINMENT, find_max_rate
from pytest_mi300x.net import post_json
from pytest_mi300x.results.files import result_path, write_json_atomic
from pytest_mi300x.results.metrics import HEADLINE_FIGURES
from pytest_mi300x.results.model import SCHEMA, FailureKind, finite_figures, median_figures
from pytest_mi300x.servers.endpoint import Endpoint
from pytest_mi300x.servers.pool import RunningServer
from pytest_mi300x.telemetry.engine import TelemetrySampler
from pytest_mi300x.telemetry.gpu import warn_if_throttled
from pytest_mi300x.workload.arrivals import Arrivals
from pytest_mi300x.workload.datasets import Tokenizer
from pytest_mi300x.workload.tokenizer import for_chat
from pytest_mi300x.workload.workload import Workload

SWEEP_SEED_STRIDE = 1000
"""Point k of repetition r's sweep draws its prompts from seed r * 1000 + k."""
WARMUP_SEED_OFFSET = 1_000_003
"""Warm-up prompts come from another seed, so they never pre-fill the prefix cache
with the measured prompts."""


class OutputLengthDrift(UserWarning):
    """An engine's outputs stopped well short of (or past) the asked lengths."""


class InvalidRun(AssertionError):
    """A run whose figures mean nothing (failed requests, wrong token counts)."""

    failure_kind = FailureKind.INVALID_RUN


@dataclass(frozen=True)
class Repetition:
    """One measured run of a workload (for a capacity sweep: one whole sweep, ``run`` its
    best passing point)."""

    seed: int
    figures: dict[str, float | int]
    problems: list[str]
    run: LoadRun
    sweep: dict[str, Any] | None = None

    @property
    def valid(self) -> bool:
        return not self.problems


@dataclass
class PerfResult:
    """Every repetition of one workload, the median figures, and the gate's outcome."""

    repetitions: list[Repetition]
    path: Path
    outcome: GateOutcome | None = None

    @property
    def figures(self) -> dict[str, float]:
        """Median over the repetitions, per figure."""
        return median_figures([finite_figures(r.figures) for r in self.repetitions])

    @property
    def valid(self) -> bool:
        return bool(self.repetitions) and all(r.valid for r in self.repetitions)


@dataclass(frozen=True)
class Measured:
    """A valid result of this session, kept for the claims that compare results."""

    workload: dict[str, Any]
    """The workload as the test wrote it (full size)."""
    result: PerfResult
    server: str
    """The server's key: results of one server need no start-to-start noise."""


Progress = Callable[[str], None]


class Measurer:
    """Drives workloads at one server for one test; the ``perf`` fixture hands this out."""

    def __init__(self, *, server: RunningServer | Endpoint, tokenizer: Tokenizer,
                 host: HostProfile,
                 test_id: str, results_dir: Path, model: dict[str, Any],
                 engine: dict[str, Any], run_id: str, repeats: int = 1,
                 gate: Gate | None = None, floors: dict[str, float] | None = None,
                 telemetry: Callable[[], Any] | None = None,
                 progress: Progress | None = None,
                 measured: dict[str, Measured] | None = None) -> None:
        self.server = server
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
                     refine: int = 3, point_s: float = 5.0, retries: int = 1) -> PerfResult:
        """The highest request rate at which ``attainment`` of the requests meet every SLO
        (ms on ttft, tpot, e2el), as the figure ``max_rate_under_slo`` (req/s), gated
        against the baseline like a throughput.

        Each repetition is one sweep (load/sweep.py find_max_rate): ``rates`` (written at
        full size; the host scales them, never into a burst) are walked upwards until one
        misses, then the gap is bisected ``refine`` times. Every point sends fresh prompts
        of the workload's dataset for at least ``point_s`` seconds (more prompts at higher
        rates: a queue needs time to build past the knee), and a near miss (at least half
        the attainment asked) is tried ``retries`` more times before it counts. The
        warm-up runs at the lowest rate. A sweep where no rate met the SLOs is an invalid
        run.
        """
        check_slos(dict(slos))
        host_rates = [self.host.scale.request_rate(r, burst_above_max=False) for r in rates]
        scaled = workload.scaled(self.host.scale)
        scaled = replace(scaled, slos=dict(slos),
                         arrivals=replace(scaled.arrivals, request_rate=min(host_rates),
                                          ramp_up=None, ramp_start_rps=None,
                                          ramp_end_rps=None),
                         sweep={"rates": host_rates, "attainment": attainment,
                                "refine": refine, "point_s": point_s, "retries": retries})
        return self._run(workload, scaled, lambda result: self._sweep(
            scaled, host_rates, dict(slos), attainment, refine, result))

    def _run(self, workload: Workload, scaled: Workload,
             measure: Callable[[PerfResult], None]) -> PerfResult:
        if scaled.warmup_requests != 0:
            self._warm_up(scaled)
        result = PerfResult([], result_path(self.results_dir, self.test_id))
        self.results.append(result)
        try:
            with self._gpu_sampling():
                measure(result)
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
        for rep in range(self.repeats):
            # A fresh seed per repetition: identical prompts would hit the prefix
            # cache from the previous repetition and measure the cache instead.
            seed = dataset.seed + rep
            requests = replace(dataset, seed=seed).build(self.tokenizer)
            if scaled.endpoint == "chat":
                requests = for_chat(requests, self.tokenizer)
            if scaled.prefix_cache != "as-is":
                self._reset_prefix_cache()
            if scaled.prefix_cache == "second-run":
                self._load(requests, scaled.arrivals, seed=seed, workload=scaled,
                           label="second-run warm-up")
            run = self._load(requests, scaled.arrivals, seed=seed, workload=scaled,
                             label=f"repetition {rep + 1}/{self.repeats}")
            problems = metrics.find_problems(run, exact_output=exact)
            figures = metrics.compute_figures(run, slos=scaled.slos)
            if not exact:
                figures.update(self._drift(run))
            result.repetitions.append(Repetition(seed, figures, problems, run))
            if problems:
                # A dead server explains failed requests better than the requests do.
                self.server.check_alive("during the measured run")
                raise InvalidRun(f"invalid run (repetition {rep + 1} of {self.repeats}), "
                                 "figures not used: " + "; ".join(problems))

    def _sweep(self, scaled: Workload, rates: list[float], slos: dict[str, float],
               attainment: float, refine: int, result: PerfResult) -> None:
        for rep in range(self.repeats):
            repetition = self._sweep_once(scaled, rates, slos, attainment, refine, rep)
            result.repetitions.append(repetition)
            if repetition.problems:
                self.server.check_alive("during the sweep")
                raise InvalidRun(f"invalid sweep (repetition {rep + 1} of {self.repeats}), "
                                 "figures not used: " + "; ".join(repetition.problems))

    def _sweep_once(self, scaled: Workload, rates: list[float], slos: dict[str, float],
                    attainment: float, refine: int, rep: int) -> Repetition:
        dataset: Any = scaled.dataset
        exact = self.server.engine.exact_output_lengths
        seed = dataset.seed + rep
        runs: dict[float, tuple[LoadRun, list[str]]] = {}

        sweep_spec = scaled.sweep or {}
        point_s = float(sweep_spec.get("point_s", 0.0))
        tries = 0

        def measure(rate: float) -> tuple[dict[str, Any], bool]:
            nonlocal tries
            # Fresh prompts at every point: the previous point's are in the prefix cache.
            point_seed = seed * SWEEP_SEED_STRIDE + tries
            tries += 1
            count = dataset.num_prompts
            if count is not None:
                count = max(count, math.ceil(rate * point_s))
            requests = replace(dataset, seed=point_seed, num_prompts=count).build(
                self.tokenizer)
            if scaled.endpoint == "chat":
                requests = for_chat(requests, self.tokenizer)
            arrivals = replace(scaled.arrivals, request_rate=rate, ramp_up=None,
                               ramp_start_rps=None, ramp_end_rps=None)
            run = self._load(requests, arrivals, seed=point_seed, workload=scaled,
                             label=f"sweep {rep + 1}/{self.repeats} at {rate:.3g} req/s")
            problems = metrics.find_problems(run, exact_output=exact)
            figures = metrics.compute_figures(run, slos=slos)
            held = not problems and figures["slo_attainment"] >= attainment
            if rate not in runs or held:  # a retry that held is the point's run
                runs[rate] = (run, problems)
            return figures, not problems

        sweep = find_max_rate(measure, rates, slos, attainment=attainment, refine=refine,
                              retries=int(sweep_spec.get("retries", 0)),
                              near_miss=attainment / 2)
        best = sweep.best_rate
        described = {**sweep.describe(), "problems": {
            f"{rate:g}": problems for rate, (_, problems) in runs.items() if problems}}
        if best is None:
            lowest = sweep.points[0]
            return Repetition(seed, {}, [
                f"no rate met the SLOs {slos} for {attainment:.0%} of requests (lowest "
                f"tried: {lowest.rate:.3g} req/s, attainment {lowest.attainment:.0%}); "
                "lower the rates"], runs[lowest.rate][0], described)
        point = max((p for p in sweep.points if p.rate == best), key=lambda p: p.attainment)
        figures: dict[str, float | int] = {
            "max_rate_under_slo": best, "slo_attainment": point.attainment,
            "sweep_points": len(sweep.points),
            # The top rate held: the capacity is at least this.
            "max_rate_capped": float(best == max(rates))}
        return Repetition(seed, figures, [], runs[best][0], described)

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
        self.server.check_alive("during warm-up")

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

    def _reset_prefix_cache(self) -> None:
        status, _ = post_json(f"{self.server.base_url}/reset_prefix_cache", {},
                              self.server.api_key)
        if status != 200:
            raise InvalidRun(
                f"POST /reset_prefix_cache answered {status}: a fresh or second-run workload "
                "needs it; add VLLM_SERVER_DEV_MODE=1 to the flag set's env")

    def _write(self, workload: Workload, scaled: Workload) -> None:
        write_json_atomic(result_path(self.results_dir, self.test_id),
                          self._document(workload, scaled))

    def _load(self, requests: Any, arrivals: Arrivals, seed: int,
              workload: Workload, label: str = "") -> LoadRun:
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
            with TelemetrySampler(self.server.base_url,
                                  self.server.engine.metric_series) as telemetry:
                run = run_load_sync(
                    base_url=self.server.base_url, api_key=self.server.api_key,
                    model=self.server.spec.served_model_name, requests=requests,
                    arrivals=arrivals, seed=seed, endpoint=workload.endpoint,
                    processes=processes, on_progress=on_progress)
            run.server = {"figures": telemetry.figures, **telemetry.describe()}
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
        row["valid"] = last.valid
        row["repeats"] = len(last.repetitions)
        row["result"] = str(last.path)
        if last.outcome is not None:
            row["gate"] = last.outcome.to_dict()
        return row

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
            props += [(f"mi300x.verdict.{v.metric}", v.kind.value) for v in last.outcome.verdicts]
        props.append(("mi300x.result", str(last.path)))
        return props

    def _provenance(self, scaled: Workload) -> dict[str, Any]:
        return {"engine": self.engine, "server": self.server.describe(),
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
            "workload": {"full_size": workload.describe(), "scaled": scaled.describe()},
            "formulas": metrics.FORMULAS,
            "server": self.server.describe(),
            "engine": self.engine,
            "model": self.model,
            "host": self.host.describe(),
            "fingerprint": host_fingerprint(),
            "harness": harness_info(),
            **({"telemetry": self.telemetry_summary} if self.telemetry_summary else {}),
        }
