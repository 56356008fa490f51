"""GPU telemetry during a measured run: power, temperature, clocks, utilisation, VRAM, and
whether a limiter held the clocks down.

On amd-smi hosts one long-lived ``amd-smi monitor -w 1`` follows the leased GPUs
(gpus/monitor.py), and the violation counters are read before and after the run
(``amd-smi metric --throttle``, gpus/violations.py): the share of the run each limiter was
active, exactly. Elsewhere (rocm-smi, nvidia-smi) a thread polls the tool every second, each
call under a timeout. The summary goes into the result with the host's NUMA-balancing
state; a run a thermal limiter held down raises a warning (its figures are not what the
GPUs deliver when cool). Time at the power cap is reported, not warned about: it is how a
power-managed GPU runs under full load, and the cap is part of the host's identity.
"""

from __future__ import annotations

import shutil
import statistics
import threading
import time
import warnings
from collections.abc import Callable, Sequence
from typing import Any

from pytest_mi300x.gpus import discovery as gpus
from pytest_mi300x.gpus.discovery import GpuSample, GpuToolError
from pytest_mi300x.gpus.monitor import MonitorStream
from pytest_mi300x.gpus.violations import (
    AMD_VIOLATIONS,
    POWER,
    Violations,
    parse_violations,
    residency,
    thermal_limited,
)
from pytest_mi300x.hosts.fingerprint import numa_balancing

Sampler = Callable[[], list[GpuSample]]


class ThrottleWarning(UserWarning):
    """GPU clocks were held down during a measured run."""


def _stats(values: Sequence[float]) -> dict[str, float] | None:
    if not values:
        return None
    return {"mean": round(statistics.fmean(values), 2), "min": min(values), "max": max(values)}


class GpuTelemetry:
    """Context manager: samples ``sampler`` every ``interval_s`` until exit; no pytest needed."""

    def __init__(self, sampler: Sampler, *, interval_s: float = 1.0,
                 counters: Callable[[], dict[int, Violations]] | None = None) -> None:
        self.sampler = sampler
        self.interval_s = interval_s
        self.counters = counters
        """Reads the violation counters (amd-smi hosts), before and after the run."""
        self.samples: list[tuple[float, list[GpuSample]]] = []
        self.errors: list[str] = []
        self.residency: dict[int, dict[str, float]] | None = None
        self.source = "polling"
        self._before: dict[int, Violations] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @classmethod
    def for_gpus(cls, accelerator: str, indices: Sequence[int],
                 interval_s: float = 1.0) -> GpuTelemetry:
        """``amd-smi monitor`` and its violation counters where amd-smi is installed,
        else polling the host's tool."""
        if gpus.vendor(accelerator) == "amd" and shutil.which("amd-smi"):
            return MonitoredTelemetry(indices, interval_s=interval_s)
        return cls(lambda: gpus.sample(accelerator, indices), interval_s=interval_s)

    def __enter__(self) -> GpuTelemetry:
        self._before = self._read_counters()
        self._start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._finish()
        if self._before:
            self.residency = residency(self._before, self._read_counters())

    def _read_counters(self) -> dict[int, Violations]:
        if self.counters is None:
            return {}
        try:
            return self.counters()
        except GpuToolError as exc:
            self.errors.append(f"violation counters: {exc}")
            return {}

    def _start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="mi300x-telemetry", daemon=True)
        self._thread.start()

    def _finish(self) -> None:
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

        reason, known = throttle_reason(flat, self.residency)
        power = ({g: max((v for k, v in kinds.items() if k in POWER), default=0.0)
                  for g, kinds in self.residency.items()} if self.residency else None)
        return {
            "source": self.source,
            "samples": len(self.samples), "interval_s": self.interval_s,
            "gpus": sorted({s.index for s in flat}),
            "power_w": _stats(values("power_w")), "temp_c": _stats(values("temp_c")),
            "gfx_clock_mhz": _stats(values("gfx_clock_mhz")),
            "max_gfx_clock_mhz": max(values("max_gfx_clock_mhz"), default=None),
            "util_pct": _stats(values("util_pct")),
            "vram_used_mib": _stats(values("vram_used_mib")),
            # None: nothing this host's tool reports can tell (no violation counters, no
            # throttle status); a clock below its top is no evidence on a power-managed GPU.
            "throttled": (reason is not None) if known else None, "throttle_reason": reason,
            "violations_pct": self.residency,
            "power_capped_pct": power,
            "errors": list(self.errors), "numa_balancing": numa_balancing(),
        }


class MonitoredTelemetry(GpuTelemetry):
    """``amd-smi monitor -w`` for the time series, the violation counters for the verdict;
    polling ``amd-smi metric`` only if the monitor gives nothing."""

    def __init__(self, indices: Sequence[int], *, interval_s: float = 1.0,
                 run: Callable[[Sequence[str], float], str] = gpus.run_tool) -> None:
        ids = [str(i) for i in indices]
        super().__init__(lambda: gpus.sample("mi300x", indices), interval_s=interval_s,
                         counters=lambda: parse_violations(
                             run([*AMD_VIOLATIONS, "-g", *ids], gpus.tool_timeout())))
        self.stream = MonitorStream(indices, interval_s, fallback=self.sampler)
        self.source = "amd-smi monitor"

    def _start(self) -> None:
        self.stream.__enter__()

    def _finish(self) -> None:
        self.stream.__exit__(None, None, None)
        self.source = " ".join(self.stream.command) or self.source
        self.samples.extend(self.stream.batches)
        self.errors.extend(self.stream.errors[:5])


def throttle_reason(samples: Sequence[GpuSample],
                    shares: dict[int, dict[str, float]] | None = None) -> tuple[str | None, bool]:
    """Why the GPUs were held down (None if they were not), and whether anything reported
    could tell: violation counters first, then the monitor's thermal shares, then a tool's
    own throttle flag (nvidia-smi's clock-event reasons, amd-smi's throttle_status on GPUs
    that have one)."""
    if shares:
        limited = thermal_limited(shares)
        return (None if limited is None else
                f"a thermal limiter held the clocks (amd-smi violation counters): {limited}",
                True)
    hot = sorted({s.index for s in samples if (s.thermal_violation_pct or 0) > 0})
    if hot:
        return (f"a thermal limiter held the clocks on GPU {', '.join(map(str, hot))} "
                "(amd-smi monitor)", True)
    flagged = sorted({s.index for s in samples if s.throttled})
    if flagged:
        return f"the GPU tool reports throttling on GPU {', '.join(map(str, flagged))}", True
    known = any(s.thermal_violation_pct is not None or s.throttled is not None
                for s in samples)
    return None, known


def warn_if_throttled(summary: dict[str, Any], test_id: str) -> None:
    if summary.get("throttled"):
        warnings.warn(ThrottleWarning(
            f"{test_id}: clocks throttled during the measured run ({summary['throttle_reason']}); "
            "its figures are below what the GPUs deliver when cool"), stacklevel=2)
