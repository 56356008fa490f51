"""The seed's headline: vLLM against TGI at QPS 16, 32 and 1000.

The guide ("Serving LLMs on AMD MI300X: Best Practices") served Llama 3.1
405B/70B on 8 x MI300X with ShareGPT at these rates (here: the file given by
``--sharegpt``, else a seeded look-alike with ShareGPT's length shape). Written at
MI300X size; each host profile scales prompts, rate and lengths.

The three servers are the seed's own commands (its Appendix, "Detail Benchmark
Configuration"), named for what they are:

- ``vllm-seed-default``: ``vllm serve ... --max-num-seqs 1024 --max-num-batched-tokens
  1024`` (the seed's "vLLM Default Configuration": not vLLM's defaults);
- ``vllm-seed-tuned``: its "vLLM (This Guide)" as today's vLLM takes it: chunked
  prefill off and 1024 sequences. Its ``--num-scheduler-steps 15`` and
  ``--max-seq-len-to-capture 16384`` no longer exist (engines/vllm.py REMOVED_FLAGS;
  test_guide_cases.py skips them with their successors), and it served the FP8
  checkpoint, which is a model choice of the host profile, not a flag;
- ``tgi-seed-default``: ``text-generation-launcher --max-concurrent-requests 1024``
  (over 128, TGI's default, it answers HTTP 429) with the seed's env.

Both commands also set ``-tp 8`` / ``--num-shard 8 --sharded true``: the harness sets
those from the host's ``tensor_parallel`` (GPUs per server). ``VLLM_RPC_TIMEOUT=30000``
is in the mi300x host's env; ``VLLM_USE_TRITON_FLASH_ATTN=0`` is left out because today's
vLLM no longer reads it (case 5 of test_guide_cases.py measures it where it exists).

On the cpu host the same values stay valid and mean the same: 1024 batched tokens is
at least the 1024 sequences (vLLM requires it) and, with chunked prefill on as vLLM
defaults, may be below the 2048-token context; with a tenth of the prompts neither
limit binds there, as at full size 1024 sequences bind only near QPS 1000. TGI has no
CPU build and no random weights, so its cases skip on the cpu host.

After its speed runs each case asks the shipped short-answer questions (``accuracy``,
gated): a build that got faster but answers worse is a regression, never an
improvement. Where the host serves random weights (the cpu host's tiny model) the
check is skipped and the result and a warning say why.
"""

from __future__ import annotations

import pytest

from pytest_mi300x import AccuracyCheck, Arrivals, FlagSet, Workload

RATES = [pytest.param(16.0, id="qps-16"), pytest.param(32.0, id="qps-32"),
         pytest.param(1000.0, id="qps-1000")]

VLLM_SEED_DEFAULT = FlagSet.of("vllm-seed-default", max_num_seqs=1024,
                               max_num_batched_tokens=1024)
VLLM_SEED_TUNED = FlagSet.of("vllm-seed-tuned", enable_chunked_prefill=False,
                             max_num_seqs=1024)
TGI_SEED_DEFAULT = FlagSet.of("tgi-seed-default", max_concurrent_requests=1024,
                              env={"ROCM_USE_FLASH_ATTN_V2_TRITON": "false",
                                   "TRUST_REMOTE_CODE": "true"})

SERVERS = pytest.mark.parametrize(("serving_engine", "flag_set"), [
    pytest.param("vllm", VLLM_SEED_DEFAULT, id=VLLM_SEED_DEFAULT.name),
    pytest.param("vllm", VLLM_SEED_TUNED, id=VLLM_SEED_TUNED.name),
    pytest.param("tgi", TGI_SEED_DEFAULT, id=TGI_SEED_DEFAULT.name),
])


@pytest.mark.parametrize("request_rate", RATES)
@SERVERS
def test_headline_rates(perf, sharegpt_dataset, request_rate: float) -> None:
    result = perf.run(Workload(
        dataset=sharegpt_dataset(400),
        arrivals=Arrivals(request_rate=request_rate),
        accuracy=AccuracyCheck(),
    ))
    assert result.figures["completed"] > 0
    assert result.figures["failed"] == 0
