"""Benchmark b: timing error against the stub's known delays, this client vs vllm bench serve.

The stub (TEST DOUBLE, own process) answers every request with its first chunk
after TTFT and then one chunk per ITL. At 1, 100 and 1,000 concurrent streams
we print median measured TTFT and ITL minus those known delays, for this
client and for `vllm bench serve` on the same stub. Goals: at 1 stream median
TTFT error <= 1 ms; at 100 and 1,000 streams <= a fifth of vllm bench serve's.

    python benchmarks/timing_accuracy.py --ttft 0.05 --itl 0.005
"""

from __future__ import annotations

import argparse
import sys

from stubbench import SERVED, engine_python_and_tokenizer, stub_process, stub_requests, vllm_bench

from pytest_mi300x.load.figures import compute_figures
from pytest_mi300x.load.spread import run_load_sync
from pytest_mi300x.workload.arrivals import Arrivals


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ttft", type=float, default=0.05)
    parser.add_argument("--itl", type=float, default=0.005)
    parser.add_argument("--output-len", type=int, default=32)
    parser.add_argument("--streams", type=int, nargs="+", default=[1, 100, 1000])
    args = parser.parse_args()
    python, tokenizer = engine_python_and_tokenizer()
    rows = []
    with stub_process(args.ttft, args.itl) as url:
        for streams in args.streams:
            n = max(streams, 20)  # one stream: 20 requests one after another
            cap = 1 if streams == 1 else None
            run = run_load_sync(base_url=url, api_key="stub", model=SERVED,
                                requests=stub_requests(n, 31, args.output_len),
                                arrivals=Arrivals(max_concurrency=cap), seed=0)
            f = compute_figures(run)
            assert f["failed"] == 0, f
            res = vllm_bench(python, tokenizer, url, num_prompts=n, input_len=32,
                             output_len=args.output_len, max_concurrency=cap)
            assert res["failed"] == 0, res["failed"]
            rows.append((streams,
                         float(f["median_ttft_ms"]) - args.ttft * 1000,
                         float(f["median_itl_ms"]) - args.itl * 1000,
                         res["median_ttft_ms"] - args.ttft * 1000,
                         res["median_itl_ms"] - args.itl * 1000,
                         run.saturation))
    print(f"stub TTFT {args.ttft * 1000:g} ms, ITL {args.itl * 1000:g} ms, "
          f"{args.output_len} tokens per request; errors are median measured minus known (ms)")
    print(f"{'streams':>8}{'ours TTFT err':>15}{'ours ITL err':>14}{'vllm TTFT err':>15}"
          f"{'vllm ITL err':>14}{'TTFT err ratio':>16}")
    for streams, ot, oi, vt, vi, sat in rows:
        ratio = ot / vt if vt else float("nan")
        print(f"{streams:>8}{ot:>15.2f}{oi:>14.3f}{vt:>15.2f}{vi:>14.3f}{ratio:>16.3f}"
              + (f"  (our client flagged: {'; '.join(sat)})" if sat else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
