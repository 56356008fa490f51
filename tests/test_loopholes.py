"""Issue 26's verdict loopholes, each a scenario of simulated server starts driven through
the project's own judging code (benchmarks/loophole_sim.py, which measures the same
scenarios over many more trials; its figures are in docs/measurements.md). Seeded, no
engine: each runs in a few seconds."""

from __future__ import annotations

import math
import random
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from benchmarks import loophole_sim as sim
from pytest_mi300x.ab.builds import parse_build
from pytest_mi300x.ab.headtohead import HeadToHead
from pytest_mi300x.ab.starts import Record
from pytest_mi300x.config import Settings
from pytest_mi300x.hosts.fingerprint import host_fingerprint
from pytest_mi300x.judge.baselines import Baseline
from pytest_mi300x.judge.comparison import compare
from pytest_mi300x.judge.gate import session_gate
from pytest_mi300x.judge.noise import SumSq
from pytest_mi300x.judge.steadiness import assess
from pytest_mi300x.judge.verdict import Kind, judge_all

ROOT = Path(__file__).resolve().parents[1]
pytest_plugins = ["pytester"]


def rng(seed: int = 1) -> random.Random:
    return random.Random(seed)


# -- 1: machine noise is the reference build's; a noisier build is a finding -------------

def test_a_noisy_slower_build_is_flagged_even_when_the_probe_ran_it() -> None:
    """A test 15% slower whose build spreads 8% between starts, the steadiness check run
    with that build (as the nightly did): it skipped 92% of nights as "cannot gate". The
    gate does not widen a build's verdicts by a check measured with that build."""
    found = sim.probe(40, rng())
    assert found["skip"] == 0.0
    assert found["flagged"] >= 0.85


def test_erratic_runs_of_the_candidate_never_lower_the_power_to_see_it() -> None:
    """A build 10% slower whose runs are erratic (one in three 30% slow): its own runs once
    floored the noise it was judged with, and 20% of nights let it through."""
    assert sim.erratic(40, rng())["flagged"] >= 0.95


def test_a_test_that_gates_on_its_reference_and_not_tonight_is_undecided(
        tmp_path: Path) -> None:
    """The reference build measured the machine 4x noisier than the record today: the test
    could gate at its reference's noise and cannot tonight, which is undecided (the test
    fails with kind "undecided"), not a green "cannot gate" skip."""
    gen = rng(3)
    g = sim.Gate(tmp_path, gen, between=0.01, within=0.005, record_df=40)
    today = {m: SumSq(4 * math.log1p(0.04) ** 2, 4) for m in
             ("request_throughput", "median_ttft_ms", "median_tpot_ms")}
    found = assess({sim.TEST: today}, {sim.TEST: g.record()}, host_fingerprint())
    found.build = sim.REFERENCE
    found.write(tmp_path / "steadiness.json")
    gate = g.session(steadiness=tmp_path / "steadiness.json")
    assert gate.inflation > 3
    outcome = g.judge(gate, sim.start(gen, 1.0, 0.01, 0.005, 3))
    assert outcome.cannot_gate == ""
    assert outcome.to_dict()["decision"] == "undecided"
    assert "gates on its reference's noise" in outcome.to_dict()["undecided"]
    from pytest_mi300x.judge.gate import PerfUndecided

    with pytest.raises(PerfUndecided, match="undecided"):
        outcome.check()


def test_a_build_twice_as_noisy_is_a_regression_of_its_steadiness() -> None:
    """As fast as its reference, its runs erratic: `ab` fails it on the steadiness family
    (a one-sided F test against twice the reference's spread), and the gate, on one start,
    calls it undecided."""
    a, b = parse_build(sim.REFERENCE), parse_build(sim.TONIGHT)

    class Erratic(sim.Starts):
        def __call__(self, build, index):  # noqa: ANN001
            start = super().__call__(build, index)
            if build.name == b.name:
                start.tests[sim.TEST].reps = sim.start(self.rng, 1.0, 0.01, 0.01, 3,
                                                       run_stall=(1 / 3, 0.3))
            return start

    outcome = HeadToHead(a, b, Erratic({a.name: 1.0, b.name: 1.0}, rng(), 0.01),
                         Record(None, {}), progress=lambda _: None).run()
    steadiness = next(v for v in outcome.verdicts[sim.TEST] if v.metric == "steadiness")
    assert steadiness.fails and "noisier than the reference" in steadiness.reason
    base = [r for i in range(5) for r in sim.start(rng(2), 1.0, 0.015, 0.01, 5)]
    one = sim.start(rng(5), 1.0, 0.015, 0.01, 3, run_stall=(1 / 3, 0.3))
    one[0]["request_throughput"] *= 0.7  # at least one slow run in three
    gate = {v.metric: v for v in judge_all(base, one, baseline_starts=[i // 5 for i in
                                                                       range(25)],
                                           alpha=0.002, pool_record=True)}
    assert gate["steadiness"].suspect and not gate["steadiness"].fails


# -- 2: undecided is never a false alarm ----------------------------------------------------

def test_an_undecided_confirmation_is_never_written_up_as_a_false_alarm() -> None:
    """A real 15% regression on a test spreading 8%: culprit's confirmation (3..6 starts a
    side) called half of them false alarms while every verdict was still undecided."""
    found = sim.culprit(30, rng())
    assert found["false alarm"] == 0.0
    assert found["undecided"] > 0 and found["found"] > 0


# -- 3: counts and grids judged as what they are -------------------------------------------

def accuracy_reps(right: int, runs: int = 3) -> list[dict[str, float]]:
    from pytest_mi300x.results import metrics

    # Per-question outcomes, where the code records them (as the accuracy check does).
    items = getattr(metrics, "item_figures", lambda _: {})([i < right for i in range(40)])
    return [{"accuracy": (right + 1) / 41, "accuracy_right": float(right),
             "accuracy_questions": 40.0, **items} for _ in range(runs)]


def test_two_answers_in_forty_flipping_is_no_regression_and_forty_is() -> None:
    def accuracy(right: int) -> object:
        (v,) = [v for v in judge_all(accuracy_reps(30) * 2, accuracy_reps(right),
                                     baseline_starts=[0] * 3 + [1] * 3) if v.metric ==
                "accuracy"]
        return v

    two = accuracy(28)
    assert two.kind is not Kind.REGRESSION and not two.fails
    assert "2 lost, 0 gained" in two.reason and not two.can_gate
    assert "40 questions" in two.resolution() and "more starts add no questions" in \
        two.resolution()
    collapse = accuracy(0)
    assert collapse.kind is Kind.REGRESSION and "sign test" in collapse.reason


def test_a_noisy_slower_test_is_never_passed_on_its_accuracy_alone() -> None:
    """8% between starts, 15% slower, the same 30 of 40 answers: accuracy's p = 0 once made
    the test 'gate', and it passed 90% of nights."""
    assert sim.accuracy(30, rng())["pass"] == 0.0


def test_a_capacity_on_a_grid_never_claims_to_resolve_less_than_a_step() -> None:
    """On a 16 req/s grid near 150 req/s (11% a step) an unchanged build failed 4% of the
    time and 84% of tests claimed to resolve 10%."""
    found = sim.grid(60, rng())
    assert found["16 req/s grid, A/A: red"] == 0.0
    assert found["16 req/s grid, A/A: said resolvable"] == 0.0
    assert found["16 req/s grid, 10% lower: said resolvable"] == 0.0


# -- 4: no start-to-start evidence, no gate ------------------------------------------------

def test_a_one_start_baseline_is_refused_for_gating() -> None:
    found = sim.onestart(20, rng())
    assert all(v == 0.0 for k, v in found.items() if k.endswith(("red", "can gate")))


def test_the_refusal_says_why_in_one_line(tmp_path: Path) -> None:
    g = sim.Gate(tmp_path, rng(), starts=1, record_df=20)
    outcome = g.judge(g.session(), sim.start(rng(2), 0.5, 0.01, 0.01, 3))
    assert outcome.to_dict()["decision"] == "cannot gate" and not outcome.failing
    assert outcome.cannot_gate.startswith("baseline of 1 server start: no start-to-start "
                                          "evidence")
    assert "baselines refresh" in outcome.cannot_gate


# -- 5: dated, windowed records; a steadiness check that sees a noisier day --------------

def test_noise_records_are_dated_and_old_evidence_expires() -> None:
    def entry(days: float | None, pct: float) -> dict:
        date = "" if days is None else time.strftime(
            "%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - days * 86400))
        return {"source": "ab", "date": date,
                "metrics": {"request_throughput": [10 * math.log1p(pct / 100) ** 2, 10]}}

    b = Baseline(test="t", host="h", engine="e", model="m", repetitions=[],
                 comparability={}, noise=[entry(0, 1.0), entry(14, 1.0), entry(90, 30.0),
                                          entry(None, 30.0)])
    record = b.noise_record()["request_throughput"]
    assert record.df == pytest.approx(15, abs=0.01)  # today's 10 and half of 10 two weeks old
    assert math.expm1(math.sqrt(record.ss / record.df)) * 100 == pytest.approx(1.0, abs=0.01)


def test_the_steadiness_check_sees_a_day_twice_as_noisy() -> None:
    """A record of 1.5% (df 24), a day of 3%: the check (its default starts, one-sided)
    widens on most such days and rarely on a day like the record; no such night is red."""
    found = sim.noisyday(4, rng())
    assert found["2x day: widened"] >= 0.65
    assert found["day like the record: widened"] <= 0.1
    assert found["2x day: red nights"] == 0.0


# -- 6: heavy tails ------------------------------------------------------------------------

def test_one_slowed_start_in_ten_never_turns_a_night_red() -> None:
    """One start in ten 25% slow: one nightly start cannot tell a slowed start from a slower
    build, so its departure is undecided (confirmed head to head), never red."""
    found = sim.stalls(60, rng())
    assert found["red"] == 0.0 and found["undecided"] > 0


def test_a_slowed_start_in_an_ab_is_set_aside_not_taken_for_the_build() -> None:
    """Both builds the same, one of B's six starts 40% slow for its whole life (a shared
    machine's stall): the drift model alone reads B 7% slower and calls it; the start is set
    aside as slowed and said so, and the rest decide. A real slowdown moves every start of
    its side, so it is never set aside."""
    a, b = [1.0, 1.01, 0.99, 1.0, 1.02, 0.98], [1.0, 0.99, 1.01, 0.6, 1.0, 1.02]
    order = ([0, 3, 4, 7, 8, 11], [1, 2, 5, 6, 9, 10])  # A B B A A B B A A B B A
    c = compare("request_throughput", [[x] for x in a], [[x] for x in b], paired=True,
                order=order)
    assert len(c.starts_c) == 5 and "1 start(s) set aside as slowed (-40%" in c.note
    assert abs(math.expm1(c.diff)) < 0.02
    slower = compare("request_throughput", [[x] for x in a], [[0.85 * x] for x in b],
                     paired=True, order=order)
    assert len(slower.starts_c) == 5 and math.expm1(slower.diff) == pytest.approx(-0.15,
                                                                                  abs=0.02)
    steady = compare("request_throughput", [[x] for x in a], [[0.85 * x] for x in a],
                     paired=True, order=order)
    assert "set aside" not in steady.note and len(steady.starts_c) == 6


def test_one_stalled_start_is_the_machine_two_are_a_noisier_build() -> None:
    """The steadiness family in an A/B of 6+6 starts: one of B's starts 25% slow for its
    whole life (a shared machine slows one in ten, whichever build runs) is not a noisier
    build (an F test on all six called it so, 1.3% of unchanged A/Bs with one start in ten
    slowed); two of six are (an erratic build is so in more than one start)."""
    from pytest_mi300x.judge.spreads import compare_spreads, decide_spread

    a = [[1.0], [1.01], [0.99], [1.0], [1.02], [0.98]]

    def verdict(b: list[list[float]]) -> Kind:
        c = compare_spreads({"request_throughput": (a, b)})
        assert c is not None
        return decide_spread(c, 0.005).kind  # a family's share of a test's 1%

    assert verdict([[1.0], [0.99], [1.01], [0.75], [1.0], [1.02]]) is Kind.NO_CHANGE
    assert verdict([[1.0], [0.75], [1.01], [0.75], [1.0], [1.02]]) is Kind.REGRESSION


def test_a_slowed_start_in_a_past_baseline_is_set_aside() -> None:
    """Carried forward by a refresh, it read as 5.6% spread after 20 clean df (1.5%)."""
    assert sim.carried(5, rng())["spread after 20 clean df (%)"] < 2.2


# -- 9: the floor ----------------------------------------------------------------------------

def test_the_floor_means_what_the_docs_say() -> None:
    """At 1% spread a night's start failed a 4.5% change in 45% of nights, against a 5%
    floor the docs said it "does not count". The floor is a threshold on the estimate
    (docs/verdicts.md says so, with these rates): a night's one start never fails a test
    (it flags it for head to head); `ab` at 2% spread calls a change well within the floor
    (3%) about one time in eight (400 trials: 13%), one just within it (4.5%) about two
    times in three (65%), and twice the floor always."""
    found = sim.floor(200, rng())
    assert all(found[f"{c}% slower: red"] == 0.0 for c in ("3.0", "4.5", "5.0", "10.0"))
    assert found["10.0% slower: flagged"] >= 0.95
    assert found["ab, 3.0% slower: red"] <= 0.25
    assert found["ab, 4.5% slower: red"] <= 0.85
    assert found["ab, 10.0% slower: red"] >= 0.95


# -- 10: a fleet night has one budget ------------------------------------------------------

def test_a_fleet_of_hosts_shares_one_nights_budget(tmp_path: Path) -> None:
    host = SimpleNamespace(name="h", floors={}, burst_floors={}, noise={}, burst_noise={})
    gate, _ = session_gate(Settings(baselines_dir=tmp_path, fleet_hosts=4), host)
    assert gate.sharing(26, 0.05).alpha == pytest.approx(0.05 / 4 / 26)
    assert "over 4 fleet hosts" in gate.sharing(26, 0.05).alpha_detail


def test_the_fleet_option_reaches_the_session(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nfleet_hosts = 3\n")
    pytester.makepyfile(test_x="""
from pytest_mi300x.plugin.stash import SESSION_KEY

def test_budget(request):
    assert request.config.stash[SESSION_KEY].settings.fleet_hosts == 3
""")
    pytester.runpytest_subprocess("-p", "no:cacheprovider").assert_outcomes(passed=1)
    bad = pytester.runpytest_subprocess("--fleet-hosts", "0", "-p", "no:cacheprovider")
    bad.stderr.fnmatch_lines(["*--fleet-hosts '0' is not a whole number >= 1*"])


# -- 11: the within-start floor is the median's -------------------------------------------

def test_the_within_start_floor_uses_the_variance_of_a_median() -> None:
    """Two starts whose medians agree, each of three runs 10% apart: a start's value (their
    median) spreads 1.16 times their mean's, and the noise is never below that."""
    runs = [[9.0, 10.0, 11.0]] * 2
    c = compare("request_throughput", runs, runs)
    logs = [math.log(v) for v in runs[0]]
    mean = sum(logs) / 3
    run_var = sum((x - mean) ** 2 for x in logs) / 2
    assert c.noise is not None
    assert c.noise.sd == pytest.approx(math.sqrt(run_var * 1.345 / 3), rel=1e-3)


# -- p99 TTFT and ITL ------------------------------------------------------------------------

def test_p99_ttft_and_itl_gate_where_their_noise_allows() -> None:
    found = sim.tails(30, rng())
    assert found["1% spread, A/A: p99 TTFT gated"] >= 0.5
    assert found["1% spread, A/A: flagged"] == 0.0
    assert found["1% spread, p99 TTFT +20%: flagged where gated"] >= 0.95
    assert found["3% spread, A/A: p99 TTFT gated"] == 0.0
    base = [{"p99_ttft_ms": 200.0 * f, "p99_itl_ms": 20.0 * f, "request_throughput": 10.0}
            for f in (1.0, 1.01, 0.99, 1.005, 0.995)]
    verdicts = {v.metric: v for v in judge_all(base, base[:1], baseline_starts=range(5),
                                               records={"p99_ttft_ms": SumSq(0.05, 20)},
                                               pool_record=True)}
    noisy = verdicts["p99_ttft_ms"]
    assert not noisy.gated and noisy.reason.startswith("not gated: its noise resolves")


def test_scipy_is_a_declared_dependency() -> None:
    """judge/ imports scipy; it once arrived only through ruptures."""
    text = (ROOT / "pyproject.toml").read_text()
    deps = text.split("dependencies = [", 1)[1].split("]", 1)[0]
    assert '"scipy' in deps
