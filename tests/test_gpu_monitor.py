"""Item 11 of issue 27: throttling on MI300X from amd-smi's violation counters (ROCm 6.3+),
not ``power.throttle_status`` (absent on MI3xx), and telemetry from one long-lived
``amd-smi monitor -w 1`` instead of ``amd-smi metric --json`` spawned every second.

The parsers read real tables and counters from amd-smi's changelog and a maintainer's paste
(tests/data/smi/); the end-to-end runs use the amd-smi double, whose `monitor` prints the
same columns and whose counters tick as the real ones do.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from pytest_mi300x.gpus.monitor import MonitorStream, monitor_argv, parse_monitor, split_values
from pytest_mi300x.gpus.violations import (
    Violations,
    parse_violations,
    residency,
    thermal_limited,
)
from pytest_mi300x.telemetry.gpu import (
    GpuTelemetry,
    MonitoredTelemetry,
    ThrottleWarning,
    warn_if_throttled,
)
from tests.doubles import install_command

DATA = Path(__file__).parent / "data" / "smi"


@pytest.fixture
def amd_smi(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    install_command(tmp_path / "bin", "amd-smi", "amd_smi.py")
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_GPU_COUNT", "2")
    monkeypatch.setenv("FAKE_MONITOR_SLEEP", "0.2")
    monkeypatch.setenv("AMD_SMI_DOUBLE_JOURNAL", str(tmp_path / "calls"))
    return tmp_path / "calls"


def test_real_monitor_tables_parse_across_releases() -> None:
    assert split_values("  1    N/A     N/A  0.5/ 24.0 GB") == ["1", "N/A", "N/A", "0.5/24.0 GB"]
    cpx = parse_monitor((DATA / "amd-smi-monitor-mi300x-cpx.txt").read_text().splitlines())
    assert [s.index for s in cpx] == list(range(9))
    first = cpx[0]
    assert (first.power_w, first.temp_c, first.gfx_clock_mhz, first.util_pct) == \
        (202.0, 46.0, 2107.0, 0.0)
    assert first.vram_total_mib == pytest.approx(192.0 * 1024)
    assert cpx[1].power_w is None and cpx[1].vram_used_mib == pytest.approx(512.0)
    # ROCm 6.3's column names (GPU_TEMP, GFX_UTIL, VRAM_USED) and its TIMESTAMP column.
    [w1] = parse_monitor((DATA / "amd-smi-monitor-w1.txt").read_text().splitlines())
    assert (w1.power_w, w1.temp_c, w1.vram_used_mib, w1.vram_total_mib) == \
        (8.0, 28.0, 16.0, 30679.0)
    assert w1.thermal_violation_pct is None  # "N/A": not reported on that GPU
    # A partition's row (XCP column) and the power cap view parse too.
    assert parse_monitor((DATA / "amd-smi-monitor-xcp.txt").read_text().splitlines())[0].util_pct \
        == 8.0
    assert [s.power_w for s in parse_monitor(
        (DATA / "amd-smi-monitor-power-cap.txt").read_text().splitlines())] == [148, 156, 153]


def test_real_violation_shares_separate_thermal_limits_from_the_power_cap() -> None:
    rows = parse_monitor((DATA / "amd-smi-monitor-violation.txt").read_text().splitlines())
    assert [(s.index, s.power_violation_pct, s.thermal_violation_pct) for s in rows][:2] == \
        [(0, 100.0, 1.0), (1, 100.0, 0.0)]
    from pytest_mi300x.telemetry.gpu import throttle_reason

    reason, known = throttle_reason(rows)
    # Every GPU at its power cap (PVIOL 100 %): how MI300X runs under load, no warning;
    # GPUs 0 and 5 were thermally limited (TVIOL 1 % and 3 %): that is the warning.
    assert known and reason is not None and "GPU 0, 5" in reason


def test_real_violation_counters_and_their_shares_over_a_run() -> None:
    start = parse_violations((DATA / "amd-smi-metric-throttle.txt").read_text())
    assert start[0].counter == 11240028 and start[0].accumulated["hbm_thermal"] == 0
    assert start[1].active == {"prochot": False, "ppt": False, "socket_thermal": False,
                               "vr_thermal": False, "hbm_thermal": False}
    # Counters only grow: 1,000,000 ticks later, HBM thermal active for 25,000 of them.
    end = {0: Violations(0, start[0].counter + 1_000_000,
                         {**start[0].accumulated, "hbm_thermal": 25_000, "ppt": 400_000})}
    shares = residency(start, end)
    assert shares[0]["hbm_thermal"] == 2.5 and shares[0]["ppt"] == 40.0
    assert thermal_limited(shares) == "GPU 0: hbm_thermal 2.5%"
    assert thermal_limited(residency(start, start)) is None  # no time passed: nothing said


def test_one_monitor_process_follows_the_run_and_the_counters_give_the_verdict(
        amd_smi: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_GPU_THERMAL", "1:5")  # GPU 1's HBM thermal limiter, 5 %
    telemetry = GpuTelemetry.for_gpus("mi300x", [0, 1])
    assert isinstance(telemetry, MonitoredTelemetry)
    with telemetry:
        time.sleep(1.2)
    summary = telemetry.summary()
    calls = amd_smi.read_text().splitlines()
    assert [c for c in calls if c.startswith("monitor")] == [
        " ".join(monitor_argv([0, 1], 1.0)[1:])]
    # No `amd-smi metric` of every GPU each second: two counter readings, around the run.
    assert [c for c in calls if c.startswith("metric")] == \
        ["metric --throttle --json -g 0 1"] * 2
    assert summary["samples"] >= 3 and summary["gpus"] == [0, 1]
    assert summary["power_w"]["max"] == 381.0
    assert summary["throttled"] is True and "GPU 1: hbm_thermal" in summary["throttle_reason"]
    assert summary["violations_pct"][1]["hbm_thermal"] == pytest.approx(5, abs=0.5)
    assert summary["violations_pct"][0]["hbm_thermal"] == 0
    # Half the run at the power cap: reported, not warned about.
    assert summary["power_capped_pct"] == pytest.approx({0: 50, 1: 50}, abs=1)
    with pytest.warns(ThrottleWarning, match="hbm_thermal"):
        warn_if_throttled(summary, "t::x")


def test_an_amd_smi_before_violations_still_monitors_and_says_it_cannot_tell(
        amd_smi: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_AMD_SMI_OLD", "1")  # no --violation, no --throttle (< ROCm 6.3)
    with GpuTelemetry.for_gpus("mi300x", [0]) as telemetry:
        time.sleep(1.0)
    summary = telemetry.summary()
    assert summary["samples"] >= 2 and summary["temp_c"]["max"] == 61.0
    assert summary["throttled"] is None and summary["violations_pct"] is None
    monitors = [c for c in amd_smi.read_text().splitlines() if c.startswith("monitor")]
    assert len(monitors) == 2 and "--violation" not in monitors[1]


def test_a_monitor_that_gives_nothing_falls_back_to_polling() -> None:
    from pytest_mi300x.gpus.smi import GpuSample

    polled = []

    def poll() -> list[GpuSample]:
        polled.append(1)
        return [GpuSample(0, power_w=100.0)]

    stream = MonitorStream([0], 0.05, argv=lambda _: ["false"], fallback=poll)
    with stream:
        time.sleep(0.5)
    assert polled and stream.command == ["(polling)"]
    assert len(stream.errors) == 2  # both monitor commands ended without a row


def test_a_run_shorter_than_the_first_row_still_gets_it(tmp_path: Path) -> None:
    """A run of a second or two on a loaded host ends before `amd-smi monitor` prints its
    first row: stopping waits for that row (up to one interval more), so the run is
    described by one sample rather than none."""
    script = tmp_path / "slow_monitor.sh"
    script.write_text("#!/bin/sh\nsleep 0.6\necho 'GPU  POWER  GPU_T'\necho '0  202 W  46 °C'\n"
                      "sleep 30\n")
    script.chmod(0o755)
    stream = MonitorStream([0], 1.0, argv=lambda _: [str(script)])
    with stream:
        pass  # the run is over at once
    rows = [s for _, batch in stream.batches for s in batch]
    assert [(s.index, s.power_w, s.temp_c) for s in rows] == [(0, 202.0, 46.0)]
