"""A workload: what load to drive, written at full (MI300X) size; hosts scale it down."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from pytest_mi300x.workload.arrivals import Arrivals
from pytest_mi300x.workload.datasets import Dataset

if TYPE_CHECKING:
    from pytest_mi300x.accuracy.check import AccuracyCheck
    from pytest_mi300x.hosts.profile import WorkloadScale

PREFIX_CACHE_MODES = ("as-is", "fresh", "second-run")


@dataclass(frozen=True)
class Workload:
    """What load to drive, written at full (MI300X) size; hosts scale it down."""

    dataset: Dataset
    arrivals: Arrivals = Arrivals()
    warmup_requests: int | None = None
    """None: one unmeasured run of the whole workload (its size and arrivals, other
    prompts) before the measured ones; an int: that many requests at once; 0: none.
    A two-request warm-up left the first measured burst on the CPU engine slower
    than the rest (median TTFT 1.1-2.7x the other runs' in 5 of 7 servers)."""
    slos: dict[str, float] | None = None  # ms on ttft/tpot/e2el: adds request_goodput
    endpoint: str = "completions"  # or "chat" (TTFT caveat: see load/client.py)
    processes: int | None = None  # load processes; None: 1, more when one saturates
    stall_timeout_s: float = 60.0
    """The floor of the stall timeout: a started stream that sends nothing for longer than
    its expected wait in the queue (load/timeouts.py: waves of requests ahead of it, from the
    roofline, then from the warm-up), and never less than this, means the engine stalled:
    the run is invalid and the server is replaced."""
    stop_at_eos: bool = False
    """False: every output runs to its asked length (``ignore_eos``), where the engine
    honours it. True: outputs stop at EOS, as a user's would, on every engine alike: what a
    comparison between engines needs when one cannot force lengths (TGI); each run records
    the real lengths."""
    prefix_cache: str = "as-is"
    """``as-is``; ``fresh``: each repetition finds nothing of its prompts in the engine's
    prefix cache (the guide's "fresh run"); ``second-run``: the same, then the prompts
    sent once unmeasured and measured again (its "2nd run"). Each repetition keys the
    cache with a salt of its own (vLLM's ``cache_salt``), so no reset endpoint is needed."""
    accuracy: AccuracyCheck | None = None
    """Questions asked after the speed runs, once per repetition (``AccuracyCheck()``: the
    shipped set); their ``accuracy`` is gated beside speed. Skipped, with the reason in
    the result, where the host serves random weights."""

    sweep: dict[str, Any] | None = None
    """Set by a capacity measurement: the rates it swept (as run), its attainment and
    refinements; the arrivals' own rate then does not apply."""

    def __post_init__(self) -> None:
        if not self.stall_timeout_s > 0:
            raise ValueError(f"Workload.stall_timeout_s must be > 0 seconds, "
                             f"got {self.stall_timeout_s!r}")
        if self.prefix_cache not in PREFIX_CACHE_MODES:
            raise ValueError(f"Workload.prefix_cache {self.prefix_cache!r} is not one of "
                             f"{', '.join(PREFIX_CACHE_MODES)}")

    def scaled(self, scale: WorkloadScale) -> Workload:
        return replace(self, dataset=self.dataset.scaled(scale),
                       arrivals=self.arrivals.scaled(scale))

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {"dataset": self.dataset.describe(),
                               "arrivals": self.arrivals.describe(),
                               "warmup": ("one unmeasured run of this workload, other prompts"
                                          if self.warmup_requests is None
                                          else f"{self.warmup_requests} requests at once"
                                          if self.warmup_requests else "none")}
        out.update({k: v for k, v in (("slos", self.slos), ("endpoint", self.endpoint),
                                      ("processes", self.processes),
                                      ("prefix_cache", self.prefix_cache),
                                      ("sweep", self.sweep))
                    if v not in (None, "completions", "as-is")})
        if self.stop_at_eos:  # only when set: the default keeps stored baselines comparable
            out["outputs"] = "stop at EOS (ignore_eos off, on every engine)"
        if self.accuracy is not None:
            out["accuracy"] = self.accuracy.describe()
        return out
