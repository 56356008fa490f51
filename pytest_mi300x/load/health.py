"""The client watching itself: CPU use, lateness against its schedule, event-loop lag.

A run whose client was saturated is invalid (figures.find_problems says why): its
timestamps trail the bytes.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from time import perf_counter

# A Python client is one core at most: above this share of it, its timestamps
# trail the bytes. Runs shorter than the window are too short to judge CPU.
SATURATED_CPU = 0.90
CPU_WINDOW = 0.5
# Requests leaving this much behind schedule (median) mean the loop cannot keep up.
# Ordinary runs next to the engine on the 2-core CPU host left up to 14 ms late
# (median) when the engine decoded without pause; a client starved of its own
# CPU leaves 30 ms and more late.
LATE_DISPATCH_S = 0.025
# Event-loop wake-ups this late (p99) blur timestamps by as much; noted (not
# disqualifying: a busy engine on shared cores causes it too), and only over
# enough ticks (about a second) that one GC pause is not the p99.
LATE_WAKEUP_S = 0.050
MIN_WAKEUPS = 200
_TICK = 0.005


@dataclass
class ClientHealth:
    """One load process's view of itself during a run."""

    cpu_seconds: float
    wall_seconds: float
    peak_cpu_share: float  # busiest CPU_WINDOW of the run, share of one core
    dispatch_lag_median_s: float | None  # None for a burst (rate inf): no schedule
    dispatch_lag_p99_s: float | None
    wakeup_lag_p99_s: float
    wakeups: int = 0  # ticks sampled

    @property
    def cpu_share(self) -> float:
        return self.cpu_seconds / self.wall_seconds if self.wall_seconds > 0 else 0.0

    def problems(self) -> list[str]:
        out = []
        if self.wall_seconds >= CPU_WINDOW and self.cpu_share >= SATURATED_CPU:
            out.append(f"client saturated: its process used {self.cpu_share:.0%} of a core "
                       f"over the run (limit {SATURATED_CPU:.0%}); spread the load over more "
                       "processes or lower the rate")
        # A burst (rate inf) has no schedule to keep: its sends are as fast as possible.
        if self.dispatch_lag_median_s is not None and \
                self.dispatch_lag_median_s > LATE_DISPATCH_S:
            out.append(f"client fell behind its schedule: requests left a median "
                       f"{self.dispatch_lag_median_s * 1000:.1f} ms late "
                       f"(limit {LATE_DISPATCH_S * 1000:g} ms)")
        return out

    def notes(self) -> list[str]:
        """Recorded, not disqualifying: on the 2-core CPU host the engine's own
        threads delay the client's wake-ups by 60-110 ms at p99 in ordinary runs."""
        if self.wakeups >= MIN_WAKEUPS and self.wakeup_lag_p99_s > LATE_WAKEUP_S:
            return [f"client event loop woke p99 {self.wakeup_lag_p99_s * 1000:.1f} ms late "
                    f"(over {LATE_WAKEUP_S * 1000:g} ms): timestamps may trail arrivals"]
        return []


class Watch:
    """Samples the loop's wake-up lag and the process's CPU while a run is in flight."""

    def __init__(self, on_window: Callable[[], None] | None = None) -> None:
        self.lags: list[float] = []
        self.peak = 0.0
        self._task: asyncio.Task[None] | None = None
        self._on_window = on_window
        """Called once per CPU window (half a second): progress, off the request path."""

    async def _run(self) -> None:
        window_cpu, window_wall = time.process_time(), perf_counter()
        while True:
            before = perf_counter()
            await asyncio.sleep(_TICK)
            now = perf_counter()
            self.lags.append(now - before - _TICK)
            if now - window_wall >= CPU_WINDOW:
                cpu = time.process_time()
                self.peak = max(self.peak, (cpu - window_cpu) / (now - window_wall))
                window_cpu, window_wall = cpu, now
                if self._on_window is not None:
                    self._on_window()

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


def health_of(watch: Watch, dispatch_lags: list[float], timed: bool, cpu_seconds: float,
              wall_seconds: float) -> ClientHealth:
    """One load process's health over a run (dispatch lag only for a timed schedule)."""
    import numpy as np

    return ClientHealth(
        cpu_seconds=cpu_seconds, wall_seconds=wall_seconds, peak_cpu_share=watch.peak,
        dispatch_lag_median_s=float(np.median(dispatch_lags)) if timed else None,
        dispatch_lag_p99_s=float(np.percentile(dispatch_lags, 99)) if timed else None,
        wakeup_lag_p99_s=float(np.percentile(watch.lags, 99)) if watch.lags else 0.0,
        wakeups=len(watch.lags),
    )
