"""Figures on hand-built runs, checked against values worked out by hand."""

from __future__ import annotations

import math

import pytest

from pytest_mi300x.load.figures import FORMULAS, METRIC_DIRECTIONS, compute_figures, find_problems
from pytest_mi300x.load.records import LoadRun, RequestRecord

VLLM_KEYS = {
    "completed",
    "failed",
    "total_input_tokens",
    "total_output_tokens",
    "duration",
    "request_throughput",
    "output_throughput",
    "total_token_throughput",
    *(
        f"{stat}_{metric}_ms"
        for stat in ("mean", "median", "std", "p99")
        for metric in ("ttft", "tpot", "itl", "e2el")
    ),
}


def ok_record(
    index: int,
    chunk_times: list[float],
    *,
    prompt_tokens: int | None,
    completion_tokens: int | None,
    prompt_len: int | None = None,
    output_len: int | None = None,
) -> RequestRecord:
    return RequestRecord(
        index=index,
        prompt_len=prompt_len if prompt_len is not None else (prompt_tokens or 0),
        output_len=output_len if output_len is not None else (completion_tokens or 0),
        send_time=0.01 * index,
        ttft=chunk_times[0],
        chunk_times=chunk_times,
        latency=chunk_times[-1],
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
    )


def failed_record(index: int, error: str = "APIConnectionError: refused") -> RequestRecord:
    return RequestRecord(
        index=index, prompt_len=10, output_len=3, chunk_times=[0.05], error=error
    )


@pytest.fixture
def run() -> LoadRun:
    records = [
        # TPOT (0.4-0.1)/2 = 0.15; chunk gaps 0.1, 0.2
        ok_record(0, [0.1, 0.2, 0.4], prompt_tokens=10, completion_tokens=3),
        # 4 tokens in 2 chunks: TPOT 0.3/3 = 0.1; one gap 0.3
        ok_record(1, [0.2, 0.5], prompt_tokens=20, completion_tokens=4),
        # failed: its chunk and tokens count nowhere
        failed_record(2),
        # one token: no TPOT, no gap
        ok_record(3, [0.3], prompt_tokens=5, completion_tokens=1),
    ]
    return LoadRun(records=records, duration=2.0, started_at=1.7e9, arrivals={"label": "x"})


def test_keys_are_vllm_result_keys(run: LoadRun) -> None:
    assert set(compute_figures(run)) == VLLM_KEYS


def test_counts_and_throughputs(run: LoadRun) -> None:
    f = compute_figures(run)
    assert (f["completed"], f["failed"]) == (3, 1)
    assert (f["total_input_tokens"], f["total_output_tokens"]) == (35, 8)
    assert f["duration"] == 2.0
    assert f["request_throughput"] == pytest.approx(1.5)
    assert f["output_throughput"] == pytest.approx(4.0)
    assert f["total_token_throughput"] == pytest.approx(21.5)


def test_latency_figures(run: LoadRun) -> None:
    f = compute_figures(run)
    pop_std = math.sqrt(0.02 / 3) * 1000  # of three values 0.1 apart
    # TTFT 0.1, 0.2, 0.3
    assert f["mean_ttft_ms"] == pytest.approx(200.0)
    assert f["median_ttft_ms"] == pytest.approx(200.0)
    assert f["std_ttft_ms"] == pytest.approx(pop_std)
    assert f["p99_ttft_ms"] == pytest.approx(298.0)  # linear: 200 + 0.98 * 100
    # TPOT per request 0.15, 0.1; mean of per-request values
    assert f["mean_tpot_ms"] == pytest.approx(125.0)
    assert f["median_tpot_ms"] == pytest.approx(125.0)
    assert f["std_tpot_ms"] == pytest.approx(25.0)
    assert f["p99_tpot_ms"] == pytest.approx(149.5)
    # ITL pooled chunk gaps 0.1, 0.2, 0.3
    assert f["mean_itl_ms"] == pytest.approx(200.0)
    assert f["std_itl_ms"] == pytest.approx(pop_std)
    assert f["p99_itl_ms"] == pytest.approx(298.0)
    # E2EL 0.4, 0.5, 0.3
    assert f["mean_e2el_ms"] == pytest.approx(400.0)
    assert f["median_e2el_ms"] == pytest.approx(400.0)
    assert f["p99_e2el_ms"] == pytest.approx(498.0)


def test_itl_is_per_chunk_not_per_token(run: LoadRun) -> None:
    # Request 1 sent 4 tokens in 2 chunks: its TPOT (100 ms) and ITL (300 ms) differ.
    only = LoadRun(records=[run.records[1]], duration=1.0, started_at=0.0, arrivals={})
    f = compute_figures(only)
    assert f["mean_tpot_ms"] == pytest.approx(100.0)
    assert f["mean_itl_ms"] == pytest.approx(300.0)


def test_extra_percentiles_use_vllm_spelling(run: LoadRun) -> None:
    f = compute_figures(run, percentiles=(50, 99.9))
    assert f["p50_ttft_ms"] == pytest.approx(200.0)
    assert f["p99.9_e2el_ms"] == pytest.approx(499.8)
    assert "p99_ttft_ms" not in f


def test_usage_missing_falls_back_to_targets_and_chunks() -> None:
    rec = ok_record(0, [0.1, 0.2, 0.3], prompt_tokens=None, completion_tokens=None,
                    prompt_len=12, output_len=9)
    f = compute_figures(LoadRun(records=[rec], duration=1.0, started_at=0.0, arrivals={}))
    assert f["total_input_tokens"] == 12
    assert f["total_output_tokens"] == 3
    assert f["mean_tpot_ms"] == pytest.approx(100.0)


def test_nothing_completed_gives_zero_figures() -> None:
    run = LoadRun(records=[failed_record(0), failed_record(1)], duration=0.0,
                  started_at=0.0, arrivals={})
    f = compute_figures(run)
    assert (f["completed"], f["failed"]) == (0, 2)
    assert set(f) == VLLM_KEYS
    for key, value in f.items():
        if key != "failed":
            assert value == 0, key


def test_clean_run_has_no_problems(run: LoadRun) -> None:
    clean = LoadRun(records=[r for r in run.records if r.ok], duration=1.0,
                    started_at=0.0, arrivals={})
    assert find_problems(clean) == []


def test_failed_requests_are_a_problem(run: LoadRun) -> None:
    problems = find_problems(run)
    assert len(problems) == 1
    assert "1 of 4 requests failed" in problems[0]
    assert "#2: APIConnectionError: refused" in problems[0]


def test_token_count_mismatches_are_problems() -> None:
    records = [
        ok_record(0, [0.1, 0.2], prompt_tokens=11, completion_tokens=2, prompt_len=10),
        ok_record(1, [0.1, 0.2], prompt_tokens=10, completion_tokens=2, output_len=5),
        ok_record(2, [0.1, 0.2], prompt_tokens=10, completion_tokens=2, output_len=5),
    ]
    problems = find_problems(LoadRun(records=records, duration=1.0, started_at=0.0, arrivals={}))
    assert problems == [
        "1 of 3 completed requests had prompt_tokens != target, e.g. request 0: 11 vs target 10",
        "2 of 3 completed requests had completion_tokens != target, "
        "e.g. request 1: 2 vs target 5",
    ]


def test_missing_usage_is_a_problem() -> None:
    rec = ok_record(4, [0.1], prompt_tokens=None, completion_tokens=None,
                    prompt_len=3, output_len=1)
    problems = find_problems(LoadRun(records=[rec], duration=1.0, started_at=0.0, arrivals={}))
    assert len(problems) == 1 and "no server usage" in problems[0] and "request 4" in problems[0]


def test_nothing_completed_and_empty_runs_are_problems() -> None:
    all_failed = LoadRun(records=[failed_record(0)], duration=1.0, started_at=0.0, arrivals={})
    problems = find_problems(all_failed)
    assert "no request completed (0 of 1)" in problems
    assert any("1 of 1 requests failed" in p for p in problems)
    empty = LoadRun(records=[], duration=0.0, started_at=0.0, arrivals={})
    assert find_problems(empty) == ["the run had no requests"]


def test_directions_cover_every_figure(run: LoadRun) -> None:
    figures = compute_figures(run, percentiles=(50, 90, 99))
    for key in figures:
        if key.endswith("_ms"):
            assert METRIC_DIRECTIONS[key] == "lower", key
        elif key.endswith("_throughput"):
            assert METRIC_DIRECTIONS[key] == "higher", key
    assert all(v in {"higher", "lower"} for v in METRIC_DIRECTIONS.values())


def test_formulas_name_their_source() -> None:
    for name in ("ttft", "tpot", "itl", "e2el"):
        assert FORMULAS[name].startswith("vllm-bench-serve:")
    assert "completion_tokens - 1" in FORMULAS["tpot"]
    assert "per chunk" in FORMULAS["itl"]
