"""Arrival modes, chat, client health, multi-process load and the rate sweep, timed
against the stub server (TEST DOUBLE) with known delays. As in test_loadgen.py: times are
bounded below by the stub's delays and above only by other measured times, never by the
client's own speed (the machine may be twice as slow and shared)."""

from __future__ import annotations

import math
import statistics
import threading
from collections.abc import Iterator

import numpy as np
import pytest

from pytest_mi300x.load.figures import compute_figures, find_problems
from pytest_mi300x.load.health import ClientHealth
from pytest_mi300x.load.records import LoadRun, RequestRecord
from pytest_mi300x.load.spread import run_load_sync
from pytest_mi300x.load.sweep import find_max_rate
from pytest_mi300x.workload.arrivals import Arrivals
from tests.doubles.stub_server import StubBehavior, StubServer, stub_server
from tests.test_loadgen import KEY, assert_sent_on_schedule, requests


def run(server: StubServer, n: int, arrivals: Arrivals, output_len: int = 4,
        **kwargs: object) -> LoadRun:
    return run_load_sync(base_url=server.base_url, api_key=KEY, model="stub-model",
                         requests=requests(n, output_len=output_len), arrivals=arrivals,
                         seed=0, **kwargs)  # type: ignore[arg-type]


def test_ramp_up_offsets_follow_vllms_per_request_rate() -> None:
    arrivals = Arrivals(ramp_up="linear", ramp_start_rps=2.0, ramp_end_rps=20.0)
    n = 10
    draw = np.random.RandomState(5)
    rates = [2.0 + 18.0 * i / (n - 1) for i in range(n)]
    expected = np.cumsum([draw.gamma(1.0, 1.0 / r) for r in rates])
    assert arrivals.offsets(n, seed=5) == pytest.approx(list(expected))
    exp = Arrivals(ramp_up="exponential", ramp_start_rps=1.0, ramp_end_rps=16.0)
    assert [exp.rate_at(i, 5) for i in range(5)] == pytest.approx([1, 2, 4, 8, 16])
    with pytest.raises(ValueError, match="ramp_end_rps must be a finite rate > 0"):
        Arrivals(ramp_up="linear", ramp_start_rps=1.0)


def test_ramp_up_sends_ever_closer_together_on_schedule() -> None:
    arrivals = Arrivals(ramp_up="linear", ramp_start_rps=4.0, ramp_end_rps=40.0,
                        burstiness=math.inf)
    expected = arrivals.offsets(12, seed=0)
    with stub_server(StubBehavior(ttft=0.01, itl=0.0)) as server:
        result = run(server, 12, arrivals, output_len=2)
    assert find_problems(result) == []
    for record, want in zip(result.records, expected, strict=True):
        assert_sent_on_schedule(record, want)
    gaps = np.diff([r.send_time - r.dispatch_lag for r in result.records])
    assert gaps[0] > 3 * gaps[-1]  # 1/4 s at the start, 1/40 s at the end
    assert result.arrivals["ramp_up"] == "linear"


def test_chat_ttft_waits_for_content_not_the_role_chunk() -> None:
    with stub_server(StubBehavior(ttft=0.15, itl=0.01)) as server:
        result = run(server, 3, Arrivals(), output_len=5, endpoint="chat")
    assert find_problems(result) == []
    assert server.stats.bodies[0]["messages"][0]["content"]  # type: ignore[index]
    for r in result.records:
        # The stub's role-only chunk leaves at once; TTFT is the first content chunk.
        assert r.ttft is not None and r.ttft >= 0.14
        assert len(r.chunk_times) == 5
    assert result.endpoint == "chat"


def test_goodput_counts_requests_meeting_every_slo() -> None:
    def rec(i: int, ttft: float, latency: float, tokens: int) -> RequestRecord:
        return RequestRecord(index=i, prompt_len=4, output_len=tokens, ttft=ttft,
                             latency=latency, chunk_times=[ttft, latency],
                             prompt_tokens=4, completion_tokens=tokens)
    records = [rec(0, 0.1, 1.1, 11), rec(1, 0.3, 1.3, 11), rec(2, 0.1, 3.1, 11),
               RequestRecord(index=3, prompt_len=4, output_len=11, error="boom")]
    run = LoadRun(records=records, duration=2.0, started_at=0.0, arrivals={})
    # TPOTs: 100, 100, 300 ms; TTFTs 100, 300, 100 ms.
    f = compute_figures(run, slos={"ttft": 200, "tpot": 150})
    assert f["request_goodput"] == pytest.approx(0.5)  # only request 0, over 2 s
    assert f["slo_attainment"] == pytest.approx(0.25)  # the failed one counts as a miss
    assert compute_figures(run, slos={"e2el": 1500})["request_goodput"] == pytest.approx(1.0)
    assert "request_goodput" not in compute_figures(run)
    with pytest.raises(ValueError, match="SLO 'itl' is not one of ttft, tpot, e2el"):
        compute_figures(run, slos={"itl": 5})


@pytest.fixture
def busy_client() -> Iterator[None]:
    """Another thread of the client process spinning on the GIL: a client that
    cannot keep up, as a loaded load generator is."""
    stop = threading.Event()

    def spin() -> None:
        x = 0
        while not stop.is_set():
            x += 1

    threads = [threading.Thread(target=spin, daemon=True) for _ in range(4)]
    for t in threads:
        t.start()
    yield
    stop.set()
    for t in threads:
        t.join()


def test_saturated_client_makes_the_run_invalid(busy_client: None) -> None:
    with stub_server(StubBehavior(ttft=0.01, itl=0.002)) as server:
        result = run(server, 60, Arrivals(request_rate=60.0), output_len=20)
    problems = find_problems(result)
    # Whichever symptom shows first (CPU, late sends, late wake-ups), the run is invalid.
    assert result.saturation, result.health
    assert all(reason in problems for reason in result.saturation)
    assert all(reason.startswith("client ") for reason in result.saturation)


def test_idle_client_is_healthy() -> None:
    with stub_server(StubBehavior(ttft=0.05, itl=0.01)) as server:
        result = run(server, 20, Arrivals(request_rate=20.0), output_len=5)
    # Judged by the client's own limits (test_health_problems_name_their_limits), which
    # a slow machine meets at 20 req/s; no tighter figure of this machine's speed here.
    assert result.saturation == [] and find_problems(result) == []
    health = result.health[0]
    assert health.cpu_seconds > 0 and health.wall_seconds > 0
    assert health.dispatch_lag_median_s is not None and health.wakeups > 0


def test_health_problems_name_their_limits() -> None:
    h = ClientHealth(cpu_seconds=0.1, wall_seconds=1.0, peak_cpu_share=0.2,
                     dispatch_lag_median_s=0.05, dispatch_lag_p99_s=0.1, wakeup_lag_p99_s=0.2,
                     wakeups=400)
    assert h.problems() == ["client fell behind its schedule: requests left a median "
                            "50.0 ms late (limit 25 ms)"]
    assert h.notes() == ["client event loop woke p99 200.0 ms late (over 50 ms): "
                         "timestamps may trail arrivals"]


def test_load_spread_over_processes_shares_one_clock() -> None:
    arrivals = Arrivals(request_rate=40.0, burstiness=math.inf)
    expected = arrivals.offsets(16, seed=0)
    with stub_server(StubBehavior(ttft=0.02, itl=0.005)) as server:
        result = run(server, 16, arrivals, output_len=3, processes=2)
    assert find_problems(result) == []
    assert [r.index for r in result.records] == list(range(16))
    assert len(result.health) == 2 and result.arrivals["processes"] == 2
    # Both processes' send times sit on the one schedule, interleaved.
    for r, want in zip(result.records, expected, strict=True):
        assert_sent_on_schedule(r, want)
    assert result.duration >= expected[-1]
    assert server.stats.requests == 16


def test_spread_splits_the_concurrency_cap() -> None:
    with stub_server(StubBehavior(ttft=0.1, itl=0.01)) as server:
        result = run(server, 12, Arrivals(max_concurrency=4), output_len=3, processes=2)
    assert find_problems(result) == []
    assert server.stats.max_active <= 4
    assert max(r.queue_time for r in result.records) > 0.1  # the cap made requests wait


def test_rate_sweep_finds_the_knee_of_a_server_with_known_capacity() -> None:
    # 2 streams at once, each 0.02 + 4 * 0.01 = 0.06 s: capacity 33 req/s.
    behavior = StubBehavior(ttft=0.02, itl=0.01, capacity=2)
    capacity = 2 / (behavior.ttft + 4 * behavior.itl)
    slos = {"ttft": 100.0}
    with stub_server(behavior) as server:
        def measure(rate: float) -> tuple[dict[str, float], bool]:
            result = run(server, 40, Arrivals(request_rate=rate, burstiness=math.inf),
                         output_len=5)
            return compute_figures(result, slos=slos), not find_problems(result)

        sweep = find_max_rate(measure, [4.0, 16.0, 64.0], slos, refine=2)
    assert [p.rate for p in sweep.points][:3] == [4.0, 16.0, 64.0], sweep.describe()
    assert not sweep.points[2].passes(sweep.attainment)  # 64/s queues for up to 0.6 s
    assert len(sweep.points) == 5  # two bisection steps between 16 and 64
    assert sweep.best_rate is not None
    assert 16.0 <= sweep.best_rate <= capacity * 1.15
    assert sweep.describe()["best_rate"] == sweep.best_rate


def test_a_missed_rate_is_tried_again_before_the_walk_ends() -> None:
    # A stall at 4/s, then the same rate holds: the walk goes on to the real knee at 32.
    seen: list[float] = []
    stalls = iter([True])

    def measure(rate: float) -> tuple[dict[str, float], bool]:
        seen.append(rate)
        stalled = rate == 4.0 and next(stalls, False)
        return {"slo_attainment": 0.5 if stalled or rate >= 32.0 else 1.0}, True

    sweep = find_max_rate(measure, [4.0, 8.0, 16.0, 32.0], {"ttft": 1.0}, refine=0,
                          retries=1)
    assert seen == [4.0, 4.0, 8.0, 16.0, 32.0, 32.0] and sweep.best_rate == 16.0
    without = find_max_rate(lambda r: ({"slo_attainment": 0.5}, True), [4.0, 8.0],
                            {"ttft": 1.0})
    assert without.best_rate is None and len(without.points) == 1
    # Past the knee (most requests missed) no stall explains it: not tried again.
    clear = find_max_rate(lambda r: ({"slo_attainment": 1.0 if r < 8 else 0.1}, True),
                          [4.0, 8.0], {"ttft": 1.0}, refine=0, retries=1, near_miss=0.45)
    assert [p.rate for p in clear.points] == [4.0, 8.0]


def test_a_later_sweep_starts_at_the_earlier_result() -> None:
    def knee_at(knee: float):
        seen: list[float] = []

        def measure(rate: float) -> tuple[dict[str, float], bool]:
            seen.append(rate)
            return {"slo_attainment": 1.0 if rate <= knee else 0.2}, True
        return measure, seen

    rates = [4.0, 8.0, 16.0, 32.0, 64.0]
    measure, seen = knee_at(20.0)
    sweep = find_max_rate(measure, rates, {"ttft": 1.0}, refine=2, start_at=18.0)
    # 4 and 8 held in the earlier sweep: the walk begins at 16, the highest not above 18.
    assert seen == [16.0, 32.0, 24.0, 20.0] and sweep.best_rate == 20.0
    # The start misses (the engine got slower): the rates below it are walked after all.
    measure, seen = knee_at(6.0)
    sweep = find_max_rate(measure, rates, {"ttft": 1.0}, refine=1, start_at=18.0)
    assert seen == [16.0, 4.0, 8.0, 6.0] and sweep.best_rate == 6.0
    # Not even the lowest holds: no rate.
    measure, seen = knee_at(1.0)
    sweep = find_max_rate(measure, rates, {"ttft": 1.0}, start_at=18.0)
    assert seen == [16.0, 4.0] and sweep.best_rate is None
    # The top rate holds: capped, as a full walk would be.
    measure, seen = knee_at(100.0)
    sweep = find_max_rate(measure, rates, {"ttft": 1.0}, start_at=40.0)
    assert seen == [32.0, 64.0] and sweep.best_rate == 64.0


def test_rate_sweep_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="rates must be ascending"):
        find_max_rate(lambda r: ({}, True), [4.0, 2.0], {"ttft": 1.0})
    with pytest.raises(ValueError, match="slo_attainment missing"):
        find_max_rate(lambda r: ({}, True), [1.0], {"ttft": 1.0})


def test_dispatch_lag_is_recorded_apart_from_queue_time() -> None:
    with stub_server(StubBehavior(ttft=0.05, itl=0.01)) as server:
        result = run(server, 8, Arrivals(max_concurrency=2), output_len=3)
    # 4 waves of at least 0.07 s behind a cap of 2: the waits are queue time, and none
    # of them is counted as dispatch lag (which would then be as long as the longest wait).
    assert statistics.median(r.queue_time for r in result.records) > 0.05
    longest = max(r.queue_time for r in result.records)
    assert longest > 0.2
    assert max(r.dispatch_lag for r in result.records) < longest / 2


def test_a_later_sweep_tries_again_only_misses_its_earlier_sweep_did_not_see() -> None:
    # The earlier sweep held up to 18: a near miss above it is what that sweep found there
    # (not a stall of the machine) and counts at once; one at or below 18 is tried again.
    seen: list[float] = []

    def measure(rate: float) -> tuple[dict[str, float], bool]:
        seen.append(rate)
        return {"slo_attainment": 1.0 if rate <= 20.0 else 0.8}, True

    sweep = find_max_rate(measure, [4.0, 8.0, 16.0, 32.0], {"ttft": 1.0}, refine=2,
                          retries=1, near_miss=0.45, start_at=18.0)
    assert seen == [16.0, 32.0, 24.0, 20.0] and sweep.best_rate == 20.0
    stalled = iter([True])

    def stall_once_at_16(rate: float) -> tuple[dict[str, float], bool]:
        seen.append(rate)
        missed = rate > 20.0 or (rate == 16.0 and next(stalled, False))
        return {"slo_attainment": 0.8 if missed else 1.0}, True

    seen.clear()
    sweep = find_max_rate(stall_once_at_16, [4.0, 8.0, 16.0, 32.0], {"ttft": 1.0},
                          refine=0, retries=1, near_miss=0.45, start_at=18.0)
    assert seen == [16.0, 16.0, 32.0] and sweep.best_rate == 16.0
