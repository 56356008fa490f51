"""The verdict rule: server starts as the unit of repetition, an interval, a threshold."""

from __future__ import annotations

import math
import random

import pytest

from pytest_mi300x.judge.verdict import (
    DEFAULT_THRESHOLD_PCT,
    GATED_METRICS,
    WARN_METRICS,
    Kind,
    inconclusive_all,
    judge_all,
    judge_starts,
)
from pytest_mi300x.results.metrics import METRIC_DIRECTIONS
from pytest_mi300x.results.stack import stack_diff

TPUT, TTFT = "request_throughput", "median_ttft_ms"


def starts(*medians: float, runs: int = 3, spread: float = 0.005) -> list[list[float]]:
    """Server starts with these medians, each with a few runs spread around it."""
    return [[m * (1 - spread), m, m * (1 + spread)][:runs] for m in medians]


def test_metric_sets_split_every_directed_metric() -> None:
    assert set(METRIC_DIRECTIONS) == GATED_METRICS | WARN_METRICS
    assert not GATED_METRICS & WARN_METRICS
    assert {TPUT, TTFT, "median_tpot_ms"} <= GATED_METRICS
    assert {"p99_ttft_ms", "mean_tpot_ms"} <= WARN_METRICS


def test_a_ten_percent_throughput_drop_over_three_starts_each_is_a_failing_regression() -> None:
    v = judge_starts(TPUT, starts(10.0, 10.1, 9.9), starts(9.0, 9.1, 8.9))
    assert v.kind is Kind.REGRESSION and v.fails
    assert v.change_pct == pytest.approx(-10.0, abs=0.2)
    lo, hi = v.interval_pct
    assert lo < v.change_pct < hi < 0
    assert v.baseline_starts == pytest.approx((10.0, 10.1, 9.9))
    assert "wholly worse" in v.reason and "3 vs 3 server start(s)" in v.reason


def test_latency_rise_fails_only_when_gated() -> None:
    gated = judge_starts(TTFT, starts(20.0, 20.2, 19.8), starts(23.0, 23.1, 22.9))
    tail = judge_starts("p99_ttft_ms", starts(20.0, 20.2, 19.8), starts(23.0, 23.1, 22.9))
    assert gated.kind is tail.kind is Kind.REGRESSION
    assert gated.fails and not tail.fails


def test_improvement_in_each_direction() -> None:
    assert judge_starts(TPUT, starts(10.0, 10.1, 9.9), starts(11.5, 11.6, 11.4)).kind \
        is Kind.IMPROVEMENT
    assert judge_starts(TTFT, starts(20.0, 20.2, 19.8), starts(17.0, 17.1, 16.9)).kind \
        is Kind.IMPROVEMENT


def test_same_build_is_no_change_when_the_interval_sits_inside_the_threshold() -> None:
    v = judge_starts(TPUT, starts(10.0, 10.1, 9.9), starts(10.05, 9.95, 10.0))
    assert v.kind is Kind.NO_CHANGE and "within 5%" in v.reason
    lo, hi = v.interval_pct
    assert -DEFAULT_THRESHOLD_PCT < lo < 0 < hi < DEFAULT_THRESHOLD_PCT


def test_a_real_change_below_the_threshold_is_no_change_once_the_interval_is_narrow() -> None:
    v = judge_starts(TPUT, starts(10.0, 10.02, 9.98), starts(9.8, 9.82, 9.78))
    assert v.kind is Kind.NO_CHANGE and v.change_pct == pytest.approx(-2.0, abs=0.1)


def test_noisy_starts_leave_it_undecided_and_ask_for_more() -> None:
    v = judge_starts(TPUT, starts(10.0, 12.0, 8.5), starts(9.0, 10.5, 8.0))
    assert v.kind is Kind.INCONCLUSIVE and v.needs_more
    assert "add starts" in v.reason


def test_a_start_is_never_less_noisy_than_its_own_runs() -> None:
    # Start medians agree exactly, but each start's runs spread 20%: one cannot trust
    # the medians to 1% then.
    noisy = [[8.0, 10.0, 12.0], [8.0, 10.0, 12.0], [8.0, 10.0, 12.0]]
    v = judge_starts(TPUT, noisy, [[7.0, 8.8, 10.6]] * 3)
    assert v.noise_pct > 5 and "within starts" in v.reason


def test_one_start_each_uses_the_hosts_recorded_noise() -> None:
    without = judge_starts(TPUT, [[10.0]], [[8.5]])
    assert without.kind is Kind.INCONCLUSIVE and without.needs_more
    with_host = judge_starts(TPUT, [[10.0]], [[8.5]], noise_floor_pct=2.0)
    assert with_host.kind is Kind.REGRESSION and "the host's record" in with_host.reason
    assert with_host.noise_pct == pytest.approx(2.0, abs=0.01)
    too_noisy = judge_starts(TPUT, [[10.0]], [[8.5]], noise_floor_pct=8.0)
    assert too_noisy.kind is Kind.INCONCLUSIVE


def test_the_threshold_is_the_floor_of_what_counts() -> None:
    base, cand = starts(10.0, 10.1, 9.9), starts(9.0, 9.1, 8.9)
    assert judge_starts(TPUT, base, cand, threshold_pct=25.0).kind is Kind.NO_CHANGE


@pytest.mark.parametrize("bad", [[0.0, 1.0], [float("nan"), 1.0], [-1.0, 2.0]])
def test_invalid_values_are_inconclusive(bad: list[float]) -> None:
    v = judge_starts(TPUT, [bad], starts(10.0))
    assert v.kind is Kind.INCONCLUSIVE and not v.needs_more and "not a valid" in v.reason


def test_an_empty_side_is_inconclusive() -> None:
    assert judge_starts(TPUT, [], starts(1.0)).kind is Kind.INCONCLUSIVE


def test_message_shows_every_run_start_interval_and_threshold() -> None:
    v = judge_starts(TPUT, starts(10.0, 10.1, 9.9), starts(9.0, 9.1, 8.9))
    text = v.message()
    assert text.startswith("request_throughput: REGRESSION (gated, higher is better)")
    assert "3 server starts' medians: 10, 10.1, 9.9" in text
    assert "99% interval" in text and "threshold 5.0%" in text


def test_direction_override_and_unknown_metric() -> None:
    v = judge_starts("x", [[1.0, 1.0]], [[2.0, 2.0]], direction="lower",
                     noise_floor_pct=1.0)
    assert v.kind is Kind.REGRESSION and not v.gated
    with pytest.raises(ValueError, match="direction must be"):
        judge_starts("x", [[1.0]], [[2.0]])


def test_judge_all_groups_runs_by_start_and_uses_per_metric_floors_and_noise() -> None:
    base = [{TPUT: v, TTFT: 20.0, "label": 1.0} for v in (10.0, 10.1, 9.9, 10.0, 10.05, 9.95)]
    cand = [{TPUT: 9.2, TTFT: 20.0}]
    verdicts = {v.metric: v for v in judge_all(base, cand, baseline_starts=[0, 0, 1, 1, 2, 2],
                                               floors={TPUT: 5.0}, noise={TPUT: 1.0})}
    assert set(verdicts) == {TPUT, TTFT}  # "label" has no direction
    assert len(verdicts[TPUT].baseline_starts) == 3
    assert verdicts[TPUT].kind is Kind.REGRESSION
    with pytest.raises(ValueError, match="server start"):
        judge_all(base, cand, baseline_starts=[0])


def test_stack_diff_names_what_differs() -> None:
    baseline = {"cpu_model": "A", "workload": {"dataset": {"num_prompts": 40}}}
    candidate = {"cpu_model": "B", "workload": {"dataset": {"num_prompts": 80}}}
    assert stack_diff(baseline, candidate) == [
        "cpu_model: A -> B", "workload.dataset.num_prompts: 40 -> 80"]
    assert stack_diff(baseline, baseline) == []
    assert stack_diff({"a": 1}, {"a": 1, "workload": {"x": 1}}) == [
        "workload: <missing> -> recorded"]


def test_inconclusive_all_keeps_the_reason_and_runs() -> None:
    verdicts = inconclusive_all([TPUT, "label"], "different stack",
                                baseline_reps=[{TPUT: 1.0}], candidate_reps=[{TPUT: 2.0}])
    assert [(v.metric, v.kind, v.reason) for v in verdicts] == [
        (TPUT, Kind.INCONCLUSIVE, "different stack")]
    assert verdicts[0].baseline == (1.0,) and verdicts[0].candidate == (2.0,)


@pytest.mark.parametrize("cv", [0.01, 0.02])
def test_seeded_false_alarms_and_catches_at_the_measured_noise(cv: float) -> None:
    """A/A never alarms and a 10% slowdown is caught with 3 starts per side (the rule's
    own arithmetic; benchmarks/ab_sim.py measures it over many more trials)."""
    rng = random.Random(7)

    def side(factor: float) -> list[list[float]]:
        return [[10.0 * factor * math.exp(rng.gauss(0, cv)) for _ in range(3)]
                for _ in range(3)]

    alarms = sum(judge_starts(TPUT, side(1.0), side(1.0)).kind is Kind.REGRESSION
                 for _ in range(300))
    caught = sum(judge_starts(TPUT, side(1.0), side(0.9)).kind is Kind.REGRESSION
                 for _ in range(300))
    assert alarms == 0
    assert caught >= 285


def test_throughput_of_runs_that_kept_the_offered_rate_is_reported_not_gated() -> None:
    paced = [{TPUT: 7.9, TTFT: 20.0, "arrival_bound": 1.0}] * 3
    slower = [{TPUT: 7.0, TTFT: 20.0, "arrival_bound": 1.0}] * 3
    fell_behind = [{TPUT: 7.0, TTFT: 20.0, "arrival_bound": 0.0}] * 3
    kept = {v.metric: v for v in judge_all(paced, slower, noise={TPUT: 1.0})}
    assert not kept[TPUT].gated and kept[TPUT].reason.startswith("arrival-bound")
    assert kept[TTFT].gated
    behind = {v.metric: v for v in judge_all(paced, fell_behind, noise={TPUT: 1.0})}
    assert behind[TPUT].gated and behind[TPUT].fails
