"""Benchmark d: the openai package's streaming cost against this client's raw aiohttp stream.

Same stub (TEST DOUBLE, own process, known delays), same prompts and
concurrency: completed requests/s, client CPU seconds per request and median
TTFT error for (1) pytest_mi300x.load.client (aiohttp, SSE split by hand) and
(2) openai.AsyncOpenAI().completions.create(stream=True). The hot path is
chosen by these numbers.

    python benchmarks/openai_vs_raw.py --num-prompts 1000 --concurrency 100
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time

import openai
from stubbench import SERVED, stub_process, stub_requests

from pytest_mi300x.load.figures import compute_figures
from pytest_mi300x.load.spread import run_load_sync
from pytest_mi300x.workload.arrivals import Arrivals


async def openai_run(url: str, n: int, concurrency: int, output_len: int) -> tuple[float, float,
                                                                                   list[float]]:
    client = openai.AsyncOpenAI(base_url=url + "/v1", api_key="stub", max_retries=0)
    gate = asyncio.Semaphore(concurrency)
    ttfts: list[float] = []

    async def one(prompt: str) -> None:
        async with gate:
            start = time.perf_counter()
            stream = await client.completions.create(
                model=SERVED, prompt=prompt, max_tokens=output_len, temperature=0.0,
                stream=True, stream_options={"include_usage": True},
                extra_body={"ignore_eos": True})
            first = None
            async for chunk in stream:
                if chunk.choices and first is None:
                    first = time.perf_counter() - start
            ttfts.append(first or float("nan"))

    cpu, wall = time.process_time(), time.perf_counter()
    await asyncio.gather(*(one(r.prompt) for r in stub_requests(n, 31, output_len)))
    wall = time.perf_counter() - wall
    cpu = time.process_time() - cpu
    await client.close()
    return n / wall, cpu / n, ttfts


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-prompts", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=100)
    parser.add_argument("--output-len", type=int, default=32)
    parser.add_argument("--ttft", type=float, default=0.05)
    parser.add_argument("--itl", type=float, default=0.005)
    args = parser.parse_args()
    with stub_process(args.ttft, args.itl) as url:
        run = run_load_sync(base_url=url, api_key="stub", model=SERVED,
                            requests=stub_requests(args.num_prompts, 31, args.output_len),
                            arrivals=Arrivals(max_concurrency=args.concurrency), seed=0)
        f = compute_figures(run)
        assert f["failed"] == 0, f
        raw = (float(f["request_throughput"]), run.client_cpu_time / args.num_prompts,
               float(f["median_ttft_ms"]) - args.ttft * 1000)
        rate, cpu, ttfts = asyncio.run(openai_run(url, args.num_prompts, args.concurrency,
                                                  args.output_len))
        oa = (rate, cpu, statistics.median(ttfts) * 1000 - args.ttft * 1000)
    print(f"stub TTFT {args.ttft * 1000:g} ms, ITL {args.itl * 1000:g} ms; {args.num_prompts} "
          f"requests x {args.output_len} tokens, {args.concurrency} at once")
    print(f"{'client':<22}{'req/s':>9}{'CPU ms/req':>12}{'med TTFT err ms':>17}")
    print(f"{'aiohttp raw (ours)':<22}{raw[0]:>9.1f}{raw[1] * 1000:>12.2f}{raw[2]:>17.2f}")
    print(f"{'openai ' + openai.__version__:<22}{oa[0]:>9.1f}{oa[1] * 1000:>12.2f}{oa[2]:>17.2f}")
    print(f"raw / openai: {raw[0] / oa[0]:.2f}x req/s, {oa[1] / raw[1]:.2f}x less CPU per request")
    return 0


if __name__ == "__main__":
    sys.exit(main())
