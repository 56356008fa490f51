"""GPU telemetry during a run: sampling, summary, throttle warning, NUMA state."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from pytest_mi300x.gpus import discovery as gpus
from pytest_mi300x.gpus.discovery import GpuSample, GpuToolError
from pytest_mi300x.telemetry.gpu import (
    GpuTelemetry,
    ThrottleWarning,
    numa_balancing,
    throttle_reason,
    warn_if_throttled,
)

DATA = Path(__file__).parent / "data" / "smi"


def test_sampling_summarises_power_clock_vram_of_real_nvidia_samples() -> None:
    idle = gpus.parse_nvidia_query((DATA / "query-gpu-idle.csv").read_text())
    busy = gpus.parse_nvidia_query((DATA / "query-gpu-busy.csv").read_text())
    readings = iter([idle, busy, busy])
    with GpuTelemetry(lambda: next(readings, busy), interval_s=0.02) as sampler:
        while len(sampler.samples) < 3:
            time.sleep(0.01)
    summary = sampler.summary()
    assert summary["gpus"] == [0]
    assert summary["power_w"]["max"] == 308.73 and summary["power_w"]["min"] == 112.0
    assert summary["vram_used_mib"]["max"] == 8641
    assert summary["throttled"] is True  # the busy H100 sample reports its SW power cap
    assert "GPU 0" in summary["throttle_reason"]


def test_a_clock_below_its_top_is_no_evidence_of_throttling_on_a_power_managed_gpu() -> None:
    # MI300X under full load runs below its top clock at its power cap by design: without
    # violation counters or a throttle status, the verdict is "unknown", not "throttled".
    busy_slow = GpuSample(2, gfx_clock_mhz=1200, max_gfx_clock_mhz=2100, util_pct=98)
    assert throttle_reason([busy_slow]) == (None, False)
    hot = GpuSample(2, thermal_violation_pct=3.0, power_violation_pct=100.0)
    reason, known = throttle_reason([hot])
    assert known and reason is not None and "GPU 2" in reason
    capped = GpuSample(2, thermal_violation_pct=0.0, power_violation_pct=100.0)
    assert throttle_reason([capped]) == (None, True)  # at its power cap: not a warning


def test_throttled_run_warns_and_a_failing_tool_is_recorded_not_raised() -> None:
    with pytest.warns(ThrottleWarning, match="t::x: clocks throttled during the measured run"):
        warn_if_throttled({"throttled": True, "throttle_reason": "why"}, "t::x")

    def broken() -> list[GpuSample]:
        raise GpuToolError("amd-smi did not answer within 20 s (driver hung?)")

    with GpuTelemetry(broken, interval_s=0.01) as sampler:
        time.sleep(0.05)
    summary = sampler.summary()
    assert summary["samples"] == 0 and summary["throttled"] is None  # nothing could tell
    assert summary["errors"][0].startswith("amd-smi did not answer")


def test_numa_balancing_is_read_from_procfs(tmp_path: Path) -> None:
    knob = tmp_path / "numa_balancing"
    knob.write_text("1\n")
    assert numa_balancing(knob) == "1"
    assert numa_balancing(tmp_path / "absent") is None
