"""A test's measurement, the warm-up-and-run half: the workload fitted to the host (the
roofline, timeouts from its queueing), warm-up, repetitions against a live server and their
checks. Recording and judging (the result document, the gate) are load/recording.py's.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from pytest_mi300x.hosts.placement import pinned
from pytest_mi300x.hosts.profile import HostProfile
from pytest_mi300x.judge.gate import Gate
from pytest_mi300x.load import figures as metrics
from pytest_mi300x.load.capacity import sweeps
from pytest_mi300x.load.figures import check_slos
from pytest_mi300x.load.fit import HostFit
from pytest_mi300x.load.recording import Recording, server_telemetry
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
from pytest_mi300x.results.files import result_path
from pytest_mi300x.servers.endpoint import Endpoint
from pytest_mi300x.servers.pool import RunningServer
from pytest_mi300x.telemetry.engine import TelemetrySampler
from pytest_mi300x.workload.arrivals import Arrivals
from pytest_mi300x.workload.datasets import Tokenizer
from pytest_mi300x.workload.tokenizer import for_chat
from pytest_mi300x.workload.workload import Workload

__all__ = ["EngineStalled", "InvalidRun", "Measured", "Measurer", "OutputLengthDrift",
           "PerfResult", "Repetition", "Workload"]

WARMUP_SEED_OFFSET = 1_000_003
"""Warm-up prompts come from another seed, so they never pre-fill the prefix cache
with the measured prompts."""
DEATH_GRACE_S = 10.0
"""How long a server whose requests failed is given to be seen dead (before the run is
called invalid instead)."""


Progress = Callable[[str], None]


class Measurer(Recording):
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
        """The session's results by test id (failed ones too), for claims that compare them."""
        self.fit = HostFit(host, model, self.servers)
        """The servers' roofline: the workload's feasibility, its timeouts, its fractions."""

    def run(self, workload: Workload) -> PerfResult:
        """Warm up, measure ``repeats`` times, check, record, then gate against the baseline.

        Raises InvalidRun when a repetition is not valid, PerfRegression when a
        gated metric regressed, MissingBaseline under ``--require-baseline``.
        """
        scaled = workload.scaled(self.host.scale)
        self.fit.check(scaled, self.fit.lengths(scaled, self.tokenizer))
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
        # A ladder reaching past the roofline is fitted under it (a rung above can only miss).
        fitted = self.fit.check(scaled, self.fit.lengths(scaled, self.tokenizer),
                                ladder=host_rates)
        if fitted.status == "rescaled":
            warnings.warn(f"{self.test_id}: {fitted.reason}", stacklevel=2)
            host_rates = list(fitted.rates)
        scaled = replace(scaled, slos=dict(slos),
                         arrivals=replace(scaled.arrivals, request_rate=min(host_rates),
                                          ramp_up=None, ramp_start_rps=None,
                                          ramp_end_rps=None),
                         sweep={"rates": host_rates, "attainment": attainment,
                                "refine": refine, "point_s": point_s, "retries": retries,
                                **({"rescaled": fitted.reason}
                                   if fitted.status == "rescaled" else {})})
        count = self.repeats if sweeps is None else min(self.repeats, sweeps)
        return self._run(workload, scaled, lambda result: self._sweep(
            scaled, host_rates, dict(slos), attainment, refine, count, result))

    def _run(self, workload: Workload, scaled: Workload,
             measure: Callable[[PerfResult], None]) -> PerfResult:
        result = PerfResult([], result_path(self.results_dir, self.test_id))
        try:
            if scaled.warmup_requests != 0:
                self._warm_up(scaled)
            self.results.append(result)
            with self._gpu_sampling():
                measure(result)
            if scaled.accuracy is not None:
                self._check_answers(scaled.accuracy, result)
        except Exception as exc:
            # Kept as failed: a claim comparing this test says so instead of measuring the
            # same workload again (a stalled hour twice).
            if self.measured is not None:
                self.measured[self.test_id] = Measured(
                    workload.describe(), result, self.server.key,
                    failed=f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
            raise
        finally:
            if not result.valid and result in self.results:
                self._write(workload, scaled)
        if self.measured is not None:
            self.measured[self.test_id] = Measured(workload.describe(), result,
                                                   self.server.key)
        try:
            self._judge(result, scaled)
        finally:
            self._write(workload, scaled)
        if result.outcome is not None:
            result.outcome.check()
        return result

    def _measure(self, scaled: Workload, result: PerfResult) -> None:
        dataset: Any = scaled.dataset  # a frozen dataclass (datasets.Dataset)
        # Outputs stopping at EOS on every engine are as long as the model makes them.
        exact = self.server.engine.exact_output_lengths and not scaled.stop_at_eos
        salt_field = _cache_salt_field(self.server.engine, scaled)
        seeds = fresh_seeds(getattr(self.server, "measured_seeds", None), scaled,
                            self.repeats, self.test_id)
        for rep, seed in enumerate(seeds):
            requests = replace(dataset, seed=seed).build(self.tokenizer)
            if scaled.endpoint == "chat":
                requests = for_chat(requests, self.tokenizer)
            # A salt never used before: the cache holds nothing these requests can find,
            # whatever ran on the server earlier (the guide's empty cache, without a reset).
            body: dict[str, object] = {salt_field: secrets.token_hex(8)} if salt_field else {}
            if scaled.stop_at_eos:  # sent to every engine alike (TGI's router ignores it)
                body["ignore_eos"] = False
            salt = body or None
            if scaled.prefix_cache == "second-run":
                self._load(requests, scaled.arrivals, seed=seed, workload=scaled,
                           label="second-run warm-up", extra_body=salt)
            run = self._load(requests, scaled.arrivals, seed=seed, workload=scaled,
                             label=f"repetition {rep + 1}/{self.repeats}", extra_body=salt)
            problems = metrics.find_problems(run, exact_output=exact)
            figures = metrics.compute_figures(run, slos=scaled.slos)
            figures.update(self.fit.achieved(figures))
            if not exact:
                figures.update(self._drift(run, warn=not scaled.stop_at_eos))
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
                        f"{self._stall_s(scaled):g} s; its server is replaced for the next test")
                raise InvalidRun(f"invalid run (repetition {rep + 1} of {self.repeats}), "
                                 "figures not used: " + "; ".join(problems))

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
        run = self._load(requests, arrivals, seed=seed, workload=scaled, label="warm-up",
                         extra_body={"ignore_eos": False} if scaled.stop_at_eos else None)
        self._check_alive("during warm-up")
        self.fit.learn(run, arrivals, requests)  # a wave's time, measured: the runs' timeouts

    def _check_alive(self, during: str, run: LoadRun | None = None) -> None:
        # Failed requests may be a server's death not yet collectable: give it a moment.
        failed = run is not None and any(r.error for r in run.records)
        for server in self.servers:
            server.check_alive(during, grace_s=DEATH_GRACE_S if failed else 0.0)

    def _load(self, requests: Any, arrivals: Arrivals, seed: int,
              workload: Workload, label: str = "",
              extra_body: Mapping[str, object] | None = None) -> LoadRun:
        """One run with the engine's /metrics around it; a saturated client is
        retried with twice the load processes (up to the cores), then kept as is."""
        processes = workload.processes or 1
        limits = self.fit.timeouts_for(workload, requests, arrivals)
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
                    request_timeout=limits.request_s, stall_timeout=limits.stall_s,
                    extra_body=extra_body)
            run.server = server_telemetry(samplers)
            cap = arrivals.max_concurrency
            if (workload.processes is not None or not run.saturation
                    or processes * 2 > (os.cpu_count() or 1)
                    or (cap is not None and cap < processes * 2)):
                return run  # healthy, or nothing left to spread: find_problems says why
            processes *= 2


def _cache_salt_field(engine: Any, scaled: Workload) -> str | None:
    """The request field a fresh or second-run workload keys the prefix cache with;
    None for ``as-is``."""
    if scaled.prefix_cache == "as-is":
        return None
    field = engine.cache_salt_field
    if field is None:
        raise InvalidRun(f"a {scaled.prefix_cache} workload keys the prefix cache per "
                         f"run, which {engine.name} cannot (no per-request "
                         "cache salt); it runs on vLLM")
    return field

