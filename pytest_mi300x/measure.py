"""One measured load run against a live server, checked, and written as a result file."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from pytest_mi300x import metrics, provenance
from pytest_mi300x.hosts import HostProfile, WorkloadScale
from pytest_mi300x.loadgen import LoadRun, run_load_sync
from pytest_mi300x.pool import RunningServer
from pytest_mi300x.results import SCHEMA, result_path, write_json_atomic
from pytest_mi300x.workload.arrivals import Arrivals
from pytest_mi300x.workload.datasets import RandomDataset, Tokenizer

SUMMARY_PROPERTY = "mi300x_summary"
SUMMARY_FIGURES = ("request_throughput", "output_throughput", "median_ttft_ms",
                   "mean_tpot_ms", "completed", "failed")
WARMUP_SEED_OFFSET = 1_000_003
"""Warm-up prompts come from another seed, so they never pre-fill the prefix cache
with the measured prompts."""


class InvalidRun(AssertionError):
    """A run whose figures mean nothing (failed requests, wrong token counts)."""


@dataclass(frozen=True)
class Workload:
    """What load to drive, written at full (MI300X) size; hosts scale it down."""

    dataset: RandomDataset
    arrivals: Arrivals = Arrivals()
    warmup_requests: int = 2

    def scaled(self, scale: WorkloadScale) -> Workload:
        ds = self.dataset
        return replace(
            self,
            dataset=replace(ds, num_prompts=scale.num_prompts(ds.num_prompts),
                            input_len=scale.length(ds.input_len),
                            output_len=scale.length(ds.output_len)),
            arrivals=replace(self.arrivals,
                             request_rate=scale.request_rate(self.arrivals.request_rate)),
        )

    def describe(self) -> dict[str, Any]:
        return {"dataset": self.dataset.describe(), "arrivals": self.arrivals.describe(),
                "warmup_requests": self.warmup_requests}


@dataclass(frozen=True)
class PerfResult:
    """Figures of one measured run and where they were written."""

    figures: dict[str, float | int]
    problems: list[str]
    path: Path
    run: LoadRun

    @property
    def valid(self) -> bool:
        return not self.problems


class Measurer:
    """Drives workloads at one server for one test; the ``perf`` fixture hands this out."""

    def __init__(self, *, server: RunningServer, tokenizer: Tokenizer, host: HostProfile,
                 test_id: str, results_dir: Path, model: dict[str, Any],
                 engine: dict[str, Any], run_id: str) -> None:
        self.server = server
        self.tokenizer = tokenizer
        self.host = host
        self.test_id = test_id
        self.results_dir = results_dir
        self.model = model
        self.engine = engine
        self.run_id = run_id
        self.results: list[PerfResult] = []

    def run(self, workload: Workload) -> PerfResult:
        """Warm up, measure, check and record; raises InvalidRun when the run is not valid."""
        scaled = workload.scaled(self.host.scale)
        requests = scaled.dataset.build(self.tokenizer)
        if scaled.warmup_requests:
            warm = replace(scaled.dataset, num_prompts=scaled.warmup_requests,
                           seed=scaled.dataset.seed + WARMUP_SEED_OFFSET)
            self._load(warm.build(self.tokenizer), Arrivals(), seed=warm.seed)
            self.server.check_alive("during warm-up")
        run = self._load(requests, scaled.arrivals, seed=scaled.dataset.seed)
        figures = metrics.compute_figures(run)
        problems = metrics.find_problems(run)
        if problems:
            # A dead server explains failed requests better than the requests do.
            self.server.check_alive("during the measured run")
        path = result_path(self.results_dir, self.test_id)
        result = PerfResult(figures, problems, path, run)
        self.results.append(result)
        write_json_atomic(path, self._document(workload, scaled))
        if problems:
            raise InvalidRun("invalid run, figures not used: " + "; ".join(problems))
        return result

    def _load(self, requests: Any, arrivals: Arrivals, seed: int) -> LoadRun:
        return run_load_sync(
            base_url=self.server.base_url, api_key=self.server.api_key,
            model=self.server.spec.served_model_name, requests=requests,
            arrivals=arrivals, seed=seed,
        )

    def summary(self) -> dict[str, Any]:
        """The figures the terminal table shows, from the last run."""
        last = self.results[-1]
        row: dict[str, Any] = {k: last.figures.get(k) for k in SUMMARY_FIGURES}
        row["valid"] = last.valid
        row["result"] = str(last.path)
        return row

    def _document(self, workload: Workload, scaled: Workload) -> dict[str, Any]:
        return {
            "schema": SCHEMA,
            "test": self.test_id,
            "run_id": self.run_id,
            "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "valid": all(r.valid for r in self.results),
            "runs": [
                {
                    "started_at": r.run.started_at,
                    "figures": _finite(r.figures),
                    "problems": r.problems,
                    "records": [rec.to_dict() for rec in r.run.records],
                }
                for r in self.results
            ],
            "workload": {"full_size": workload.describe(), "scaled": scaled.describe()},
            "formulas": metrics.FORMULAS,
            "server": self.server.describe(),
            "engine": self.engine,
            "model": self.model,
            "host": self.host.describe(),
            "fingerprint": provenance.host_fingerprint(),
            "harness": provenance.harness(),
        }


def _finite(figures: dict[str, float | int]) -> dict[str, float | int | None]:
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v)
            for k, v in figures.items()}
