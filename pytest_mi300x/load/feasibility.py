"""Whether a workload can run on a host at all: its rate against the roofline of the GPUs that
serve it (hosts/roofline.py).

A workload that cannot run at all is refused, in one line saying why: the model's weights do
not fit the server's GPUs (at the engine's memory share), or one request's KV cache does not
fit beside them. A capacity sweep's ladder that reaches past the roofline is rescaled so its
top rate is the roofline's (a rung above it can only miss its SLOs, by physics). A paced rate
above what the roofline carries is *saturating*: no build serves it at that rate, the queue
grows for the whole run and the server sets the pace, which is what the seed's QPS 1000 asks
for and what no lower rate should do unawares: the plan shows it. A burst is feasible: the
server sets its pace. Where there is no roofline (the cpu host: a shared CPU has no peak worth
the name; a model with no config.json) nothing is checked, and the record says so.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pytest_mi300x.hosts.profile import HostProfile
from pytest_mi300x.hosts.roofline import MEMORY_SHARE, Lengths, Roofline, model_shape
from pytest_mi300x.workload.arrivals import Arrivals
from pytest_mi300x.workload.datasets import RandomDataset


class InfeasibleWorkload(ValueError):
    """A workload that asks more of the host than its roofline allows."""


@dataclass(frozen=True)
class Feasibility:
    """A workload against a host's roofline: ``feasible``, ``saturating`` (a paced rate past
    the roofline: the server sets the pace), ``rescaled`` (a sweep's ladder fitted under it),
    ``infeasible`` (refused: it cannot run) or ``unchecked`` (no roofline)."""

    status: str
    reason: str
    max_rate: float | None = None
    rates: tuple[float, ...] = ()
    """A sweep's ladder as it runs (rescaled when the status says so)."""
    roofline: dict[str, Any] = field(default_factory=dict)

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {"status": self.status, "reason": self.reason}
        if self.max_rate is not None:
            out["max_rate"] = self.max_rate
        if self.rates:
            out["rates"] = list(self.rates)
        if self.roofline:
            out["roofline"] = self.roofline
        return out


def roofline_of(host: HostProfile, model_path: str, logical: str, gpus: int,
                kv_cache_dtype: object = None) -> tuple[Roofline | None, str]:
    """The roofline of ``gpus`` of the host's accelerators serving this model, or None and
    why there is none."""
    if host.peaks is None:
        what = ("a CPU host: a shared CPU has no peak worth checking against"
                if not host.has_gpus else
                f"{host.accelerator} has no built-in peaks; give [hosts.{host.name}.roofline]")
        return None, f"no roofline on host {host.name!r} ({what})"
    shape = model_shape(model_path, logical)
    if shape is None:
        return None, (f"no roofline for {logical!r}: no config.json at {model_path} and no "
                      "shipped copy named after that folder (pytest_mi300x/hosts/models/)")
    kv_bytes = 1 if str(kv_cache_dtype or "").startswith("fp8") else 2
    return Roofline(host.peaks, max(1, gpus), shape, kv_bytes, host.accelerator), ""


def request_lengths(dataset: Any) -> list[tuple[int, int]] | None:
    """(prompt, output) tokens per request, known without a tokenizer (for the plan); None
    for a dataset whose lengths are known only once built (a ShareGPT file, a trace)."""
    n = getattr(dataset, "num_prompts", None)
    if isinstance(dataset, RandomDataset):
        return [(dataset.input_len, dataset.output_len)] * dataset.num_prompts
    lengths = getattr(dataset, "lengths", None)
    if callable(lengths):
        return list(lengths())
    prefix, suffix = getattr(dataset, "prefix_len", None), getattr(dataset, "suffix_len", None)
    output = getattr(dataset, "output_len", None)
    if isinstance(n, int) and isinstance(prefix, int) and isinstance(suffix, int) \
            and isinstance(output, int):
        return [(prefix + suffix, output)] * n
    return None


def peak_rate(arrivals: Arrivals) -> float:
    """The highest rate the arrivals ask (a ramp's end); inf for a burst or a replay."""
    if getattr(arrivals, "timestamps", False):
        return math.inf
    return float(arrivals.ramp_end_rps or arrivals.request_rate) if arrivals.ramp_up \
        else float(arrivals.request_rate)


def check(roofline: Roofline | None, why_none: str, lengths: Lengths | None, rate: float,
          ladder: Sequence[float] = (), max_seqs: int | None = None,
          what: str = "the workload") -> Feasibility:
    """``what`` at ``rate`` req/s (or over the sweep's ``ladder``) against the roofline."""
    if roofline is None:
        return Feasibility("unchecked", why_none, rates=tuple(ladder))
    described = roofline.describe()
    if not lengths:
        return Feasibility("unchecked", f"{what}: request lengths unknown before it is built",
                           rates=tuple(ladder), roofline=described)
    prompt = sum(p for p, _ in lengths) / len(lengths)
    output = sum(o for _, o in lengths) / len(lengths)
    shape = (f"{prompt:.0f}+{output:.0f} tokens of {roofline.model.name} on "
             f"{roofline.gpus} x {roofline.accelerator}")
    memory = roofline.peaks.hbm_gb * roofline.gpus * MEMORY_SHARE
    weights = roofline.model.weight_bytes / 1e9
    longest = max(p + o for p, o in lengths)
    if weights >= memory or roofline.capacity_seqs(longest) < 1:
        held = (f"its weights ({weights:.0f} GB) do not fit" if weights >= memory else
                f"one request of {longest} tokens ({longest * roofline.kv_per_token / 1e9:.1f}"
                " GB of KV cache) does not fit beside its weights in")
        return Feasibility(
            "infeasible", f"{what} cannot run: {roofline.model.name}: {held} "
            f"{roofline.gpus} x {roofline.accelerator} ({memory:.0f} GB at the engine's "
            f"{MEMORY_SHARE:g} memory share); give it more GPUs (tensor parallel) or shorter "
            "requests", roofline=described)
    most, roof = roofline.max_rate(lengths, max_seqs)
    bound = (f"the roofline carries at most {most:.3g} req/s ({roof}: "
             f"{described['peak_pflops_bf16']:.3g} PFLOP/s dense BF16, "
             f"{described['hbm_tb_s']:.3g} TB/s)")
    if ladder:
        top = max(ladder)
        if top <= most:
            return Feasibility("feasible", f"sweep up to {top:g} req/s of {shape}: {bound}",
                               most, tuple(ladder), described)
        factor = most / top
        fitted = tuple(r * factor for r in ladder)
        return Feasibility(
            "rescaled", f"sweep rates x{factor:.3g} to {_rates(fitted)} req/s: its top, "
            f"{top:g} req/s of {shape}, is past the roofline; {bound}", most, fitted, described)
    if math.isinf(rate):
        return Feasibility("feasible", f"a burst of {shape}: the server sets the pace; {bound}",
                           most, roofline=described)
    if rate <= most:
        return Feasibility("feasible", f"{rate:g} req/s of {shape}: {bound}", most,
                           roofline=described)
    return Feasibility(
        "saturating", f"{rate:g} req/s of {shape} is past the roofline, so the server sets "
        f"the pace (the queue grows all run); {bound}", most, roofline=described)


def _rates(rates: Sequence[float]) -> str:
    return ", ".join(f"{r:.3g}" for r in rates)


def max_in_flight(flags: Mapping[str, object], defaults: Mapping[str, object],
                  cap: int | None) -> int | None:
    """Requests the server runs at once: its --max-num-seqs (the flag set's, else the engine
    build's default), the client's cap; None when neither is known."""
    def whole(value: object) -> int | None:
        ok = isinstance(value, int) and not isinstance(value, bool) and value > 0
        return value if ok else None  # type: ignore[return-value]

    seqs = whole(flags.get("max-num-seqs")) or whole(defaults.get("max-num-seqs"))
    found = [v for v in (seqs, whole(cap)) if v is not None]
    return min(found) if found else None
