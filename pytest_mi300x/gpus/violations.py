"""Throttling on MI300-class GPUs: amd-smi's violation counters.

``power.throttle_status`` does not exist on MI3xx. Since ROCm 6.3 amd-smi reports how long
each limiter held the clocks down, as accumulators that only grow
(``amd-smi metric -T/--throttle``, an alias of ``-v/--violation`` since ROCm 7.0):
``accumulation_counter`` ticks all the time, ``<kind>_accumulated`` while that limiter is
active. Two readings give the share of the time between them each limiter was active,
exactly, however short the run: no sampling guess.

Kinds: ``ppt`` (package power tracking: the power cap), and the thermal ones ``prochot``,
``socket_thermal``, ``vr_thermal``, ``hbm_thermal``. A GPU at its power cap under full
load is working as configured (the cap is part of the host's identity); a thermal limiter
means the cooling held the figures down.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from pytest_mi300x.gpus.smi import number
from pytest_mi300x.gpus.smi_text import records, text_of

AMD_VIOLATIONS = ("amd-smi", "metric", "--throttle", "--json")
THERMAL = ("prochot", "socket_thermal", "vr_thermal", "hbm_thermal")
POWER = ("ppt",)


@dataclass(frozen=True)
class Violations:
    """One GPU's violation accumulators at one moment (None: not reported)."""

    index: int
    counter: float | None
    accumulated: Mapping[str, float] = field(default_factory=dict)
    active: Mapping[str, bool] = field(default_factory=dict)


def parse_violations(text: str) -> dict[int, Violations]:
    """``amd-smi metric --throttle --json`` (or its plain form) by GPU index; GPUs whose
    counters are N/A (not an MI300-class GPU, or an older driver) are left out."""
    out = {}
    for rec in records(text):
        index = number(rec.get("gpu"))
        table = rec.get("throttle", rec.get("violation"))
        if index is None or not isinstance(table, dict):
            continue
        counter = number(table.get("accumulation_counter"))
        if counter is None:
            continue
        acc, active = {}, {}
        for kind in (*THERMAL, *POWER):
            value = number(table.get(f"{kind}_accumulated",
                                     table.get(f"{kind}_violation_accumulated")))
            if value is not None:
                acc[kind] = value
            status = text_of(table.get(f"{kind}_violation_status"))
            if status is not None:
                active[kind] = status.upper() == "ACTIVE"
        out[int(index)] = Violations(int(index), counter, acc, active)
    return out


def residency(before: Mapping[int, Violations],
              after: Mapping[int, Violations]) -> dict[int, dict[str, float]]:
    """Per GPU and limiter, the percent of the time between two readings it was active."""
    out: dict[int, dict[str, float]] = {}
    for index, end in after.items():
        start = before.get(index)
        if start is None or start.counter is None or end.counter is None:
            continue
        ticks = end.counter - start.counter
        if ticks <= 0:
            continue
        out[index] = {kind: round(100.0 * max(0.0, value - start.accumulated[kind]) / ticks, 2)
                      for kind, value in end.accumulated.items() if kind in start.accumulated}
    return out


def thermal_limited(shares: Mapping[int, Mapping[str, float]]) -> str | None:
    """Which GPUs a thermal limiter held down, and how long, or None."""
    hit = {g: {k: v for k, v in kinds.items() if k in THERMAL and v > 0}
           for g, kinds in shares.items()}
    hit = {g: kinds for g, kinds in hit.items() if kinds}
    if not hit:
        return None
    return "; ".join(f"GPU {g}: " + ", ".join(f"{k} {v:g}%" for k, v in sorted(kinds.items()))
                     for g, kinds in sorted(hit.items()))
