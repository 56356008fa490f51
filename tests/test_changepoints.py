from __future__ import annotations

import numpy as np

from pytest_mi300x.judge.changepoints import find_change_points


def noisy(n: int, cv: float, seed: int) -> np.ndarray:
    return 100.0 * np.exp(np.random.default_rng(seed).normal(0.0, cv, n))


def test_a_lasting_10pct_throughput_drop_is_found_at_its_run() -> None:
    exact = 0
    for seed in range(100):
        values = noisy(30, 0.03, seed)
        values[18:] *= 0.9
        points = find_change_points(list(values), "request_throughput")
        exact += [(p.index, p.kind) for p in points] == [(18, "regression")]
        assert all(-20 < p.change_pct < -4 for p in points if p.index == 18)
    # At 3% noise, 30 runs: that step and nothing else in 91 of these 100 seeded series.
    assert exact >= 88


def test_direction_follows_the_metric() -> None:
    steps = [20.0] * 6 + [25.0] * 6
    assert find_change_points(steps, "median_ttft_ms")[0].kind == "regression"
    assert find_change_points(steps, "request_throughput")[0].kind == "improvement"


def test_flat_noisy_series_have_almost_no_change_points() -> None:
    flagged = sum(bool(find_change_points(list(noisy(40, 0.03, s)), "request_throughput"))
                  for s in range(200))
    # 40 nights at 3% noise: measured 0.6% of such series get any point at all.
    assert flagged <= 5


def test_one_bad_night_at_the_end_is_not_a_change_point() -> None:
    values = list(noisy(20, 0.02, 1))
    values[-1] *= 0.7
    assert find_change_points(values, "request_throughput") == []


def test_small_steps_below_the_effect_floor_are_not_reported() -> None:
    values = [100.0] * 10 + [97.0] * 10
    assert find_change_points(values, "request_throughput") == []


def test_too_short_or_non_positive_series_give_nothing() -> None:
    assert find_change_points([1.0, 2.0, 3.0], "request_throughput") == []
    assert find_change_points([1.0, 0.0, 1.0, 1.0, 5.0, 5.0], "request_throughput") == []
