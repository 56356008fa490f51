"""Case 3 of the guide: chunked prefill and prefix caching, "fresh run" vs "2nd run".

The guide's fresh run starts with an empty prefix cache; its 2nd run repeats
the same benchmark right after, with about 50% of prompt tokens found in the
cache. Here every repetition first empties the cache (vLLM's
/reset_prefix_cache, which needs VLLM_SERVER_DEV_MODE=1 on the server); a
2nd-run repetition then sends the same prompts once, unmeasured, and measures
them again. Prompts share prefixes (N prefixes x M suffixes), so the hit
rate comes from the dataset (at the guide's QPS 1000, where the server sets the
pace), and the engine's own counters (prefix-cache
queries and hits from /metrics) are recorded with each result.
"""

from __future__ import annotations

import pytest

from pytest_mi300x import Arrivals, FlagSet, SharedPrefixDataset, Workload, flag_sets

DEV_MODE = {"VLLM_SERVER_DEV_MODE": "1"}  # enables /reset_prefix_cache

CASE3 = flag_sets(*(
    FlagSet.of(f"cp-{cp}-pc-{pc}", env=DEV_MODE, enable_chunked_prefill=cp == "on",
               enable_prefix_caching=pc == "on")
    for cp in ("on", "off") for pc in ("on", "off")
))


@pytest.mark.parametrize("cache", ["fresh", "second-run"])
@CASE3
def test_case3_prefix_caching(perf, cache: str) -> None:
    result = perf.run(Workload(
        dataset=SharedPrefixDataset.grid(40, 10, prefix_len=512, suffix_len=128,
                                         output_len=128, seed=0),
        arrivals=Arrivals(request_rate=1000.0),
        prefix_cache=cache,
    ))
    assert result.figures["failed"] == 0
