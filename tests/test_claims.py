"""The seed's claims as checks, and what a claim test says.

Each suite claim is judged on figures made here for the case at hand, in the claim's own
metric and direction: the better side past the claim's margin (holds), the sides swapped
(reversed), the same figures on both sides or an effect below the margin (not shown), and
an effect hidden by the runs' spread (not shown). A claim test then passes saying this
run's figures, is an expected failure saying them when they do not show the claim, and
fails only on a reversal."""

from __future__ import annotations

import pytest

from pytest_mi300x.judge.claims import (
    Claim,
    ClaimNotShown,
    ClaimReversed,
    check_claim,
    check_near,
    second_run_hit_rate,
)
from pytest_mi300x.reporting.outcomes import kind_of
from pytest_mi300x.results.metrics import METRIC_DIRECTIONS
from suites.test_guide_cases import FEWER_SEQS
from suites.test_headline import TUNED_OVER_DEFAULT, VLLM_OVER_TGI
from suites.test_prefix_caching import SECOND_RUN_TTFT
from tests.test_faults import engine_double

pytest_plugins = ["pytester"]

CLAIMS = [FEWER_SEQS, SECOND_RUN_TTFT, TUNED_OVER_DEFAULT, VLLM_OVER_TGI]


def runs(metric: str, centre: float, spread_pct: float = 1.0) -> list[dict[str, float]]:
    """Three repetitions around ``centre``, ``spread_pct`` apart."""
    return [{metric: centre * (1 + k * spread_pct / 100)} for k in (-1, 0, 1)]


def better_by(claim: Claim, centre: float, pct: float) -> float:
    """The value ``pct`` percent better than ``centre`` in the claim's metric's direction."""
    higher = METRIC_DIRECTIONS[claim.metric] == "higher"
    return centre * (1 + pct / 100) if higher else centre / (1 + pct / 100)


@pytest.mark.parametrize("claim", CLAIMS, ids=lambda c: c.name)
def test_a_claim_holds_past_its_margin_is_reversed_swapped_and_not_shown_below_it(
        claim: Claim) -> None:
    worse = runs(claim.metric, 40.0)
    better = runs(claim.metric, better_by(claim, 40.0, 2 * claim.margin_pct + 10))
    held = check_claim(claim, better, worse)
    assert held.outcome == "holds" and held.check() is held
    swapped = check_claim(claim, worse, better)
    assert swapped.outcome == "reversed"
    with pytest.raises(ClaimReversed, match=f"seed claim '{claim.name}' is reversed"):
        swapped.check()
    for effect in (0.0, claim.margin_pct / 2):
        small = check_claim(claim, runs(claim.metric, better_by(claim, 40.0, effect)), worse)
        assert small.outcome == "not shown", small.message()
        with pytest.raises(ClaimNotShown, match="is not shown") as caught:
            small.check()
        assert not isinstance(caught.value, ClaimReversed)


def test_noise_that_hides_the_effect_is_not_shown_never_reversed() -> None:
    # The mean effect is the claim's, the runs within a side spread 60%: undecided.
    noisy = check_claim(FEWER_SEQS, runs("request_throughput", 80.0, 60.0),
                        runs("request_throughput", 40.0, 60.0))
    assert noisy.outcome == "not shown" and noisy.verdict.kind.value == "inconclusive"


def test_the_first_line_says_this_runs_figures_of_both_sides() -> None:
    check = check_claim(FEWER_SEQS, runs("request_throughput", 37.18, 0.5),
                        runs("request_throughput", 32.13, 0.5))
    first = check.message().splitlines()[0]
    assert first.startswith(f"seed claim '{FEWER_SEQS.name}' is not shown on this host: "
                            "request_throughput max-num-seqs-512 37.18 vs max-num-seqs-4 "
                            "32.13 (+15.7%; needed: max-num-seqs-512 better by more than "
                            "20%, 99% interval")
    assert f"the seed: {FEWER_SEQS.statement}" in check.message()


def test_a_claim_failure_is_its_own_kind_never_a_regression() -> None:
    with pytest.raises(ClaimReversed) as caught:
        check_claim(FEWER_SEQS, runs("request_throughput", 10.0),
                    runs("request_throughput", 40.0)).check()
    assert kind_of(caught.value).value == "claim"


def test_the_second_run_hit_rate_is_what_the_blocks_imply() -> None:
    # Every whole block of a prompt but the one holding its last token is cached.
    assert second_run_hit_rate([160] * 80, 128) == pytest.approx(128 / 160)
    assert second_run_hit_rate([1664], 128) == pytest.approx(1536 / 1664)
    assert second_run_hit_rate([129, 128], 128) == pytest.approx(128 / 257)
    near = check_near("2nd-run hit rate", [0.80, 0.79, 0.81], 0.8, 0.05)
    assert near.holds and near.check() is near
    # A fresh run's rate (what a 2nd run without its cache measures) fails, as does a
    # repetition without the figure.
    assert not check_near("2nd-run hit rate", [0.80, 0.4, 0.81], 0.8, 0.05).holds
    with pytest.raises(ClaimNotShown, match="measured 0.400 per repetition"):
        check_near("2nd-run hit rate", [0.4], 0.8, 0.05).check()
    assert not check_near("2nd-run hit rate", [0.8, None], 0.8, 0.05).holds


def test_claim_tests_run_after_the_cases_and_count_as_perf_tests(
        pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_order="""
        import pytest
        from pytest_mi300x import FlagSet, flag_sets

        @pytest.mark.seed_claim
        def test_a_claim(claim_sides):
            pass

        @flag_sets(FlagSet("b"), FlagSet("a"))
        def test_case(flag_set):
            pass
    """)
    result = pytester.runpytest("--collect-only", "-q")
    ids = [line for line in result.stdout.lines if "::" in line]
    assert ids == ["test_order.py::test_case[a]", "test_order.py::test_case[b]",
                   "test_order.py::test_a_claim"]


SIDES = """
import pytest
from pathlib import Path
from pytest_mi300x.judge.claims import Claim
from pytest_mi300x.load.measurer import PerfResult, Repetition
from pytest_mi300x.load.records import LoadRun

CLAIM = Claim("c", "the seed's words", "request_throughput", "a", "b", 10.0)

def side(*values, metric="request_throughput"):
    run = LoadRun(records=[], duration=1.0, started_at=0.0, arrivals={})
    return PerfResult([Repetition(i, {metric: v}, [], run) for i, v in enumerate(values)],
                      Path("x.json"))
"""


def test_a_claim_test_passes_xfails_or_fails_saying_this_runs_figures(
        pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_sides=SIDES + """
@pytest.mark.seed_claim
def test_holds(claim_sides):
    claim_sides.check(CLAIM, better=side(50.0, 50.5, 49.5), worse=side(10.0, 10.1, 9.9))

@pytest.mark.seed_claim
def test_not_shown(claim_sides):
    claim_sides.check(CLAIM, better=side(35.0, 34.9, 35.1), worse=side(32.13, 32.0, 32.2))

@pytest.mark.seed_claim
def test_reversed(claim_sides):
    claim_sides.check(CLAIM, better=side(10.0, 10.1, 9.9), worse=side(50.0, 50.5, 49.5))

@pytest.mark.seed_claim
def test_broken_run_still_fails(claim_sides):
    raise RuntimeError("the server died")

@pytest.mark.seed_claim
def test_never_measured_there(claim_sides):
    claim_sides.only_on(("mi300x",), "measured on MI300X only")
""")
    result = pytester.runpytest("-p", "no:cacheprovider", "-rxs")
    result.assert_outcomes(passed=1, xfailed=1, failed=2, skipped=1)
    result.stdout.fnmatch_lines([  # the session table, by test name
        "*test_broken_run_still_fails*FAILED (harness): RuntimeError: the server died*",
        "*test_holds*PASSED: seed claim 'c' holds on this host: request_throughput a 50 vs "
        "b 10 (+400.0%; needed: a better by more than 10%*",
        "*test_never_measured_there*SKIPPED: claim not asserted on host 'cpu' (cpu): "
        "measured on MI300X only*",
        "*test_not_shown*XFAILED: seed claim 'c' is not shown on this host: "
        "request_throughput a 35 vs b 32.13 (+8.9%; needed: a better by more than 10%*",
        "*test_reversed*FAILED (claim): ClaimReversed: seed claim 'c' is reversed on this "
        "host: request_throughput a 10 vs b 50 (-80.0%*",
    ])


def test_a_claim_on_single_runs_is_not_checked_and_says_why(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_single=SIDES + """
@pytest.mark.seed_claim
def test_one_run_a_side(claim_sides):
    claim_sides.check(CLAIM, better=side(50.0), worse=side(10.0))
""")
    result = pytester.runpytest("-p", "no:cacheprovider", "-rs")
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(["*claim 'c' not checked: a side has 1 repetition(s)*"
                                 "--repeats 2 or more*"])


def test_the_prefix_claim_without_a_block_size_still_judges_its_ttft(
        pytester: pytest.Pytester) -> None:
    # The engine reports no cache block size: the hit rate is not checked, the TTFT claim
    # is (here reversed: the 2nd run answered later, so the test fails).
    pytester.makepyfile(test_prefix=SIDES + """
from suites.test_prefix_caching import judge_second_run

@pytest.mark.seed_claim
def test_no_block_size(claim_sides):
    fresh = side(20.0, 20.2, 19.8, metric="median_ttft_ms")
    second = side(60.0, 60.6, 59.4, metric="median_ttft_ms")
    judge_second_run(claim_sides, fresh, second)

@pytest.mark.seed_claim
def test_no_block_size_holds(claim_sides):
    fresh = side(60.0, 60.6, 59.4, metric="median_ttft_ms")
    second = side(20.0, 20.2, 19.8, metric="median_ttft_ms")
    judge_second_run(claim_sides, fresh, second)
""")
    result = pytester.runpytest("-p", "no:cacheprovider", "-rA")
    result.assert_outcomes(failed=1, passed=1)
    result.stdout.fnmatch_lines([
        "*test_no_block_size *FAILED (claim): ClaimReversed: seed claim 'case3-second-run-"
        "ttft' is reversed*",
        "*test_no_block_size_holds*PASSED: seed claim 'case3-second-run-ttft' holds*; hit "
        "rate not checked: the engine reports no cache block size*"])


def test_an_engine_refusing_a_sides_flags_skips_the_claim_with_its_reason(
        pytester: pytest.Pytester) -> None:
    engine_double(pytester, "refuse")  # the lifecycle TEST DOUBLE, refusing fp8 KV cache
    pytester.makepyfile(test_refused=SIDES + """
from pytest_mi300x import FlagSet, RandomDataset, Workload

@pytest.mark.seed_claim
def test_fp8_side(claim_sides):
    claim_sides.measure("test_case6[kv-cache-fp8]", FlagSet.of("kv-cache-fp8",
                        kv_cache_dtype="fp8"), Workload(RandomDataset(64, 8, 40)))
""")
    result = pytester.runpytest("--gpu-host", "cpu2", "-rs", "-p", "no:cacheprovider")
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(["*test_case6?kv-cache-fp8?: runs where the CPU has AVX-512 "
                                 "or AMX*vLLM said*"])
