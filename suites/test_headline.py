"""The seed's headline: vLLM serving throughput and TTFT at QPS 16, 32 and 1000.

The guide ("Serving LLMs on AMD MI300X: Best Practices") measured Llama 3.1
405B/70B on 8 x MI300X with ShareGPT at these rates, with chunked prefill on
(the engine default) and off (its recommendation). Written at MI300X size; the
host profile scales prompts, rate and lengths (the ``cpu`` host runs a tenth of
the prompts at a quarter of the rate and length).
"""

from __future__ import annotations

import pytest

from pytest_mi300x import Arrivals, FlagSet, RandomDataset, Workload, flag_sets

RATES = [pytest.param(16.0, id="qps-16"), pytest.param(32.0, id="qps-32"),
         pytest.param(1000.0, id="qps-1000")]

CHUNKED_PREFILL = flag_sets(
    FlagSet.of("chunked-prefill-on", enable_chunked_prefill=True),
    FlagSet.of("chunked-prefill-off", enable_chunked_prefill=False),
)


@pytest.mark.parametrize("request_rate", RATES)
@CHUNKED_PREFILL
def test_headline_rates(perf, request_rate: float) -> None:
    result = perf.run(Workload(
        dataset=RandomDataset(input_len=256, output_len=256, num_prompts=400, seed=0),
        arrivals=Arrivals(request_rate=request_rate),
    ))
    assert result.figures["request_throughput"] > 0
    assert result.figures["failed"] == 0
