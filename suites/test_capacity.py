"""Capacity under an SLO: per flag set, the highest request rate that keeps 90% of the
requests within latency targets.

The seed asks which flags serve a given rate best; an operator asks the question turned
round: how much rate does a flag set carry before its users notice? Each repetition
sweeps the rate upwards (the guide's QPS 32, then on) until the share of requests
meeting every SLO falls below 90%, bisects between the last rate that held and the first
that did not, and records the highest that held as ``max_rate_under_slo`` (req/s), gated
against the baseline like a throughput. Each point sends for at least 5 s (a queue needs
time to build past the knee) and a near miss is tried once more (one stall of a shared
machine does not end the sweep). Rates are written at MI300X size and scaled by the host
(the cpu host: a quarter, never sent as a burst); the SLOs are the ``slo_targets``
fixture's, which hosts do not scale (override it in a conftest). The ladder is the cpu
host's (its knees lie at 30 and 54 req/s scaled, 120-216 at full size): on a GPU host it
reaches past the roofline (256 req/s of 2048 + 1024 tokens of Llama 3.1 70B asks 110 PFLOP/s;
four MI300X peak at 5.2), so the sweep fits it under the roofline there, its top at the
roofline's rate, keeping its shape, and records why (load/feasibility.py). On the cpu host the
test took 6-8 minutes (two flag sets, two sweeps each; a later sweep starts at the earlier
one's bracket and tries again only a miss the earlier sweep did not see); each flag set
shares its server with the other tests that launch the same one.
"""

from __future__ import annotations

import pytest

from pytest_mi300x import DEFAULT_FLAGS, FlagSet, RandomDataset, Workload, flag_sets

# The guide's quick start serves at -tp 4 (its tuned flags are GUIDE_TUNED's).
pytestmark = pytest.mark.tensor_parallel(4)

RATES = [32.0, 64.0, 128.0, 192.0, 256.0]

GUIDE_TUNED = FlagSet.of("guide-tuned", enable_chunked_prefill=False, max_num_seqs=1024)

# Long requests: the cpu host's engine kept the SLOs at 64 req/s (its client's limit) with
# ShareGPT's short ones (a quarter of ShareGPT's lengths there), so the sweep found no
# knee. 2048 + 1024 tokens (cpu host: 512 + 256) bring it within reach.
DATASET = RandomDataset(input_len=2048, output_len=1024, num_prompts=400, seed=0)


@flag_sets(DEFAULT_FLAGS, GUIDE_TUNED)
def test_capacity_under_slo(capacity) -> None:
    # Two sweeps, not one per --repeats: a sweep is 7-11 runs and its result moved little
    # between sweeps (cpu host, 3 sweeps each: 30, 30, 32 req/s default; 54, 54, 52
    # tuned), far inside the figure's 30% floor, while each sweep cost 1.5-2.3 minutes.
    # Bisected twice, not 3 times: within a quarter of the gap between listed rates (4 req/s
    # at the cpu host's knees of 30 and 54: 13% and 7%), still inside that floor, and one
    # run fewer a sweep.
    capacity(Workload(dataset=DATASET), RATES, sweeps=2, refine=2)
