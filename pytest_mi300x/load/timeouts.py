"""How long a stream may stay silent, and a request last, before a run calls the engine
stalled: from the workload's expected queueing on this host, not constants.

An engine sends no byte to a queued request until its first token. With ``in_flight``
requests served at once, ``n`` requests wait in ``ceil(n / in_flight)`` waves, and the last
wave's streams are silent for all the waves before it. So a stream may be silent for the
queue's length, which is waves x a wave's time, with a margin; never less than the floor (the
workload's ``stall_timeout_s``). A wave's time is estimated before anything runs from the
roofline (hosts/roofline.py), as the roofline's time over ``ATTAINABLE`` (engines reach a
fraction of it); where there is no roofline, each wave may take up to the floor. Once the
warm-up ran, the wave time it measured is the estimate (the larger of the two when both
exist): measured on this host, with this build, from the requests it completed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pytest_mi300x.hosts.roofline import Lengths, Roofline

REQUEST_FLOOR_S = 600.0
"""The whole-request timeout never drops below the client's old constant."""
MARGIN = 2.0
"""Over the expected queue: a wave twice as slow as expected is still no stall."""
ATTAINABLE = 0.25
"""Of the roofline, the share a serving engine is assumed to reach at least, for the estimate
before the warm-up (measured engines reach 30-60% of the bandwidth roof in decode)."""


@dataclass(frozen=True)
class Timeouts:
    """A run's stall and request timeouts, and what they were derived from."""

    stall_s: float
    request_s: float
    waves: int
    in_flight: int | None
    wave_s: float | None
    basis: str

    def describe(self) -> dict[str, Any]:
        return {"stall_timeout_s": round(self.stall_s, 1),
                "request_timeout_s": round(self.request_s, 1), "waves": self.waves,
                "in_flight": self.in_flight,
                "wave_s": None if self.wave_s is None else round(self.wave_s, 3),
                "margin": MARGIN, "basis": self.basis}


def waves(requests: int, in_flight: int | None) -> int:
    return max(1, math.ceil(requests / in_flight)) if in_flight else 1


def roofline_wave_s(roofline: Roofline | None, lengths: Lengths,
                    in_flight: int | None) -> float | None:
    """A wave's expected time from the roofline (None without one)."""
    if roofline is None or not lengths:
        return None
    batch = min(len(lengths), in_flight or len(lengths))
    return roofline.wave_s(lengths, batch) / ATTAINABLE


def derive(requests: int, in_flight: int | None, floor_s: float, *,
           estimated_wave_s: float | None = None,
           measured_wave_s: float | None = None) -> Timeouts:
    """Timeouts for a run of ``requests`` with ``in_flight`` served at once."""
    n = waves(requests, in_flight)
    known = [w for w in (estimated_wave_s, measured_wave_s) if w is not None and w > 0]
    if known:
        wave = max(known)
        basis = (f"{n} wave(s) of {in_flight or requests} in flight x "
                 f"{wave:.3g} s a wave ("
                 + ("the warm-up's, measured" if wave == measured_wave_s
                    else f"the roofline's / {ATTAINABLE:g}") + f") x margin {MARGIN:g}")
        queue = MARGIN * n * wave
        return Timeouts(max(floor_s, queue), max(REQUEST_FLOOR_S, queue + floor_s), n,
                        in_flight, wave, basis)
    # Nothing known of a wave: each may take up to the floor.
    basis = (f"{n} wave(s) of {in_flight or requests} in flight x the floor {floor_s:g} s "
             "(no roofline, nothing measured yet)")
    return Timeouts(floor_s * n, max(REQUEST_FLOOR_S, floor_s * (n + 1)), n, in_flight, None,
                    basis)


def measured_wave_s(duration: float, requests: int, in_flight: int | None,
                    completed: Sequence[tuple[float, float]]) -> float | None:
    """A wave's time as a run measured it: the longest a completed request took once it was
    served (its latency less its TTFT), plus the shortest TTFT (a prefill with no queue);
    for a run that completed every request, at least its duration per wave. ``completed``:
    (ttft, latency) of the requests that completed; None when none did. A warm-up cut short
    by its (prior) timeout still measures the requests it finished."""
    if not completed:
        return None
    served = max(latency - ttft for ttft, latency in completed)
    wave = served + min(ttft for ttft, _ in completed)
    if len(completed) == requests and duration > 0:
        wave = max(wave, duration / waves(requests, in_flight))
    return wave if wave > 0 else None
