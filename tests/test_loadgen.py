"""Load generator against the stub server (TEST DOUBLE) with known delays.

These run on a loaded 2-core machine (client and stub share one process) that may be
twice as slow as the one they were written on: a time is bounded below by the stub's own
delays (it cannot be shorter), and above only by another measured time it must stay
apart from (a wait it excludes, a delay it did not sit out), never by a fixed number of
milliseconds of the client's own speed.
"""

from __future__ import annotations

import socket
import statistics

import pytest

from pytest_mi300x.load.figures import compute_figures, find_problems
from pytest_mi300x.load.records import LoadRun, RequestRecord
from pytest_mi300x.load.spread import run_load_sync
from pytest_mi300x.workload.arrivals import Arrivals
from pytest_mi300x.workload.datasets import PromptRequest
from tests.doubles.stub_server import (
    CUT_MARKER,
    FAIL_MARKER,
    StubBehavior,
    StubServer,
    stub_prompt,
    stub_server,
)

KEY = "sk-test-secret-123"


def requests(n: int, output_len: int = 8, words: int = 6) -> list[PromptRequest]:
    # A prompt of k stub words has k + 1 tokens (BOS) on the stub.
    return [
        PromptRequest(prompt=stub_prompt(words, start=2 + i), prompt_len=words + 1,
                      output_len=output_len)
        for i in range(n)
    ]


def assert_sent_on_schedule(record: RequestRecord, offset: float) -> None:
    """Never before its time, and due at it: how late it left is its dispatch lag (and any
    cap's wait), which the client's health check judges, not a bound in ms here."""
    assert record.send_time >= offset - 0.005
    due = record.send_time - record.dispatch_lag - record.queue_time
    assert offset - 0.005 <= due <= offset + 0.001


def run(server: StubServer, reqs: list[PromptRequest], arrivals: Arrivals | None = None,
        **kwargs: float) -> LoadRun:
    return run_load_sync(base_url=server.base_url, api_key=KEY, model="stub-model",
                         requests=reqs, arrivals=arrivals or Arrivals(), seed=0, **kwargs)


def test_ttft_itl_and_latency_match_stub_delays() -> None:
    with stub_server(StubBehavior(ttft=0.2, itl=0.05)) as server:
        result = run(server, requests(4, output_len=8))
    assert find_problems(result) == []
    for r in result.records:
        assert r.ttft is not None and r.latency is not None
        assert len(r.chunk_times) == 8
        assert r.chunk_times[0] == r.ttft and r.chunk_times[-1] == r.latency
        assert r.chunk_times == sorted(r.chunk_times)
        # The stub sleeps 0.2 s, then 0.05 s per token: no time can be shorter. Each
        # chunk is stamped as it arrives, not at the end of the stream: the first stands
        # more than one stub gap before the last (the rest is slack for a first read that
        # came late on a loaded machine).
        assert r.ttft >= 0.2
        assert r.latency >= 0.2 + 7 * 0.05
        assert r.latency - r.ttft > 0.05
        assert (r.prompt_tokens, r.completion_tokens) == (7, 8)
    f = compute_figures(result)
    assert f["completed"] == 4 and f["failed"] == 0
    assert f["mean_ttft_ms"] >= 200
    # ITL and TPOT are the per-token gaps: the records' own, not the TTFT's.
    itls = [b - a for r in result.records
            for a, b in zip(r.chunk_times, r.chunk_times[1:], strict=False)]
    assert f["mean_itl_ms"] == pytest.approx(1000 * statistics.mean(itls))
    assert f["mean_itl_ms"] > 1000 * 0.05 / 7  # the seven gaps span more than one stub gap
    tpots = [(r.latency - r.ttft) / 7 for r in result.records]  # type: ignore[operator]
    assert f["mean_tpot_ms"] == pytest.approx(1000 * statistics.mean(tpots))
    assert f["total_output_tokens"] == 32 and f["total_input_tokens"] == 28
    # Duration spans dispatch to the last completion.
    assert result.duration >= max(r.send_time + (r.latency or 0) for r in result.records)
    assert result.client_cpu_time > 0


def test_several_tokens_per_chunk_split_tpot_from_itl() -> None:
    with stub_server(StubBehavior(ttft=0.05, itl=0.1, tokens_per_chunk=4)) as server:
        result = run(server, requests(2, output_len=8))
    assert find_problems(result) == []
    for r in result.records:
        assert len(r.chunk_times) == 2 and r.completion_tokens == 8
    for r in result.records:  # the stub's 0.05 s, then 0.1 s to the second chunk
        assert r.latency is not None and r.latency >= 0.05 + 0.1
    f = compute_figures(result)
    # One gap per chunk (2 chunks of 4 tokens), and TPOT spreads the same time over the 7
    # tokens after the first.
    gaps = [r.chunk_times[1] - r.chunk_times[0] for r in result.records]
    assert f["mean_itl_ms"] == pytest.approx(1000 * statistics.mean(gaps))
    assert f["mean_tpot_ms"] == pytest.approx(f["mean_itl_ms"] / 7)


def test_sends_what_vllm_bench_serve_sends() -> None:
    with stub_server(StubBehavior(ttft=0.0, itl=0.0)) as server:
        run(server, requests(1, output_len=5))
    body = server.stats.bodies[0]
    assert body["model"] == "stub-model"
    assert body["max_tokens"] == 5
    assert body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}
    assert body["ignore_eos"] is True
    assert body["temperature"] == 0
    assert server.stats.auth_headers == [f"Bearer {KEY}"]


def test_errors_are_recorded_per_request_without_the_key() -> None:
    reqs = requests(4)
    reqs[1] = PromptRequest(prompt=f"w2 {FAIL_MARKER} {KEY}", prompt_len=4, output_len=8)
    reqs[2] = PromptRequest(prompt=f"w2 {CUT_MARKER}", prompt_len=3, output_len=8)
    with stub_server(StubBehavior(ttft=0.02, itl=0.01)) as server:
        result = run(server, reqs)
    ok, fail, cut, ok2 = result.records
    assert ok.ok and ok2.ok
    assert fail.error is not None and "HTTPStatusError: HTTP 500" in fail.error
    assert cut.error is not None and "ClientPayloadError" in cut.error
    assert not fail.ok and not cut.ok and cut.ttft is None
    for r in result.records:
        assert KEY not in (r.error or "")
    problems = find_problems(result)
    assert len(problems) == 1 and "2 of 4 requests failed" in problems[0]
    assert compute_figures(result)["completed"] == 2


def test_refused_connection_is_an_error_not_a_crash() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, never listening: connections are refused
        result = run_load_sync(base_url=f"http://127.0.0.1:{port}", api_key=KEY, model="m",
                               requests=requests(3), arrivals=Arrivals(), seed=0)
    assert all(r.error and "ClientConnectorError" in r.error for r in result.records)
    f = compute_figures(result)
    assert (f["completed"], f["failed"], f["mean_ttft_ms"]) == (0, 3, 0.0)
    assert "no request completed (0 of 3)" in find_problems(result)


def test_max_concurrency_is_respected_and_queueing_stays_out_of_ttft() -> None:
    with stub_server(StubBehavior(ttft=0.1, itl=0.02)) as server:
        result = run(server, requests(12, output_len=5), Arrivals(max_concurrency=3))
    assert find_problems(result) == []
    assert server.stats.max_active == 3
    queue_times = [r.queue_time for r in result.records]
    # 4 waves of at least 0.18 s: the last wave waited more than 0.4 s...
    assert max(queue_times) > 0.4
    # ...and that wait is not in its TTFT (which would then exceed the wait).
    for r in result.records:
        assert r.ttft is not None and r.ttft >= 0.1
        if r.queue_time > 0.4:
            assert r.ttft < r.queue_time
    assert result.arrivals["max_concurrency"] == 3


def test_unlimited_burst_runs_all_streams_at_once() -> None:
    with stub_server(StubBehavior(ttft=0.2, itl=0.01)) as server:
        result = run(server, requests(10, output_len=3))
    assert find_problems(result) == []
    assert server.stats.max_active == 10
    assert all(r.queue_time < 0.1 for r in result.records)


def test_sends_follow_the_arrival_schedule() -> None:
    arrivals = Arrivals(request_rate=20.0)
    expected = arrivals.offsets(8, seed=0)
    with stub_server(StubBehavior(ttft=0.01, itl=0.0)) as server:
        result = run(server, requests(8, output_len=2), arrivals)
    assert result.arrivals == arrivals.describe()
    assert find_problems(result) == []  # the client's own check: it kept its schedule
    for r, offset in zip(result.records, expected, strict=True):
        assert_sent_on_schedule(r, offset)
    assert result.duration >= expected[-1]


@pytest.mark.parametrize(
    ("behavior", "expected"),
    [
        (StubBehavior(ttft=0.0, itl=0.0, completion_tokens_delta=-2),
         "3 of 3 completed requests had completion_tokens != target, "
         "e.g. request 0: 6 vs target 8"),
        (StubBehavior(ttft=0.0, itl=0.0, prompt_tokens_delta=1),
         "3 of 3 completed requests had prompt_tokens != target, "
         "e.g. request 0: 8 vs target 7"),
        (StubBehavior(ttft=0.0, itl=0.0, include_usage=False),
         "3 of 3 completed requests had no server usage (e.g. request 0); "
         "token counts cannot be trusted"),
    ],
)
def test_find_problems_catches_wrong_token_counts(behavior: StubBehavior, expected: str) -> None:
    with stub_server(behavior) as server:
        result = run(server, requests(3, output_len=8))
    assert find_problems(result) == [expected]


def test_request_timeout_fails_the_request() -> None:
    with stub_server(StubBehavior(ttft=3.0, itl=0.0)) as server:
        result = run(server, requests(2), request_timeout=0.3)
    assert result.duration < 3.0  # the run did not sit out the stub's 3 s
    for r in result.records:
        assert r.error is not None and "TimeoutError" in r.error


def test_records_serialise() -> None:
    with stub_server(StubBehavior(ttft=0.0, itl=0.0)) as server:
        result = run(server, requests(1, output_len=2))
    d = result.records[0].to_dict()
    assert d["index"] == 0 and d["completion_tokens"] == 2
    assert isinstance(d["chunk_times"], list) and len(d["chunk_times"]) == 2
    assert "queue_time" in d
    assert result.to_dict()["records"] == [d]
