"""Request arrival schedules, defined as `vllm bench serve` defines them."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from pytest_mi300x.workload.datasets import PromptRequest


def _num(value: float) -> str:
    """Compact number for labels: 4.0 -> "4", 0.5 -> "0.5", inf -> "inf"."""
    return "inf" if math.isinf(value) else f"{value:g}"


@dataclass(frozen=True)
class Arrivals:
    """When requests are sent: rate, burstiness and a client-side concurrency cap."""

    request_rate: float = math.inf
    burstiness: float = 1.0
    max_concurrency: int | None = None
    # Ramp-up as vllm bench serve's --ramp-up-strategy: request i is drawn at
    # start + (end - start) * i / (n - 1) req/s ("linear") or start * (end/start)
    # ** (i / (n - 1)) ("exponential"); request_rate is then unused.
    ramp_up: str | None = None
    ramp_start_rps: float | None = None
    ramp_end_rps: float | None = None
    seed: int | None = None
    """The schedule's own seed. Set, every repetition and every server start sends on the
    same schedule, so a paced run's figures differ only by what the engine did; unset, each
    repetition draws its schedule from its dataset seed (as vllm bench serve does)."""
    timestamps: bool = False
    """Replay: each request leaves at its own time (a trace's ``timestamp``, relative to
    its first row) divided by ``speedup``; rate, burstiness and ramp do not apply."""
    speedup: float = 1.0
    """With ``timestamps``: 2.0 replays the trace twice as fast, 0.5 at half its pace.
    A host's rate scale multiplies it (the cpu host replays at a quarter of the pace)."""

    @classmethod
    def replay(cls, speedup: float = 1.0, max_concurrency: int | None = None) -> Arrivals:
        """A trace at its own pace (``speedup`` 1) or time-scaled."""
        return cls(timestamps=True, speedup=speedup, max_concurrency=max_concurrency)

    def __post_init__(self) -> None:
        if math.isnan(self.request_rate) or self.request_rate <= 0:
            raise ValueError(
                f"Arrivals.request_rate must be > 0 (requests/s), got {self.request_rate!r}; "
                "use math.inf to send every request at t=0"
            )
        if math.isnan(self.burstiness) or self.burstiness <= 0:
            raise ValueError(
                f"Arrivals.burstiness must be > 0, got {self.burstiness!r}; "
                "use 1.0 for Poisson arrivals, <1 for burstier, >1 for more uniform"
            )
        if self.max_concurrency is not None and (
            isinstance(self.max_concurrency, bool)
            or not isinstance(self.max_concurrency, int)
            or self.max_concurrency < 1
        ):
            raise ValueError(
                f"Arrivals.max_concurrency must be an int >= 1 or None, "
                f"got {self.max_concurrency!r}; use None for no client-side cap"
            )

        if math.isnan(self.speedup) or math.isinf(self.speedup) or self.speedup <= 0:
            raise ValueError(f"Arrivals.speedup must be a finite factor > 0, got "
                             f"{self.speedup!r}; 1.0 replays a trace at its own pace")
        if self.timestamps and self.ramp_up is not None:
            raise ValueError("Arrivals: timestamps (trace replay) and ramp_up exclude each "
                             "other; the trace's own times set the pace")
        if self.ramp_up is not None:
            if self.ramp_up not in ("linear", "exponential"):
                raise ValueError(f"Arrivals.ramp_up must be 'linear', 'exponential' or None, "
                                 f"got {self.ramp_up!r}")
            for name in ("ramp_start_rps", "ramp_end_rps"):
                value = getattr(self, name)
                if value is None or not math.isfinite(value) or value <= 0:
                    raise ValueError(f"Arrivals.{name} must be a finite rate > 0 with "
                                     f"ramp_up={self.ramp_up!r}, got {value!r}")

    def rate_at(self, i: int, n: int) -> float:
        """Request rate in force for request `i` of `n` (vllm's _get_current_request_rate)."""
        if self.ramp_up is None:
            return self.request_rate
        start, end = float(self.ramp_start_rps or 0), float(self.ramp_end_rps or 0)
        progress = i / max(n - 1, 1)
        if self.ramp_up == "linear":
            return start + (end - start) * progress
        return start * (end / start) ** progress

    def scaled(self, scale: Any) -> Arrivals:
        """These arrivals at a host's size (rates scaled, caps kept)."""
        if self.timestamps:
            return replace(self, speedup=self.speedup * scale.request_rate(
                1.0, burst_above_max=False))
        if self.ramp_up is None:
            return replace(self, request_rate=scale.request_rate(self.request_rate))
        return replace(
            self,
            ramp_start_rps=scale.request_rate(self.ramp_start_rps, burst_above_max=False),
            ramp_end_rps=scale.request_rate(self.ramp_end_rps, burst_above_max=False))

    def schedule(self, requests: Sequence[PromptRequest], seed: int) -> list[float | None]:
        """Send time of each request (seconds from run start); None for a request that
        waits on another one's completion (a later turn of a conversation: sent then,
        after its think time). The schedule covers the others, in order."""
        roots = [i for i, r in enumerate(requests) if r.after is None]
        times = [requests[i].at for i in roots] if self.timestamps else None
        out: list[float | None] = [None] * len(requests)
        for i, offset in zip(roots, self.offsets(len(roots), seed, times), strict=True):
            out[i] = offset
        return out

    def offsets(self, n: int, seed: int,
                times: Sequence[float | None] | None = None) -> list[float]:
        """Send time of each of `n` requests, in seconds from run start.

        Same rule as vllm bench serve's get_request: gamma gaps, cumulated, then
        rescaled so the last arrival lands exactly at n / rate. The legacy
        RandomState seeded with `seed` is the stream vllm draws from after its
        `np.random.seed(args.seed)`, so the schedule matches vllm for the same seed.
        With ``timestamps``, ``times`` are the requests' own (a trace's), shifted so
        the first is 0 and divided by ``speedup``.
        """
        if n < 0:
            raise ValueError(f"offsets: n must be >= 0, got {n}")
        if n == 0:
            return []
        if self.timestamps:
            if times is None or len(times) != n or any(t is None for t in times):
                raise ValueError("Arrivals(timestamps=True) replays a trace: every request "
                                 "needs its own time (a TraceDataset gives them)")
            first = min(float(t) for t in times if t is not None)
            return [(float(t) - first) / self.speedup for t in times if t is not None]
        if self.seed is not None:
            seed = self.seed
        if self.ramp_up is not None:
            return self._ramp_offsets(n, seed)
        rate = self.request_rate
        if math.isinf(rate):
            return [0.0] * n
        if math.isinf(self.burstiness):
            gaps = np.full(n, 1.0 / rate)
        else:
            theta = 1.0 / (rate * self.burstiness)
            gaps = np.random.RandomState(seed).gamma(shape=self.burstiness, scale=theta, size=n)
        cumulative = np.cumsum(gaps)
        last = float(cumulative[-1])
        if last != 0.0:
            cumulative = cumulative * ((n / rate) / last)
        return [float(x) for x in cumulative]

    def _ramp_offsets(self, n: int, seed: int) -> list[float]:
        # vllm draws one gamma per request at that request's rate, from the same
        # seeded legacy stream, and does not rescale ramped schedules.
        draw = np.random.RandomState(seed)
        gaps = []
        for i in range(n):
            rate = self.rate_at(i, n)
            if math.isinf(self.burstiness):
                gaps.append(1.0 / rate)
            else:
                gaps.append(float(draw.gamma(shape=self.burstiness,
                                             scale=1.0 / (rate * self.burstiness))))
        return [float(x) for x in np.cumsum(gaps)]

    @property
    def label(self) -> str:
        """Short readable id, e.g. "rate-inf", "rate-4-burst-0.5-conc-8"."""
        parts = ([f"trace-x{_num(self.speedup)}"] if self.timestamps
                 else [f"ramp-{self.ramp_up}-{_num(self.ramp_start_rps or 0)}-"
                       f"{_num(self.ramp_end_rps or 0)}"] if self.ramp_up
                 else [f"rate-{_num(self.request_rate)}"])
        if self.burstiness != 1.0:
            parts.append(f"burst-{_num(self.burstiness)}")
        if self.max_concurrency is not None:
            parts.append(f"conc-{self.max_concurrency}")
        return "-".join(parts)

    def describe(self) -> dict[str, object]:
        """JSON-safe description; an infinite rate is the string "inf" as in vllm's result JSON."""
        out: dict[str, object] = {
            # A replay is paced by its trace: never described as a burst (burst floors).
            "request_rate": ("trace" if self.timestamps else
                             "inf" if math.isinf(self.request_rate) else self.request_rate),
            "burstiness": "inf" if math.isinf(self.burstiness) else self.burstiness,
            "max_concurrency": self.max_concurrency,
            "label": self.label,
        }
        if self.ramp_up is not None:
            out.update(ramp_up=self.ramp_up, ramp_start_rps=self.ramp_start_rps,
                       ramp_end_rps=self.ramp_end_rps)
        if self.seed is not None:
            out["seed"] = self.seed
        if self.timestamps:
            out.update(timestamps=True, speedup=self.speedup)
        return out
