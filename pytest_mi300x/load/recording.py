"""The record-and-judge half of a test's measurement: the result document, its provenance,
the gate's verdict against the baseline, and what the session table and junit show.

``Measurer`` (load/measurer.py, the warm-up-and-run half) inherits it.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pytest_mi300x.accuracy.check import AccuracyCheck
from pytest_mi300x.hosts.fingerprint import harness_info, host_fingerprint
from pytest_mi300x.hosts.profile import HostProfile
from pytest_mi300x.judge.baselines import BASELINE_PROPERTY
from pytest_mi300x.judge.gate import Gate, evaluate
from pytest_mi300x.load import figures as metrics
from pytest_mi300x.load.records import LoadRun
from pytest_mi300x.load.runs import OutputLengthDrift, PerfResult
from pytest_mi300x.results.files import result_path, write_json_atomic
from pytest_mi300x.results.metrics import HEADLINE_FIGURES
from pytest_mi300x.results.model import SCHEMA, finite_figures
from pytest_mi300x.telemetry.engine import TelemetrySampler
from pytest_mi300x.telemetry.gpu import warn_if_throttled
from pytest_mi300x.workload.workload import Workload

if TYPE_CHECKING:
    from pytest_mi300x.load.fit import HostFit
    from pytest_mi300x.servers.endpoint import Endpoint
    from pytest_mi300x.servers.pool import RunningServer
    from pytest_mi300x.workload.datasets import Tokenizer

ADDITIVE_SERVER_FIGURES = ("server_prompt_tokens", "server_generation_tokens",
                           "server_preemptions")
"""Engine counters that add up over instances (means and peaks do not: they stay per
instance)."""


def server_telemetry(samplers: Sequence[TelemetrySampler]) -> dict[str, object]:
    """The engine's view of a run: one server's as before; several instances' each under
    ``instances``, with the counters that add up summed in ``figures``."""
    if len(samplers) == 1:
        return {"figures": samplers[0].figures, **samplers[0].describe()}
    instances = [{"base_url": t.base_url, "figures": t.figures, **t.describe()}
                 for t in samplers]
    figures = {k: sum(t.figures[k] for t in samplers) for k in ADDITIVE_SERVER_FIGURES
               if all(k in t.figures for t in samplers)}
    return {"figures": figures, "instances": instances}


class Recording:
    """Writes and judges what a Measurer measured (its attributes, set by Measurer)."""

    server: RunningServer | Endpoint
    servers: list[RunningServer | Endpoint]
    tokenizer: Tokenizer
    host: HostProfile
    test_id: str
    results_dir: Path
    model: dict[str, Any]
    engine: dict[str, Any]
    run_id: str
    gate: Gate | None
    floors: dict[str, float]
    results: list[PerfResult]
    telemetry: Callable[[], Any] | None
    telemetry_summary: dict[str, Any] | None
    fit: HostFit

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

    def _drift(self, run: LoadRun, warn: bool = True) -> dict[str, float]:
        drift = metrics.output_length_drift(run)
        pct = drift.get("output_len_drift_pct", 0.0)
        if warn and abs(pct) > metrics.DRIFT_WARN_PCT:
            warnings.warn(OutputLengthDrift(
                f"{self.test_id}: {self.server.engine.name} stopped at EOS: outputs "
                f"{pct:+.0f}% off the target on average; per-token figures use the real "
                "lengths, totals are not comparable with an engine that honours ignore_eos"),
                stacklevel=2)
        return drift

    def _stall_s(self, scaled: Workload) -> float:
        done = self.fit.timeouts
        return round(done.stall_s, 1) if done is not None else scaled.stall_timeout_s

    def _judge(self, result: PerfResult, scaled: Workload) -> None:
        if self.gate is not None:
            result.outcome = evaluate(
                self.gate, nodeid=self.test_id, engine_name=self.server.engine.name,
                model=str(self.model["logical"]),
                repetitions=[finite_figures(r.figures) for r in result.repetitions],
                fingerprint=host_fingerprint(), engine=self.engine,
                provenance=self._provenance(scaled), floors=self.floors)

    def _write(self, workload: Workload, scaled: Workload) -> None:
        write_json_atomic(result_path(self.results_dir, self.test_id),
                          self._document(workload, scaled))

    def summary(self) -> dict[str, Any]:
        """What the terminal table shows: median figures of the last workload and its verdicts."""
        last = self.results[-1]
        # A workload that raised before its first repetition (say, a dataset
        # that cannot be built) has no figures; its test fails on its own error.
        figures = last.figures if last.repetitions else {}
        row: dict[str, Any] = {k: figures.get(k) for k in
                               (*HEADLINE_FIGURES, "completed", "failed")}
        for key in ("max_rate_under_slo", "roofline_decode_bw_pct",
                    "roofline_prefill_compute_pct"):
            if key in figures:
                row[key] = figures[key]
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
            # The roofline, the workload's fit under it and the timeouts its queueing gave.
            "host_fit": self.fit.describe(),
            "fingerprint": host_fingerprint(),
            "harness": harness_info(),
            **({"telemetry": self.telemetry_summary} if self.telemetry_summary else {}),
            **self._tokenizer_record(),
        }

    def _tokenizer_record(self) -> dict[str, Any]:
        """How prompt lengths were counted and prompt text made (exact or not)."""
        describe = getattr(self.tokenizer, "describe", None)
        return {"tokenizer": describe()} if callable(describe) else {}
