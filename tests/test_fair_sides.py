"""Issue 27 items 12 and 1 (the claim's second measurement), against the stub server (TEST
DOUBLE, vLLM's API) as an ``--endpoint``:

- the headline's own workload (suites/test_headline.py ``workload``) lets every output stop
  at EOS: each request says ``ignore_eos: false``, on whichever engine (the harness sends the
  same body to vLLM and TGI, whose router cannot force lengths), and the result records it;
- a claim whose side failed earlier in the session does not measure it a second time.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.doubles.stub_server import StubBehavior, stub_server

pytest_plugins = ["pytester"]
ROOT = Path(__file__).resolve().parent.parent

HEADLINE = """
from headline_suite import workload
from pytest_mi300x.workload.sharegpt import SyntheticShareGPT

def test_headline_workload(perf):
    perf.run(workload(SyntheticShareGPT(80, seed=0, length_seed=0), 1000.0))
"""


def test_the_headlines_outputs_stop_at_eos_and_the_result_says_so(
        pytester: pytest.Pytester) -> None:
    shutil.copy(ROOT / "suites" / "test_headline.py", pytester.path / "headline_suite.py")
    pytester.makepyfile(test_fair=HEADLINE)
    with stub_server(StubBehavior(ttft=0.01, itl=0.001)) as server:
        result = pytester.runpytest_subprocess(
            "-p", "no:cacheprovider", "-rA", "--endpoint", server.base_url, "--repeats", "1",
            "--results-dir", "res", timeout=300)
        bodies = [b for b in server.stats.bodies if b.get("stream")]
    assert result.ret == 0, result.stdout.str()[-2000:]
    # Warm-up and measured run: 8 prompts each on the cpu host's scale; every one of them
    # asked to stop at EOS.
    assert len(bodies) >= 16
    assert {b.get("ignore_eos") for b in bodies} == {False}
    doc = json.loads(next((pytester.path / "res").glob("*.json")).read_text())
    assert doc["workload"]["scaled"]["outputs"] == "stop at EOS (ignore_eos off, on every engine)"
    # The real lengths are recorded beside the asked ones (here the stub runs to them).
    figures = doc["runs"][0]["figures"]
    assert "mean_output_len_real" in figures and "mean_output_len_target" in figures


CLAIM = """
import math
import pytest
from pytest_mi300x import DEFAULT_FLAGS, Arrivals, RandomDataset, Workload
from pytest_mi300x.judge.claims import Claim

# 4 prompts on the cpu host's scale; every stream silent for 2 s, past the 0.5 s floor.
LOAD = Workload(RandomDataset(input_len=64, output_len=16, num_prompts=40),
                Arrivals(request_rate=math.inf), warmup_requests=0, stall_timeout_s=0.5)

def test_side(perf):
    perf.run(LOAD)

@pytest.mark.seed_claim
def test_claim(claim_sides):
    side = claim_sides.measure("test_side", DEFAULT_FLAGS, LOAD)
    claim_sides.check(Claim("c", "s", "request_throughput", "a", "b", 5.0),
                      better=side, worse=side)
"""


def test_a_claim_does_not_measure_again_a_side_that_failed(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_claimed=CLAIM)
    with stub_server(StubBehavior(ttft=2.0, itl=0.001)) as server:
        result = pytester.runpytest_subprocess(
            "-p", "no:cacheprovider", "-rA", "--endpoint", server.base_url, "--repeats", "2",
            "--results-dir", "res", timeout=300)
        sent = len([b for b in server.stats.bodies if b.get("stream")])
    result.assert_outcomes(failed=1, skipped=1)
    result.stdout.fnmatch_lines([
        "*test_side*engine stalled*",
        "*test_side: its measurement failed earlier in this session (EngineStalled: *); "
        "not measured a second time*"])
    assert sent == 4  # one run of the side's 4 requests, not two
