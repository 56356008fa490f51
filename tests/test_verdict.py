"""Verdicts on hand-built repetitions, and a small seeded check of the error rates."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pytest_mi300x.judge.verdict import (
    DEFAULT_FLOOR_PCT,
    GATED_METRICS,
    MAD_TO_SD,
    MAX_THRESHOLD_PCT,
    WARN_METRICS,
    Kind,
    Verdict,
    inconclusive_all,
    judge,
    judge_all,
    judge_band,
)
from pytest_mi300x.results.metrics import METRIC_DIRECTIONS
from pytest_mi300x.results.stack import stack_diff

STEADY = [100.0, 101.0, 99.0, 100.5, 99.5]


def test_metric_sets_split_every_directed_metric() -> None:
    assert {"request_throughput", "median_ttft_ms", "median_e2el_ms"} <= GATED_METRICS
    assert {"p99_ttft_ms", "mean_tpot_ms"} <= WARN_METRICS
    assert not GATED_METRICS & WARN_METRICS
    assert set(METRIC_DIRECTIONS) == GATED_METRICS | WARN_METRICS


def test_throughput_drop_is_a_failing_regression() -> None:
    verdict = judge("request_throughput", STEADY, [85.0, 86.0, 84.0])

    assert verdict.kind is Kind.REGRESSION
    assert verdict.gated and verdict.fails
    assert verdict.direction == "higher"
    assert verdict.baseline == tuple(STEADY)
    assert verdict.candidate == (85.0, 86.0, 84.0)
    assert verdict.baseline_median == 100.0
    assert verdict.candidate_median == 85.0
    assert verdict.change_pct == pytest.approx(-15.0)
    # Median of the 15 pairwise log ratios: log(85/100) here.
    assert verdict.shift_pct == pytest.approx(-15.0)
    # Deviations from each side's median, median runs left out: the middle two
    # of (0.5, 0.5, 1, 1, ~1.2, ~1.2)% are log(1.01) and -log(0.99).
    mad = (math.log(1.01) - math.log(0.99)) / 2
    assert verdict.noise_pct == pytest.approx(math.expm1(MAD_TO_SD * mad) * 100)
    assert verdict.threshold_pct == DEFAULT_FLOOR_PCT
    assert "15 of 15 run pairs worse" in verdict.reason


def test_latency_rise_is_a_regression_that_fails_only_when_gated() -> None:
    gated = judge("median_ttft_ms", STEADY, [112.0, 111.0, 113.0])
    warned = judge("mean_ttft_ms", STEADY, [112.0, 111.0, 113.0])

    assert gated.kind is warned.kind is Kind.REGRESSION
    assert gated.change_pct == pytest.approx(12.0)
    assert gated.fails
    assert not warned.gated and not warned.fails


def test_improvement_in_each_direction() -> None:
    faster = judge("median_tpot_ms", STEADY, [80.0, 81.0, 79.0])
    more = judge("output_throughput", STEADY, [120.0, 121.0, 119.0])

    assert faster.kind is more.kind is Kind.IMPROVEMENT
    assert faster.change_pct == pytest.approx(-20.0)
    assert more.change_pct == pytest.approx(20.0)
    assert not faster.fails and not more.fails


def test_small_change_within_noise_is_no_change() -> None:
    verdict = judge("median_ttft_ms", STEADY, [102.0, 98.5, 103.0])

    assert verdict.kind is Kind.NO_CHANGE
    assert verdict.change_pct == pytest.approx(2.0)
    assert abs(verdict.shift_pct) < verdict.threshold_pct == DEFAULT_FLOOR_PCT
    assert not verdict.fails


def test_noise_widens_the_threshold() -> None:
    # 8% worse, but with ~7% run-to-run noise the threshold follows the noise.
    verdict = judge("median_ttft_ms", [100, 107, 93, 106, 94], [100, 115, 101])

    assert verdict.threshold_pct == pytest.approx(verdict.noise_pct)
    assert verdict.threshold_pct > DEFAULT_FLOOR_PCT
    assert verdict.kind is Kind.NO_CHANGE


def test_huge_spread_is_inconclusive() -> None:
    verdict = judge("median_ttft_ms", [100, 150, 70, 130, 60], [90, 160, 50])

    assert verdict.kind is Kind.INCONCLUSIVE
    assert verdict.threshold_pct > MAX_THRESHOLD_PCT
    assert "too noisy" in verdict.reason
    assert not verdict.fails


def test_a_floor_wider_than_the_noise_still_decides() -> None:
    # ~37% run-to-run noise: too noisy at the default floor, but a host whose floor is
    # 60% has accepted that much, so the verdict is decided against the floor.
    base, cand = [211.0, 124.8, 136.1, 184.2, 166.2], [206.4, 218.3, 127.1]
    assert judge("median_e2el_ms", base, cand).kind is Kind.INCONCLUSIVE
    wide = judge("median_e2el_ms", base, cand, floor_pct=60.0)
    assert wide.kind is Kind.NO_CHANGE and wide.threshold_pct == 60.0
    slower = judge("median_e2el_ms", base, [v * 2.2 for v in cand], floor_pct=60.0)
    assert slower.kind is Kind.REGRESSION


def test_shift_without_ordered_runs_is_inconclusive() -> None:
    # Median shift +8%, but one candidate run sits below every baseline run.
    verdict = judge("median_ttft_ms", STEADY, [108.0, 94.0, 109.0])

    assert verdict.kind is Kind.INCONCLUSIVE
    assert verdict.change_pct == pytest.approx(8.0)
    assert "10 of 15 run pairs" in verdict.reason
    assert "add repetitions" in verdict.reason


@pytest.mark.parametrize(
    ("baseline", "candidate", "words"),
    [
        (STEADY, [120.0], "got 5 baseline and 1 candidate"),
        ([100.0], [120.0, 121.0, 119.0], "got 1 baseline and 3 candidate"),
        ([], [], "got 0 baseline and 0 candidate"),
        ([0.0, 0.0, 0.0, 0.0, 0.0], [10.0, 11.0, 9.0], "baseline has zero or negative"),
        ([-1.0, 2.0, 3.0], [1.0, 2.0, 3.0], "baseline has zero or negative"),
        ([math.nan, 100.0, 101.0], [1.0, 2.0, 3.0], "baseline has non-finite values (nan)"),
        (STEADY, [100.0, math.inf, 99.0], "candidate has non-finite values (inf)"),
        (STEADY, [0.0, 0.0, 0.0], "candidate has zero or negative"),
    ],
)
def test_invalid_inputs_are_inconclusive(
    baseline: list[float], candidate: list[float], words: str
) -> None:
    verdict = judge("request_throughput", baseline, candidate)

    assert verdict.kind is Kind.INCONCLUSIVE
    assert words in verdict.reason
    assert not verdict.fails
    assert verdict.message()  # renders without crashing


def test_zero_baseline_has_no_change_percent() -> None:
    verdict = judge("request_throughput", [0.0, 0.0, 0.0], [10.0, 11.0, 9.0])

    assert math.isnan(verdict.change_pct)
    assert verdict.baseline_median == 0.0
    assert verdict.candidate_median == 10.0


def test_message_shows_every_number() -> None:
    verdict = judge("median_ttft_ms", [100.0, 101.5, 99.25, 100.75, 99.5], [112.5, 113.25, 111.75])
    text = verdict.message()

    assert verdict.kind is Kind.REGRESSION
    assert text.startswith("median_ttft_ms: REGRESSION (gated, lower is better)")
    assert "baseline median 100 over 5 runs: 100, 101.5, 99.25, 100.75, 99.5" in text
    assert "candidate median 112.5 over 3 runs: 112.5, 113.25, 111.75" in text
    assert "change +12.5% (medians)" in text
    assert "threshold 5.6% = max(floor 5.6%" in text
    assert f"noise {verdict.noise_pct:.1f}%" in text
    assert verdict.reason in text
    assert len(text.splitlines()) == 6


def test_direction_override_and_unknown_metric() -> None:
    verdict = judge("my_tokens_per_joule", STEADY, [80.0, 81.0, 79.0], direction="higher")
    assert verdict.kind is Kind.REGRESSION
    assert not verdict.gated
    with pytest.raises(ValueError, match="direction"):
        judge("completed", STEADY, STEADY)
    with pytest.raises(ValueError, match="direction"):
        judge("median_ttft_ms", STEADY, STEADY, direction="up")


def _reps(**columns: list[float]) -> list[dict[str, float]]:
    count = len(next(iter(columns.values())))
    return [{name: values[i] for name, values in columns.items()} for i in range(count)]


def test_judge_all_uses_per_metric_floors_and_skips_undirected() -> None:
    baseline = _reps(
        request_throughput=STEADY,
        median_ttft_ms=STEADY,
        completed=[100.0] * 5,
        p99_ttft_ms=STEADY,
    )
    candidate = _reps(
        request_throughput=[88.0, 89.0, 87.0],
        median_ttft_ms=[112.0, 111.0, 113.0],
        completed=[90.0, 90.0, 90.0],
    )

    verdicts = judge_all(baseline, candidate, floors={"median_ttft_ms": 20.0})
    by_metric = {v.metric: v for v in verdicts}

    # completed has no direction; p99 is missing from the candidate.
    assert list(by_metric) == ["request_throughput", "median_ttft_ms"]
    assert by_metric["request_throughput"].kind is Kind.REGRESSION
    assert by_metric["request_throughput"].threshold_pct == DEFAULT_FLOOR_PCT
    assert by_metric["median_ttft_ms"].kind is Kind.NO_CHANGE
    assert by_metric["median_ttft_ms"].threshold_pct == 20.0
    assert [v.metric for v in verdicts if v.fails] == ["request_throughput"]


def test_judge_all_uses_only_reps_holding_the_metric() -> None:
    baseline = [{"median_tpot_ms": v} for v in STEADY]
    candidate = [{"median_tpot_ms": 120.0}, {}, {"median_tpot_ms": 121.0}]

    (verdict,) = judge_all(baseline, candidate)

    assert verdict.candidate == (120.0, 121.0)
    assert verdict.kind is Kind.REGRESSION  # 2 runs, all 10 pairs worse


def test_fingerprint_diff_names_what_differs() -> None:
    baseline = {
        "host": {"gpu": "MI300X", "driver": "6.1", "cpu": {"model": "EPYC"}},
        "torch": "2.13.0+cpu",
        "vllm": "0.6.3",
        "flags": ["--enforce-eager"],
    }
    candidate = {
        "host": {"gpu": "MI300X", "driver": "6.2", "cpu": {"model": "EPYC"}},
        "torch": "2.14.0",
        "flags": ["--enforce-eager"],
        "seed": 0,
    }

    assert stack_diff(baseline, candidate) == [
        "host.driver: 6.1 -> 6.2",
        "seed: <missing> -> 0",
        "torch: 2.13.0+cpu -> 2.14.0",
        "vllm: 0.6.3 -> <missing>",
    ]
    assert stack_diff(baseline, baseline) == []


def test_a_section_one_side_never_recorded_is_one_line() -> None:
    old = {"torch": "2.13.0+cpu"}
    new = {"torch": "2.13.0+cpu", "workload": {"dataset": {"name": "random", "seed": 0}}}

    assert stack_diff(old, new) == ["workload: <missing> -> recorded"]


def test_inconclusive_all_keeps_the_reason_and_runs() -> None:
    baseline = _reps(request_throughput=STEADY, completed=[100.0] * 5)
    candidate = _reps(request_throughput=[50.0, 51.0, 49.0], completed=[100.0] * 3)

    verdicts = inconclusive_all(
        ["request_throughput", "median_ttft_ms", "completed"],
        "fingerprint differs: torch: 2.13.0+cpu -> 2.14.0",
        baseline_reps=baseline,
        candidate_reps=candidate,
    )

    assert [v.metric for v in verdicts] == ["request_throughput", "median_ttft_ms"]
    assert all(isinstance(v, Verdict) and v.kind is Kind.INCONCLUSIVE for v in verdicts)
    assert not any(v.fails for v in verdicts)
    assert verdicts[0].reason == "fingerprint differs: torch: 2.13.0+cpu -> 2.14.0"
    assert verdicts[0].change_pct == pytest.approx(-50.0)
    assert verdicts[1].baseline == () and math.isnan(verdicts[1].baseline_median)
    assert "fingerprint differs" in verdicts[1].message()


@pytest.mark.parametrize("metric", ["median_ttft_ms", "request_throughput"])
def test_seeded_error_rates_at_cv_3_percent(metric: str) -> None:
    """Looser than the benchmark's targets (1%, 95%) so it never flakes; seeded."""
    rng = np.random.default_rng(20240611)
    trials, sigma = 4000, math.sqrt(math.log1p(0.03**2))
    worse = 1.10 if METRIC_DIRECTIONS[metric] == "lower" else 0.90

    def regression_rate(scale: float) -> float:
        base = 100 * np.exp(rng.normal(0, sigma, (trials, 5)))
        cand = 100 * scale * np.exp(rng.normal(0, sigma, (trials, 3)))
        kinds = [
            judge(metric, b, c).kind for b, c in zip(base.tolist(), cand.tolist(), strict=True)
        ]
        return kinds.count(Kind.REGRESSION) / trials

    assert regression_rate(1.0) <= 0.02
    assert regression_rate(worse) >= 0.90


def test_a_floor_wider_than_the_noise_cap_still_decides() -> None:
    # A host that gates only big changes (floor 60%) must still catch a doubling.
    base, cand = [20.0, 20.5, 19.8, 20.2, 20.1], [40.0, 41.0, 39.5]
    assert judge("median_ttft_ms", base, cand, floor_pct=60.0).kind is Kind.REGRESSION
    assert judge("median_ttft_ms", base, [25.0, 25.5, 24.8], floor_pct=60.0).kind \
        is Kind.NO_CHANGE


# Three server starts of one build: a fast, a middling and a slow one (TTFT in ms),
# each tight within itself, as the cpu host's starts are.
FAST, MID, SLOW = (10.0, 10.3, 9.8, 10.1, 10.2), (13.0, 13.2, 12.9, 13.1, 12.8), \
    (16.0, 16.4, 15.8, 16.2, 16.1)


def test_band_calls_a_candidate_inside_the_starts_no_change() -> None:
    # Against the fast start alone this slow-start candidate is a +60% "regression".
    assert judge("median_ttft_ms", FAST, SLOW[:3], floor_pct=10.0).kind is Kind.REGRESSION
    v = judge_band("median_ttft_ms", [FAST, MID, SLOW], SLOW[:3], floor_pct=10.0)
    assert v.kind is Kind.NO_CHANGE and v.server_medians == (10.1, 13.0, 16.1)
    assert "3 server starts" in v.reason and v.baseline == (*FAST, *MID, *SLOW)
    fast = judge_band("median_ttft_ms", [FAST, MID, SLOW], FAST[:3], floor_pct=10.0)
    assert fast.kind is Kind.NO_CHANGE


def test_band_regression_must_pass_the_worst_start() -> None:
    worse = [v * 1.3 for v in SLOW[:3]]
    v = judge_band("median_ttft_ms", [FAST, SLOW, MID], worse, floor_pct=10.0)
    assert v.kind is Kind.REGRESSION and v.fails
    assert v.reason.startswith("against the worst of 3 server starts")
    assert math.isclose(v.shift_pct, 30.0, abs_tol=2.0)  # against SLOW, not the +60% vs all
    text = v.message()
    assert "server starts' medians: 10.1, 16.1, 13" in text
    just = [v * 1.05 for v in SLOW[:3]]
    assert judge_band("median_ttft_ms", [FAST, MID, SLOW], just,
                      floor_pct=10.0).kind is Kind.NO_CHANGE


def test_band_improvement_must_pass_the_best_start() -> None:
    tput = [[1000 / x for x in s] for s in (FAST, MID, SLOW)]
    better = [v * 1.3 for v in tput[0][:3]]
    v = judge_band("request_throughput", tput, better, floor_pct=10.0)
    assert v.kind is Kind.IMPROVEMENT and "best of 3" in v.reason
    slower = [v * 0.7 for v in tput[2][:3]]
    assert judge_band("request_throughput", tput, slower,
                      floor_pct=10.0).kind is Kind.REGRESSION


def test_band_of_one_start_is_the_plain_rule() -> None:
    for cand in (SLOW[:3], [v * 1.3 for v in FAST[:3]], FAST[:3]):
        band = judge_band("median_ttft_ms", [FAST], cand, floor_pct=10.0)
        plain = judge("median_ttft_ms", FAST, cand, floor_pct=10.0)
        assert (band.kind, band.reason, band.server_medians) == (plain.kind, plain.reason, ())


def test_judge_all_groups_the_baseline_by_server_start() -> None:
    base = [{"median_ttft_ms": v} for v in (*FAST, *SLOW)]
    cand = [{"median_ttft_ms": v} for v in SLOW[:3]]
    kinds = [v.kind for v in judge_all(base, cand, floors={"median_ttft_ms": 10.0},
                                       baseline_servers=[0] * 5 + [1] * 5)]
    assert kinds == [Kind.NO_CHANGE]
    # Pooled as one start, the two starts' gap reads as a shift it cannot order.
    assert [v.kind for v in judge_all(base, cand, floors={"median_ttft_ms": 10.0})] == \
        [Kind.INCONCLUSIVE]
    with pytest.raises(ValueError, match="names 3 repetitions"):
        judge_all(base, cand, baseline_servers=[0, 0, 1])


def test_noisy_runs_all_apart_by_more_than_the_floor_still_decide() -> None:
    # Like the nobind burst of a fresh-clone run: wild runs on both sides, yet every
    # candidate run is more than 30% below every baseline run.
    base, cand = [29.0, 45.0, 60.0, 33.0, 52.0], [21.7, 4.5, 11.8]
    v = judge("request_throughput", base, cand, floor_pct=30.0)
    assert v.kind is Kind.REGRESSION and v.fails
    assert v.noise_pct > 30.0 and v.threshold_pct == 30.0
    assert "every run pair worse by more than the 30% floor" in v.reason
    # One candidate run inside the floor's reach: noise decides, as before.
    assert judge("request_throughput", base, [21.7, 4.5, 26.0],
                 floor_pct=30.0).kind is Kind.INCONCLUSIVE
    assert judge("request_throughput", cand, base, floor_pct=30.0).kind is Kind.IMPROVEMENT
