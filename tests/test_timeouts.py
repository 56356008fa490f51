"""Timeouts from a workload's expected queueing (load/timeouts.py, load/fit.py), not constants:
issue 27 item 1, case 8's burst of 400 prompts with 4 sequences in flight, on the real
mi300x-01 profile and the real Llama 3.1 70B config."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from pytest_mi300x.engines.flags import FlagSet
from pytest_mi300x.hosts.toml import select_host
from pytest_mi300x.load import timeouts
from pytest_mi300x.load.fit import HostFit, RefusedWorkload
from pytest_mi300x.load.records import LoadRun, RequestRecord
from pytest_mi300x.load.timeouts import MARGIN, REQUEST_FLOOR_S
from pytest_mi300x.workload.arrivals import Arrivals
from pytest_mi300x.workload.datasets import PromptRequest, RandomDataset
from pytest_mi300x.workload.workload import Workload

ROOT = Path(__file__).resolve().parent.parent
MODEL = {"logical": "llama-3.1-70b", "path": "/data/models/Meta-Llama-3.1-70B-Instruct"}
CASE8 = Workload(dataset=RandomDataset(input_len=256, output_len=256, num_prompts=400),
                 arrivals=Arrivals(request_rate=1000.0))


def server(gpus: int, **flags: object) -> SimpleNamespace:
    """What HostFit reads of a running server: its leased GPUs and the flag set asked."""
    asked = FlagSet.of("case", **flags)  # type: ignore[arg-type]
    return SimpleNamespace(asked=asked, spec=SimpleNamespace(gpus=tuple(range(gpus)),
                                                             flag_set=asked))


def requests(n: int, prompt: int, output: int) -> list[PromptRequest]:
    return [PromptRequest("x", prompt, output) for _ in range(n)]


def test_case8_at_full_size_waits_longer_than_the_old_60_s_and_says_why() -> None:
    host = select_host("mi300x-01", ROOT / "hosts.toml")
    fit = HostFit(host, MODEL, [server(4, max_num_seqs=4, tensor_parallel_size=4)])
    limits = fit.timeouts_for(CASE8, requests(400, 256, 256), CASE8.arrivals)
    # 100 waves of 4: the last streams are silent for 99 waves of 256 decode steps.
    assert limits.waves == 100 and limits.in_flight == 4
    assert fit.roofline is not None
    wave = fit.roofline.wave_s([(256, 256)] * 400, 4) / timeouts.ATTAINABLE
    assert limits.wave_s == pytest.approx(wave)
    assert limits.stall_s == pytest.approx(MARGIN * 100 * wave)
    assert limits.stall_s > 10 * 60.0  # far past the client's old constant
    assert limits.request_s > limits.stall_s
    assert "100 wave(s) of 4 in flight" in limits.basis and "roofline" in limits.basis
    # The same burst at 512 in flight is one wave: the floor holds.
    wide = HostFit(host, MODEL, [server(4, max_num_seqs=512)])
    one = wide.timeouts_for(CASE8, requests(400, 256, 256), CASE8.arrivals)
    assert one.waves == 1 and one.stall_s == 60.0 and one.request_s == REQUEST_FLOOR_S
    # Recorded with the result (the document's host_fit).
    recorded = fit.describe()["timeouts"]
    assert recorded["waves"] == 100 and recorded["stall_timeout_s"] > 600


def run(records: list[RequestRecord], duration: float) -> LoadRun:
    return LoadRun(records=records, duration=duration, started_at=0.0, arrivals={})


def test_the_warm_up_measures_a_wave_and_the_runs_use_it() -> None:
    cpu = select_host("cpu", None)
    fit = HostFit(cpu, {"logical": "llama-3.1-70b", "path": "/nowhere"},
                  [server(0, max_num_seqs=4)])
    scaled = CASE8.scaled(cpu.scale)
    batch = requests(40, 64, 64)
    prior = fit.timeouts_for(scaled, batch, scaled.arrivals)
    # No roofline on the cpu host, nothing measured: each of the 10 waves may take the floor.
    assert prior.waves == 10 and prior.stall_s == 600.0 and "no roofline" in prior.basis
    # One at a time... of 4: request i of a wave served in 4 s after a 0.5 s prefill.
    records = [RequestRecord(index=i, prompt_len=64, output_len=64) for i in range(40)]
    for i, r in enumerate(records):
        r.ttft, r.latency = 0.5 + 4.5 * (i // 4), 4.5 + 4.5 * (i // 4)
    fit.learn(run(records, 50.0), scaled.arrivals, batch)
    after = fit.timeouts_for(scaled, batch, scaled.arrivals)
    # The run's duration per wave (5 s) over a request's own 4.5 s.
    assert after.wave_s == 5.0 and after.stall_s == MARGIN * 10 * 5.0
    assert "measured" in after.basis
    # A warm-up cut short by its prior timeout: the requests it completed still measure a
    # wave (the longest served, 4 s, plus the shortest TTFT, 0.5 s).
    for r in records[8:]:
        r.error, r.ttft, r.latency = "StallTimeout: ...", None, None
    fit.learn(run(records, 1.0), scaled.arrivals, batch)
    assert fit.measured_wave_s == 4.5
    # Nothing completed: nothing learnt.
    for r in records:
        r.error, r.ttft, r.latency = "StallTimeout: ...", None, None
    fit.learn(run(records, 1.0), scaled.arrivals, batch)
    assert fit.measured_wave_s == 4.5


def test_the_floor_is_the_workloads_stall_timeout() -> None:
    floor = timeouts.derive(10, None, 7.5)
    assert floor.waves == 1 and floor.stall_s == 7.5
    slow = timeouts.derive(10, 2, 7.5, measured_wave_s=100.0)
    assert slow.waves == 5 and slow.stall_s == MARGIN * 5 * 100.0


def test_a_workload_the_gpus_cannot_hold_is_refused_before_anything_runs() -> None:
    host = select_host("mi300x-01", ROOT / "hosts.toml")
    fit = HostFit(host, MODEL, [server(1)])
    huge = Workload(RandomDataset(input_len=120_000, output_len=8_000, num_prompts=2))
    with pytest.raises(RefusedWorkload, match="cannot run: llama-3.1-70b: one request"):
        fit.check(huge, [(120_000, 8_000)] * 2)
    assert fit.describe()["feasibility"]["status"] == "infeasible"
