"""Every dataset, the chat endpoint, and the arrival modes on the real vLLM engine.

One pytest session in a subprocess (the plugin as a user runs it), one server
shared by all tests; each run's prompt lengths are checked against the server's
own usage counts (a mismatch makes the run invalid and the test fail), and the
result files carry the engine's /metrics deltas.
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
import json, math, urllib.error, urllib.request
from pathlib import Path
import pytest
from pytest_mi300x import Arrivals, RandomDataset, Workload
from pytest_mi300x.workload.jsonl import JsonlDataset
from pytest_mi300x.workload.prefix import SharedPrefixDataset
from pytest_mi300x.workload.sharegpt import ShareGPTDataset, SyntheticShareGPT

def check(result):
    assert result.valid, [r.problems for r in result.repetitions]
    run = result.repetitions[0].run
    assert all(r.prompt_tokens == r.prompt_len for r in run.records)
    return run

def test_sharegpt_file(perf):
    run = check(perf.run(Workload(ShareGPTDataset(Path("sharegpt-sample.json"),
                                                  num_prompts=40, output_len=16))))
    assert len(run.records) == 4

def test_sharegpt_synthetic(perf):
    run = check(perf.run(Workload(SyntheticShareGPT(num_prompts=40, seed=1),
                                  Arrivals(request_rate=16.0))))
    assert len({r.prompt_len for r in run.records}) > 1

def test_random_range_ratio(perf):
    run = check(perf.run(Workload(RandomDataset(256, 64, 60, range_ratio=0.5),
                                  Arrivals(request_rate=32.0, burstiness=0.5))))
    assert len({r.prompt_len for r in run.records}) > 1

def test_shared_prefix(perf):
    ds = SharedPrefixDataset.grid(2, 5, prefix_len=1024, suffix_len=64, output_len=32,
                                  prefix_seed=5)
    first = check(perf.run(Workload(ds, warmup_requests=0)))
    second = check(perf.run(Workload(ds, warmup_requests=0)))
    hit1 = first.server["figures"]["server_prefix_cache_hit_rate"]
    hit2 = second.server["figures"]["server_prefix_cache_hit_rate"]
    # Within a fresh run the later suffixes of each prefix hit; a 2nd run hits more.
    assert 0.3 < hit1 < hit2, (hit1, hit2)

def test_prefix_cache_fresh_and_second_run(perf, llm_server):
    ds = SharedPrefixDataset.grid(2, 5, prefix_len=512, suffix_len=64, output_len=16,
                                  prefix_seed=7)
    second = check(perf.run(Workload(ds, warmup_requests=0, prefix_cache="second-run")))
    fresh = check(perf.run(Workload(ds, warmup_requests=0, prefix_cache="fresh")))
    hit1 = fresh.server["figures"]["server_prefix_cache_hit_rate"]
    hit2 = second.server["figures"]["server_prefix_cache_hit_rate"]
    # The fresh run's prompts were just cached by the 2nd run, under another salt: only
    # later suffixes of a prefix hit; a 2nd run finds every prompt.
    assert 0.3 < hit1 < 0.85 < hit2, (hit1, hit2)
    # No development routes (VLLM_SERVER_DEV_MODE): no key guards them.
    request = urllib.request.Request(f"{llm_server.base_url}/reset_prefix_cache", b"",
                                     method="POST")
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=30)
    assert refused.value.code == 404

def test_jsonl(perf):
    Path("prompts.jsonl").write_text("\\n".join(json.dumps({"prompt": p, "output_len": n})
        for p, n in [("Tell me about GPUs.", 12), ("Write a haiku on caches.", 8),
                     ("Why is the sky blue?", 10)]) + "\\n")
    run = check(perf.run(Workload(JsonlDataset(Path("prompts.jsonl")))))
    assert sorted(r.output_len for r in run.records) == [8, 10, 12]

def test_chat_endpoint(perf):
    run = check(perf.run(Workload(RandomDataset(128, 32, 40), endpoint="chat")))
    assert run.endpoint == "chat"

def test_ramp_up_concurrency_and_goodput(perf):
    # The ramp ends far above what one stream can serve (cpu host: ~70 ms a request,
    # ramp scaled to 2 -> 100 req/s), so the cap must make later requests wait.
    arrivals = Arrivals(ramp_up="linear", ramp_start_rps=8.0, ramp_end_rps=400.0,
                        max_concurrency=1)
    result = perf.run(Workload(RandomDataset(128, 128, 120), arrivals,
                               slos={"ttft": 10000, "tpot": 10000}))
    run = check(result)
    figures = result.repetitions[0].figures
    assert figures["request_goodput"] == pytest.approx(figures["request_throughput"])
    assert run.arrivals["ramp_up"] == "linear" and run.arrivals["max_concurrency"] == 1
    # One at a time while arrivals speed up: later requests waited on the client cap,
    # and that wait stayed out of their TTFT; the engine never ran two at once.
    assert max(r.queue_time for r in run.records) > 0.1
    spans = sorted((r.send_time, r.send_time + r.latency) for r in run.records)
    assert all(nxt[0] >= prev[1] for prev, nxt in zip(spans, spans[1:]))
    server = run.server["figures"]
    # Had the client counted its wait in TTFT, its mean TTFT would be the engine's plus
    # the mean wait; it stays well inside half of that wait (a bound that grows with
    # the wait on a slower machine, not a fixed number of ms).
    mean_wait_ms = 1000 * sum(r.queue_time for r in run.records) / len(run.records)
    assert figures["mean_ttft_ms"] < server["server_mean_ttft_ms"] + mean_wait_ms / 2
    assert server["server_peak_running"] <= 1
"""


def test_datasets_and_arrivals_on_the_real_engine(pytester: pytest.Pytester) -> None:
    shutil.copy(DATA / "sharegpt-sample.json", pytester.path / "sharegpt-sample.json")
    pytester.makepyfile(test_modes=SUITE)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-rA", "--repeats", "1",
                                           "--results-dir", "res", timeout=1500)
    result.assert_outcomes(passed=8)
    docs = {p.stem: json.loads(p.read_text()) for p in (pytester.path / "res").glob("*.json")}
    doc = next(d for k, d in docs.items() if "shared_prefix" in k)
    server = doc["runs"][0]["server"]
    assert server["series"]["prefix_cache_hits"] == "vllm:prefix_cache_hits_total"
    assert server["errors"] == []
    assert server["after"]["prefix_cache_queries"] > server["before"]["prefix_cache_queries"]
    assert "server_mean_queue_time_ms" in server["figures"]
    health = doc["runs"][0]["client_health"][0]
    assert health["cpu_seconds"] > 0
