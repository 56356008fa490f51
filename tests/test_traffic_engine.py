"""A trace replay and a multi-turn workload on the real vLLM engine.

One pytest session in a subprocess (the plugin as a user runs it), one server for both:
every prompt's length is checked against the server's usage (a mismatch makes the run
invalid and the test fail), and the engine's own prefix-cache counters show that the
trace's shared blocks and the conversations' history are found in its cache.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

pytest_plugins = ["pytester"]
pytestmark = pytest.mark.engine

DATA = Path(__file__).parent / "data"

SUITE = """
from pathlib import Path
from pytest_mi300x import Arrivals, MultiTurnDataset, TraceDataset, Workload
from pytest_mi300x.workload.trace import read_trace

def check(result):
    assert result.valid, [r.problems for r in result.repetitions]
    run = result.repetitions[0].run
    assert all(r.prompt_tokens == r.prompt_len for r in run.records)
    return run

def test_trace_replay(perf):
    run = check(perf.run(Workload(TraceDataset(Path("mooncake-tiny.jsonl")),
                                  Arrivals.replay(speedup=2.0))))
    rows = read_trace(Path("mooncake-tiny.jsonl"))
    assert len(run.records) == len(rows)
    # The cpu host replays at a quarter of the pace: x2 becomes x0.5. A request is never
    # sent before its time; how late it left is its dispatch lag (and any cap's wait),
    # which the client's health check judges, so this holds on a machine of any speed.
    for row, record in zip(rows, run.records):
        due = record.send_time - record.dispatch_lag - record.queue_time
        assert row.timestamp_s / 0.5 - 0.01 <= due <= row.timestamp_s / 0.5 + 0.001
    assert run.server["figures"]["server_prefix_cache_hit_rate"] > 0.05

def test_multi_turn(perf):
    ds = MultiTurnDataset(num_prompts=120, turns=3, first_len=1024, user_len=128,
                          output_len=128, think_s=0.1)
    run = check(perf.run(Workload(ds, Arrivals(request_rate=8.0))))
    conversations = len(run.records) // 3
    for i, record in enumerate(run.records[conversations:], start=conversations):
        before = run.records[i - conversations]
        assert record.send_time >= before.send_time + before.latency + 0.1
        assert record.prompt_len > before.prompt_len
    # Every later turn finds the turn before it in the cache.
    assert run.server["figures"]["server_prefix_cache_hit_rate"] > 0.3
"""


def test_trace_replay_and_multi_turn_on_the_real_engine(pytester: pytest.Pytester) -> None:
    shutil.copy(DATA / "mooncake-tiny.jsonl", pytester.path / "mooncake-tiny.jsonl")
    pytester.makepyfile(test_traffic=SUITE)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-rA", "--repeats", "1",
                                           "--results-dir", "res", timeout=1800)
    result.assert_outcomes(passed=2)
    docs = {p.stem: json.loads(p.read_text()) for p in (pytester.path / "res").glob("*.json")}
    trace = next(d for k, d in docs.items() if "trace_replay" in k)
    assert trace["workload"]["scaled"]["dataset"]["name"] == "trace"
    assert trace["workload"]["scaled"]["arrivals"]["label"] == "trace-x0.5"
    multi = next(d for k, d in docs.items() if "multi_turn" in k)
    assert multi["workload"]["scaled"]["dataset"]["turns"] == 3
