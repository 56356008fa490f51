"""Real traffic shapes: trace replay (Mooncake JSONL) and multi-turn conversations, built
with a word tokenizer (TEST DOUBLE) and sent to the stub server (TEST DOUBLE)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pytest_mi300x.hosts.cpu import CPU_HOST
from pytest_mi300x.load.figures import find_problems
from pytest_mi300x.load.spread import _lanes, run_load_sync
from pytest_mi300x.workload.arrivals import Arrivals
from pytest_mi300x.workload.conversation import MultiTurnDataset
from pytest_mi300x.workload.datasets import PromptRequest
from pytest_mi300x.workload.trace import TraceDataset, read_trace
from pytest_mi300x.workload.workload import Workload
from tests.doubles.stub_server import StubBehavior, stub_prompt, stub_server
from tests.test_datasets import WordTokenizerDouble
from tests.test_loadgen import KEY, assert_sent_on_schedule

TRACE = Path(__file__).parent / "data" / "mooncake-tiny.jsonl"


def test_the_shipped_trace_has_mooncakes_shape() -> None:
    rows = read_trace(TRACE)
    assert len(rows) == 24 and rows[0].timestamp_s == 0.0
    assert [r.timestamp_s for r in rows] == sorted(r.timestamp_s for r in rows)
    assert all(len(r.hash_ids) == -(-r.input_length // 512) for r in rows)
    shared = {h for r in rows for h in r.hash_ids[:-1]} & {h for r in rows for h in r.hash_ids}
    assert shared  # some blocks recur: prefixes to reuse


def test_trace_rows_are_checked_with_file_and_line(tmp_path: Path) -> None:
    bad = tmp_path / "t.jsonl"
    bad.write_text('{"timestamp": 0, "input_length": 10, "output_length": 5, "hash_ids": [0]}\n'
                   '{"timestamp": -1, "input_length": 10, "output_length": 5}\n')
    with pytest.raises(ValueError, match=r"t.jsonl:2: timestamp -1 is not a number >= 0"):
        read_trace(bad)
    with pytest.raises(ValueError, match="does not exist"):
        read_trace(tmp_path / "missing.jsonl")


def test_trace_prompts_are_exact_and_share_their_hash_blocks(tmp_path: Path) -> None:
    trace = tmp_path / "t.jsonl"
    rows = [{"timestamp": 0, "input_length": 30, "output_length": 4, "hash_ids": [7, 8, 9]},
            {"timestamp": 1500, "input_length": 25, "output_length": 6, "hash_ids": [7, 8, 11]},
            {"timestamp": 2500, "input_length": 12, "output_length": 3, "hash_ids": [20, 21]}]
    trace.write_text("".join(json.dumps(r) + "\n" for r in rows))
    tok = WordTokenizerDouble()
    built = TraceDataset(trace, block_size=10).build(tok)
    assert [r.prompt_len for r in built] == [30, 25, 12]
    assert [len(tok.encode(r.prompt)) for r in built] == [30, 25, 12]
    assert [r.output_len for r in built] == [4, 6, 3]
    assert [r.at for r in built] == [0.0, 1.5, 2.5]
    a, b, c = (r.prompt.split() for r in built)
    # Blocks 7 and 8 (two blocks of 10 tokens, BOS in the first) are the same text.
    assert a[:19] == b[:19] and a[19:] != b[19:]
    assert a[:9] != c[:9]
    # Another seed: the same shape with other text (a warm-up caches nothing measured).
    other = TraceDataset(trace, block_size=10, seed=1).build(tok)
    assert other[0].prompt != built[0].prompt and other[0].prompt_len == 30


def test_trace_scales_lengths_and_blocks_together() -> None:
    small = TraceDataset(TRACE).scaled(CPU_HOST.scale)
    assert small.length_scale == 0.25 and small.num_prompts is None
    built = small.build(WordTokenizerDouble(vocab_size=5000))
    rows = read_trace(TRACE)
    assert [r.prompt_len for r in built] == [round(r.input_length / 4) for r in rows]
    assert small.describe()["digest"].startswith("sha256:")


def test_replay_arrivals_follow_the_trace_times_scaled() -> None:
    reqs = [PromptRequest("w2", 2, 1, at=t) for t in (5.0, 5.5, 7.0)]
    assert Arrivals.replay().schedule(reqs, seed=0) == [0.0, 0.5, 2.0]
    assert Arrivals.replay(speedup=2.0).schedule(reqs, seed=0) == [0.0, 0.25, 1.0]
    cpu = Arrivals.replay().scaled(CPU_HOST.scale)
    assert cpu.speedup == 0.25 and cpu.schedule(reqs, 0) == [0.0, 2.0, 8.0]
    assert cpu.label == "trace-x0.25"
    # A replay is paced by its trace, never described as a burst (burst floors).
    assert cpu.describe()["request_rate"] == "trace"
    with pytest.raises(ValueError, match="every request needs its own time"):
        Arrivals.replay().schedule([PromptRequest("w2", 2, 1)], seed=0)
    with pytest.raises(ValueError, match="speedup must be a finite factor"):
        Arrivals.replay(speedup=0.0)


def test_a_replay_sends_on_the_traces_clock() -> None:
    reqs = [PromptRequest(stub_prompt(3, start=2 + i), 4, 2, at=t)
            for i, t in enumerate((0.0, 0.3, 0.6))]
    with stub_server(StubBehavior(ttft=0.01, itl=0.0)) as server:
        run = run_load_sync(base_url=server.base_url, api_key=KEY, model="m", requests=reqs,
                            arrivals=Arrivals.replay(speedup=1.5), seed=0)
    assert find_problems(run) == []
    for record, want in zip(run.records, (0.0, 0.2, 0.4), strict=True):
        assert_sent_on_schedule(record, want)


def test_each_turn_carries_the_conversation_so_far() -> None:
    tok = WordTokenizerDouble(vocab_size=2000)
    ds = MultiTurnDataset(num_prompts=6, turns=3, first_len=12, user_len=5, output_len=4,
                          think_s=0.25)
    built = ds.build(tok)
    assert ds.conversations == 2 and len(built) == 6
    assert [r.after for r in built] == [None, None, 0, 1, 2, 3]
    assert all(len(tok.encode(r.prompt)) == r.prompt_len for r in built)
    for r in built[2:]:
        before = built[r.after or 0]
        assert r.prompt.startswith(before.prompt + " ")
        # The earlier turn, a stand-in answer of the output length, the new message.
        assert r.prompt_len == before.prompt_len + before.output_len + 5
        assert r.think_s == 0.25
    assert built[0].prompt_len == 12
    small = ds.scaled(CPU_HOST.scale)
    assert (small.num_prompts, small.first_len, small.user_len) == (3, 3, 1)


def test_a_later_turn_leaves_after_the_turn_before_it_completed_and_its_think_time() -> None:
    tok = WordTokenizerDouble(vocab_size=900)
    ds = MultiTurnDataset(num_prompts=6, turns=3, first_len=6, user_len=3, output_len=5,
                          think_s=0.2)
    reqs = ds.build(tok)
    with stub_server(StubBehavior(ttft=0.05, itl=0.02)) as server:
        run = run_load_sync(base_url=server.base_url, api_key=KEY, model="m", requests=reqs,
                            arrivals=Arrivals(request_rate=20.0), seed=0)
    assert find_problems(run) == []
    for request, record in zip(reqs, run.records, strict=True):
        if request.after is None:
            continue
        before = run.records[request.after]
        done = before.send_time + (before.latency or 0)
        # After the turn before it and its think time; and not held back behind a whole
        # other request cycle of the stub (0.13 s) several times over, at any machine speed.
        assert done + 0.2 <= record.send_time <= done + 0.2 + 1.0
    # Bodies carry the history: the third turn's prompt begins with the first's.
    prompts = [str(b["prompt"]) for b in server.stats.bodies]
    assert any(p.startswith(reqs[0].prompt + " ") and p != reqs[0].prompt for p in prompts)


def test_a_failed_turn_stops_its_conversation_and_the_run_is_invalid() -> None:
    reqs = [PromptRequest("w2 FAIL", 3, 2), PromptRequest("w2 FAIL w3 w4", 5, 2, after=0),
            PromptRequest("w5", 2, 2)]
    with stub_server(StubBehavior(ttft=0.01, itl=0.0)) as server:
        run = run_load_sync(base_url=server.base_url, api_key=KEY, model="m", requests=reqs,
                            arrivals=Arrivals(), seed=0)
    assert run.records[1].error is not None and run.records[1].error.startswith("NotSent")
    assert run.records[2].ok
    assert any("2 of 3 requests failed" in p for p in find_problems(run))


def test_conversations_stay_in_one_load_process() -> None:
    reqs = MultiTurnDataset(num_prompts=9, turns=3, first_len=4, user_len=2,
                            output_len=2).build(WordTokenizerDouble())
    lanes = _lanes(reqs, 2)
    assert lanes == [0, 1, 0, 0, 1, 0, 0, 1, 0]
    assert all(lanes[i] == lanes[r.after] for i, r in enumerate(reqs) if r.after is not None)


def test_traffic_workloads_describe_themselves() -> None:
    work = Workload(TraceDataset(TRACE), Arrivals.replay(speedup=2.0))
    described = work.describe()
    assert described["dataset"]["name"] == "trace"
    assert described["arrivals"]["speedup"] == 2.0
    assert MultiTurnDataset(8).describe()["name"] == "multi-turn"
