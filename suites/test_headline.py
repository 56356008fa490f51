"""The seed's headline: vLLM against TGI at QPS 16, 32 and 1000.

The guide ("Serving LLMs on AMD MI300X: Best Practices") served Llama 3.1
405B/70B on 8 x MI300X with ShareGPT at these rates (here: the file given by
``--sharegpt``, else a seeded look-alike with ShareGPT's length shape), vLLM with its defaults and
tuned by the guide's quick start, TGI with its defaults. Written at MI300X
size; each host profile scales prompts, rate and lengths (the ``cpu`` host
runs a tenth of the prompts at a quarter of the rate and length, and has no
TGI: those cases skip there and run on the GPU host).

"Tuned" is the quick start as today's vLLM takes it: chunked prefill off and
1024 sequences. Its ``--num-scheduler-steps 15`` and
``--max-seq-len-to-capture 16384`` no longer exist (see test_guide_cases.py,
which skips them with their successors).
"""

from __future__ import annotations

import pytest

from pytest_mi300x import DEFAULT_FLAGS, Arrivals, FlagSet, Workload

RATES = [pytest.param(16.0, id="qps-16"), pytest.param(32.0, id="qps-32"),
         pytest.param(1000.0, id="qps-1000")]

VLLM_TUNED = FlagSet.of("guide-tuned", enable_chunked_prefill=False, max_num_seqs=1024)

SERVERS = pytest.mark.parametrize(("serving_engine", "flag_set"), [
    pytest.param("vllm", DEFAULT_FLAGS, id="vllm-default"),
    pytest.param("vllm", VLLM_TUNED, id="vllm-tuned"),
    pytest.param("tgi", DEFAULT_FLAGS, id="tgi-default"),
])


@pytest.mark.parametrize("request_rate", RATES)
@SERVERS
def test_headline_rates(perf, sharegpt_dataset, request_rate: float) -> None:
    result = perf.run(Workload(
        dataset=sharegpt_dataset(400),
        arrivals=Arrivals(request_rate=request_rate),
    ))
    assert result.figures["completed"] > 0
    assert result.figures["failed"] == 0
