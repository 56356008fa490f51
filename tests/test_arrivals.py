"""Arrival schedules: vllm bench serve's gamma-gap rule, rescaled to end at n/rate."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from pytest_mi300x.workload.arrivals import Arrivals


def test_burst_sends_everything_at_zero() -> None:
    assert Arrivals().offsets(5, seed=0) == [0.0] * 5


def test_no_requests_no_offsets() -> None:
    assert Arrivals(request_rate=3.0).offsets(0, seed=0) == []


@pytest.mark.parametrize("burstiness", [0.25, 1.0, 4.0])
def test_last_arrival_lands_at_n_over_rate(burstiness: float) -> None:
    offsets = Arrivals(request_rate=4.0, burstiness=burstiness).offsets(100, seed=7)
    assert len(offsets) == 100
    assert offsets[-1] == pytest.approx(25.0, abs=1e-9)
    assert offsets[0] > 0.0  # vllm delays the first request by its own gap too
    assert all(b >= a for a, b in zip(offsets, offsets[1:], strict=False))


def test_same_seed_same_schedule_other_seed_other_schedule() -> None:
    arrivals = Arrivals(request_rate=10.0)
    assert arrivals.offsets(20, seed=1) == arrivals.offsets(20, seed=1)
    assert arrivals.offsets(20, seed=1) != arrivals.offsets(20, seed=2)


def test_matches_vllm_draws_from_seeded_global_numpy() -> None:
    # vllm seeds the global numpy state with --seed and draws one gamma per request.
    rate, burstiness, n, seed = 2.0, 0.5, 30, 11
    state = np.random.get_state()
    try:
        np.random.seed(seed)
        gaps = [
            np.random.gamma(shape=burstiness, scale=1.0 / (rate * burstiness)) for _ in range(n)
        ]
    finally:
        np.random.set_state(state)
    cumulative = np.cumsum(gaps)
    expected = cumulative * ((n / rate) / cumulative[-1])
    got = Arrivals(request_rate=rate, burstiness=burstiness).offsets(n, seed=seed)
    assert got == pytest.approx(expected.tolist(), rel=1e-12)


@pytest.mark.parametrize("burstiness", [0.25, 1.0, 4.0])
def test_gap_spread_follows_burstiness(burstiness: float) -> None:
    # Gamma(shape=k) gaps have coefficient of variation 1/sqrt(k).
    offsets = np.array(Arrivals(request_rate=5.0, burstiness=burstiness).offsets(4000, seed=3))
    gaps = np.diff(np.concatenate([[0.0], offsets]))
    assert gaps.mean() == pytest.approx(1 / 5.0, rel=1e-9)
    cv = gaps.std() / gaps.mean()
    assert cv == pytest.approx(1 / math.sqrt(burstiness), rel=0.15)


def test_infinite_burstiness_is_uniform() -> None:
    offsets = Arrivals(request_rate=2.0, burstiness=math.inf).offsets(4, seed=0)
    assert offsets == pytest.approx([0.5, 1.0, 1.5, 2.0])


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"request_rate": 0.0}, "request_rate"),
        ({"request_rate": -1.0}, "request_rate"),
        ({"request_rate": math.nan}, "request_rate"),
        ({"burstiness": 0.0}, "burstiness"),
        ({"max_concurrency": 0}, "max_concurrency"),
        ({"max_concurrency": 2.5}, "max_concurrency"),
        ({"max_concurrency": True}, "max_concurrency"),
    ],
)
def test_invalid_values_name_the_field(kwargs: dict[str, object], field: str) -> None:
    with pytest.raises(ValueError, match=field):
        Arrivals(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("arrivals", "label"),
    [
        (Arrivals(), "rate-inf"),
        (Arrivals(request_rate=4.0), "rate-4"),
        (Arrivals(request_rate=4.0, max_concurrency=8), "rate-4-conc-8"),
        (Arrivals(request_rate=0.5, burstiness=0.5), "rate-0.5-burst-0.5"),
        (Arrivals(max_concurrency=1), "rate-inf-conc-1"),
    ],
)
def test_labels(arrivals: Arrivals, label: str) -> None:
    assert arrivals.label == label


def test_describe_is_strict_json() -> None:
    described = Arrivals(max_concurrency=2).describe()
    assert described == {
        "request_rate": "inf",
        "burstiness": 1.0,
        "max_concurrency": 2,
        "label": "rate-inf-conc-2",
    }
    json.dumps(described, allow_nan=False)
