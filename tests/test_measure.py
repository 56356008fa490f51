from __future__ import annotations

import math

import pytest

from pytest_mi300x.hosts.cpu import CPU_HOST
from pytest_mi300x.hosts.profile import WorkloadScale
from pytest_mi300x.load.measurer import Workload
from pytest_mi300x.workload.arrivals import Arrivals
from pytest_mi300x.workload.datasets import RandomDataset


def test_workload_scales_prompts_rate_and_lengths_but_keeps_seed_and_burst() -> None:
    full = Workload(RandomDataset(input_len=256, output_len=128, num_prompts=400, seed=3),
                    Arrivals(request_rate=16.0, max_concurrency=8))
    small = full.scaled(CPU_HOST.scale)
    assert (small.dataset.input_len, small.dataset.output_len) == (64, 32)
    assert small.dataset.num_prompts == 40 and small.dataset.seed == 3
    assert small.arrivals.request_rate == 4.0 and small.arrivals.max_concurrency == 8
    burst = Workload(full.dataset).scaled(CPU_HOST.scale)
    assert math.isinf(burst.arrivals.request_rate)
    assert full.scaled(WorkloadScale()) == full


def test_prefix_cache_mode_is_checked_and_described() -> None:
    ds = RandomDataset(input_len=8, output_len=4, num_prompts=2)
    assert Workload(ds, prefix_cache="fresh").describe()["prefix_cache"] == "fresh"
    assert "prefix_cache" not in Workload(ds).describe()
    with pytest.raises(ValueError, match="prefix_cache 'cold' is not one of as-is, fresh"):
        Workload(ds, prefix_cache="cold")
