"""A workload against the host that serves it: whether the GPUs can carry it (the roofline),
how long its streams may stay silent (its queueing), and how close its figures came."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pytest_mi300x.engines.flags import cli_name
from pytest_mi300x.hosts.profile import HostProfile
from pytest_mi300x.load import feasibility, timeouts
from pytest_mi300x.load.feasibility import Feasibility, InfeasibleWorkload
from pytest_mi300x.load.records import LoadRun
from pytest_mi300x.load.timeouts import Timeouts
from pytest_mi300x.results.kinds import FailureKind
from pytest_mi300x.workload.arrivals import Arrivals
from pytest_mi300x.workload.datasets import PromptRequest
from pytest_mi300x.workload.workload import Workload


class RefusedWorkload(InfeasibleWorkload):
    """Raised at run time for a workload the roofline refuses (a suite's mistake)."""

    failure_kind = FailureKind.HARNESS


class HostFit:
    """The roofline of the servers behind one test, and what it implies for its workloads."""

    def __init__(self, host: HostProfile, model: dict[str, Any], servers: Sequence[Any]) -> None:
        first = servers[0]
        asked = getattr(first, "asked", None) or getattr(first.spec, "flag_set", None)
        self.flags: dict[str, object] = ({cli_name(k): v for k, v in asked.flags}
                                         if asked is not None else {})
        gpus = sum(len(getattr(s.spec, "gpus", ()) or ()) for s in servers)
        if host.has_gpus and not gpus:
            self.roofline, self.why_none = None, ("no roofline: the servers lease no GPUs "
                                                  "(an endpoint run elsewhere)")
        else:
            self.roofline, self.why_none = feasibility.roofline_of(
                host, str(model.get("path", "")), str(model.get("logical", "")), gpus,
                self.flags.get("kv-cache-dtype"))
        self.measured_wave_s: float | None = None
        self.feasibility: Feasibility | None = None
        self.timeouts: Timeouts | None = None

    def in_flight(self, arrivals: Arrivals, lengths: Sequence[tuple[int, int]]) -> int | None:
        """Requests the server runs at once: --max-num-seqs, the client's cap, and the KV
        cache's room at the roofline (whichever is smallest and known)."""
        found = feasibility.max_in_flight(self.flags, {}, arrivals.max_concurrency)
        if self.roofline is not None and lengths:
            prompt = sum(p for p, _ in lengths) / len(lengths)
            output = sum(o for _, o in lengths) / len(lengths)
            room = self.roofline.capacity_seqs(prompt + output)
            found = room if found is None else min(found, max(1, room))
        return found

    def lengths(self, scaled: Workload, tokenizer: Any) -> list[tuple[int, int]] | None:
        """(prompt, output) tokens per request: from the dataset's sizes, else built; None
        where there is no roofline to check them against (nothing is built for it)."""
        known = feasibility.request_lengths(scaled.dataset)
        if known is not None or self.roofline is None:
            return known
        return [(r.prompt_len, r.output_len) for r in scaled.dataset.build(tokenizer)]

    def check(self, scaled: Workload, lengths: Sequence[tuple[int, int]] | None,
              ladder: Sequence[float] = ()) -> Feasibility:
        """The workload at its rate (or a sweep's ladder) against the roofline; raises
        RefusedWorkload for a rate no build could serve."""
        max_seqs = feasibility.max_in_flight(self.flags, {}, scaled.arrivals.max_concurrency)
        found = feasibility.check(self.roofline, self.why_none, lengths,
                                  feasibility.peak_rate(scaled.arrivals), ladder, max_seqs)
        self.feasibility = found
        if found.status == "infeasible":
            raise RefusedWorkload(f"workload refused by the roofline: {found.reason}")
        return found

    def timeouts_for(self, workload: Workload, requests: Sequence[PromptRequest],
                     arrivals: Arrivals) -> Timeouts:
        lengths = [(r.prompt_len, r.output_len) for r in requests]
        in_flight = self.in_flight(arrivals, lengths)
        estimate = timeouts.roofline_wave_s(self.roofline, lengths, in_flight)
        self.timeouts = timeouts.derive(len(requests), in_flight, workload.stall_timeout_s,
                                        estimated_wave_s=estimate,
                                        measured_wave_s=self.measured_wave_s)
        return self.timeouts

    def learn(self, run: LoadRun, arrivals: Arrivals,
              requests: Sequence[PromptRequest]) -> None:
        """After a warm-up: a wave's time as this host and build served it."""
        lengths = [(r.prompt_len, r.output_len) for r in requests]
        completed = [(r.ttft, r.latency) for r in run.records
                     if not r.error and r.ttft is not None and r.latency is not None]
        wave = timeouts.measured_wave_s(run.duration, len(run.records),
                                        self.in_flight(arrivals, lengths), completed)
        if wave is not None:
            self.measured_wave_s = wave

    def achieved(self, figures: dict[str, float | int]) -> dict[str, float]:
        """The run's fractions of the roofline (GPU hosts with a known model; else none)."""
        if self.roofline is None:
            return {}
        return self.roofline.achieved({k: float(v) for k, v in figures.items()})

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = ({"roofline": self.roofline.describe()}
                               if self.roofline is not None else {"roofline": None,
                                                                  "why": self.why_none})
        if self.feasibility is not None:
            out["feasibility"] = {k: v for k, v in self.feasibility.describe().items()
                                  if k != "roofline"}
        if self.timeouts is not None:
            out["timeouts"] = self.timeouts.describe()
        return out
