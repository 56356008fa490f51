"""GPU telemetry during a measured run: power, temperature, clocks, utilisation, VRAM.

A background thread samples the leased GPUs (amd-smi / rocm-smi / nvidia-smi,
each call under a timeout) while the load runs; the summary goes into the
result with the host's NUMA-balancing state, and a measured run whose GPUs
throttled raises a warning (its figures are not the hardware's best).
"""

from __future__ import annotations

import statistics
import threading
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from pytest_mi300x.gpus import discovery as gpus
from pytest_mi300x.gpus.discovery import GpuSample, GpuToolError

NUMA_BALANCING = Path("/proc/sys/kernel/numa_balancing")
CLOCK_DROP = 0.80
"""A busy GPU (>= 50% utilisation) below this share of its top clock counts as throttled."""

Sampler = Callable[[], list[GpuSample]]


class ThrottleWarning(UserWarning):
    """GPU clocks were held down during a measured run."""


def numa_balancing(path: Path = NUMA_BALANCING) -> str | None:
    """The kernel's NUMA balancing setting ("0" is what MI300X guides ask for), or None."""
    try:
        return path.read_text().strip()
    except OSError:
        return None


def _stats(values: Sequence[float]) -> dict[str, float] | None:
    if not values:
        return None
    return {"mean": round(statistics.fmean(values), 2), "min": min(values), "max": max(values)}


class GpuTelemetry:
    """Context manager: samples ``sampler`` every ``interval_s`` until exit; no pytest needed."""

    def __init__(self, sampler: Sampler, *, interval_s: float = 1.0) -> None:
        self.sampler = sampler
        self.interval_s = interval_s
        self.samples: list[tuple[float, list[GpuSample]]] = []
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @classmethod
    def for_gpus(cls, accelerator: str, indices: Sequence[int],
                 interval_s: float = 1.0) -> GpuTelemetry:
        return cls(lambda: gpus.sample(accelerator, indices), interval_s=interval_s)

    def __enter__(self) -> GpuTelemetry:
        self._thread = threading.Thread(target=self._run, name="mi300x-telemetry", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=gpus.tool_timeout() + 5)

    def _run(self) -> None:
        while True:
            started = time.monotonic()
            try:
                self.samples.append((time.time(), self.sampler()))
            except GpuToolError as exc:
                if len(self.errors) < 5:
                    self.errors.append(str(exc))
            if self._stop.wait(max(0.0, self.interval_s - (time.monotonic() - started))):
                return

    def summary(self) -> dict[str, Any]:
        """Per-figure mean/min/max over every sample of every GPU, and the throttle verdict."""
        flat = [s for _, batch in self.samples for s in batch]

        def values(name: str) -> list[float]:
            return [float(v) for s in flat if (v := getattr(s, name)) is not None]

        reason = throttle_reason(flat)
        return {
            "samples": len(self.samples), "interval_s": self.interval_s,
            "gpus": sorted({s.index for s in flat}),
            "power_w": _stats(values("power_w")), "temp_c": _stats(values("temp_c")),
            "gfx_clock_mhz": _stats(values("gfx_clock_mhz")),
            "max_gfx_clock_mhz": max(values("max_gfx_clock_mhz"), default=None),
            "util_pct": _stats(values("util_pct")),
            "vram_used_mib": _stats(values("vram_used_mib")),
            "throttled": reason is not None, "throttle_reason": reason,
            "errors": list(self.errors), "numa_balancing": numa_balancing(),
        }


def throttle_reason(samples: Sequence[GpuSample]) -> str | None:
    """Why the samples say the GPUs were throttled, or None."""
    flagged = sorted({s.index for s in samples if s.throttled})
    if flagged:
        return f"the GPU tool reports throttling on GPU {', '.join(map(str, flagged))}"
    slow = [s for s in samples
            if s.gfx_clock_mhz and s.max_gfx_clock_mhz and (s.util_pct or 0) >= 50
            and s.gfx_clock_mhz < CLOCK_DROP * s.max_gfx_clock_mhz]
    if slow:
        worst = min(slow, key=lambda s: (s.gfx_clock_mhz or 0) / (s.max_gfx_clock_mhz or 1))
        return (f"GPU {worst.index} ran at {worst.gfx_clock_mhz:.0f} MHz of "
                f"{worst.max_gfx_clock_mhz:.0f} MHz while {worst.util_pct:.0f}% busy")
    return None


def warn_if_throttled(summary: dict[str, Any], test_id: str) -> None:
    if summary.get("throttled"):
        warnings.warn(ThrottleWarning(
            f"{test_id}: clocks throttled during the measured run ({summary['throttle_reason']}); "
            "its figures are below what the GPUs deliver when cool"), stacklevel=2)
