"""Benchmark a: the client's ceiling against the stub (TEST DOUBLE), next to vllm bench serve.

The stub streams every request with a known TTFT and inter-token delay in its
own process; both clients send the same burst (all requests at t=0, a client
concurrency cap) and we print completed requests/s and streamed tokens/s of
each, and their ratio (goal: this client >= 2x). Both share the 2 cores with
the stub, so the figures are this machine's, not absolute.

    python benchmarks/client_ceiling.py --num-prompts 4000 --concurrency 1024 --processes 2
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

from stubbench import (
    SERVED,
    STUB_PID,
    cpu_seconds,
    engine_python_and_tokenizer,
    stub_process,
    stub_requests,
    vllm_bench,
)

from pytest_mi300x.load.figures import compute_figures
from pytest_mi300x.load.spread import run_load_sync
from pytest_mi300x.workload.arrivals import Arrivals


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-prompts", type=int, default=4000)
    parser.add_argument("--concurrency", type=int, default=1024)
    parser.add_argument("--output-len", type=int, default=64)
    parser.add_argument("--ttft", type=float, default=0.05)
    parser.add_argument("--itl", type=float, default=0.005)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    python, tokenizer = engine_python_and_tokenizer()
    ours: list[dict[str, float]] = []
    theirs: list[dict[str, float]] = []
    with stub_process(args.ttft, args.itl) as url:
        for r in range(args.rounds):
            stub_cpu, wall = cpu_seconds(STUB_PID[0]), time.perf_counter()
            run = run_load_sync(base_url=url, api_key="stub", model=SERVED,
                                requests=stub_requests(args.num_prompts, 31, args.output_len),
                                arrivals=Arrivals(max_concurrency=args.concurrency), seed=r,
                                processes=args.processes)
            f = compute_figures(run)
            assert f["failed"] == 0, f
            ours.append({"req/s": float(f["request_throughput"]),
                         "tok/s": float(f["output_throughput"]),
                         "stub CPU share": (cpu_seconds(STUB_PID[0]) - stub_cpu)
                         / (time.perf_counter() - wall)})
            stub_cpu = cpu_seconds(STUB_PID[0])
            res = vllm_bench(python, tokenizer, url, num_prompts=args.num_prompts,
                             input_len=32, output_len=args.output_len,
                             max_concurrency=args.concurrency, seed=r)
            assert res["failed"] == 0, res["failed"]
            # vllm bench's process start-up is outside its run: share over its duration.
            theirs.append({"req/s": res["request_throughput"],
                           "tok/s": res["output_throughput"],
                           "stub CPU share": (cpu_seconds(STUB_PID[0]) - stub_cpu)
                           / res["duration"]})
    print(f"stub TTFT {args.ttft * 1000:g} ms, ITL {args.itl * 1000:g} ms; "
          f"{args.num_prompts} requests x {args.output_len} tokens, burst, client cap "
          f"{args.concurrency}; this client on {args.processes} process(es); "
          f"median of {args.rounds} rounds")
    print(f"{'figure':<10}{'pytest-mi300x':>15}{'vllm bench':>13}{'ratio':>8}")
    for key in ("req/s", "tok/s"):
        a = statistics.median(m[key] for m in ours)
        b = statistics.median(t[key] for t in theirs)
        print(f"{key:<10}{a:>15.1f}{b:>13.1f}{a / b:>8.2f}")
    print("stub CPU share of a core during the runs (1.0: the stub is the limit): ours",
          [round(m["stub CPU share"], 2) for m in ours], "vllm bench",
          [round(t["stub CPU share"], 2) for t in theirs])
    print("per round req/s: ours", [round(m["req/s"], 1) for m in ours],
          "vllm bench", [round(t["req/s"], 1) for t in theirs])
    return 0


if __name__ == "__main__":
    sys.exit(main())
