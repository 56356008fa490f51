"""Item 6 of issue 27: NUMA balancing is enforced, not only recorded. ROCm's MI300X guide:
disable it, "otherwise the GPU might hang until the periodic balancing is finalized". A host
profile that asks for it (``[hosts.X.checks] numa_balancing = 0``, as mi300x-01 does) makes
every session on the host stop before its first test when the kernel says otherwise, in one
line with the fix; the setting is part of every result's comparability (see
test_gpu_identity.py). The kernel's knob is a file: tests point the harness at their own."""

from __future__ import annotations

from pathlib import Path

import pytest

from pytest_mi300x.config import Settings
from pytest_mi300x.hosts import fingerprint
from pytest_mi300x.hosts.profile import HostChecks, HostProfile
from pytest_mi300x.hosts.toml import select_host
from pytest_mi300x.plugin.lifecycle import check_host
from pytest_mi300x.session import PerfSession

ROOT = Path(__file__).parent.parent


def session(tmp_path: Path, checks: HostChecks) -> PerfSession:
    host = HostProfile(name="numa-host", accelerator="cpu", accelerator_count=0, checks=checks,
                       source="hosts.toml")
    return PerfSession(Settings(gpu_host="numa-host", cache_dir=tmp_path / "cache"), host,
                       tmp_path / "results")


def test_a_session_stops_before_its_first_test_when_numa_balancing_is_on(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    knob = tmp_path / "numa_balancing"
    knob.write_text("1\n")
    monkeypatch.setattr(fingerprint, "NUMA_BALANCING", knob)
    with session(tmp_path, HostChecks(numa_balancing=0)) as perf, \
            pytest.raises(pytest.UsageError) as exc:
        check_host(perf, workers=1)
    message = str(exc.value)
    assert "\n" not in message and "numa_balancing: 1; the profile asks 0" in message
    assert "sudo sysctl -w kernel.numa_balancing=0" in message
    knob.write_text("0\n")
    with session(tmp_path, HostChecks(numa_balancing=0)) as perf:
        check_host(perf, workers=1)  # as the profile asks: the session goes on
    knob.write_text("1\n")
    with session(tmp_path, HostChecks()) as perf:
        check_host(perf, workers=1)  # a profile that asks nothing: recorded only


def test_the_mi300x_profile_asks_for_numa_balancing_off() -> None:
    host = select_host("mi300x-01", ROOT / "hosts.toml")
    assert host.checks.numa_balancing == 0
