"""Side by side: this harness's client and `vllm bench serve` on one real vLLM server.

Starts the CPU engine on the tiny model (provisioned like the plugin does),
then runs the same random workload (same lengths, count, rate and seed) with
both clients, alternating which goes first each round, and prints
request_throughput, median TTFT and mean TPOT from each with their ratio
(median over rounds of each round's paired ratio, and ratio of medians).

Around every run the engine's /metrics is scraped, and the engine's own mean
TTFT and TPOT (its histograms) and prefix-cache hit rate are printed per client:
if the engine saw the same TPOT for both clients' runs, a client-side TPOT gap
is measurement; if the engine saw it too, the two runs loaded it differently.

    python benchmarks/vs_vllm_bench.py --rounds 8 --rate 10
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from pytest_mi300x.config import DEFAULT_VLLM_BUILD
from pytest_mi300x.engines.base import LaunchSpec
from pytest_mi300x.engines.flags import DEFAULT_FLAGS
from pytest_mi300x.engines.provision import EngineEnvironment
from pytest_mi300x.engines.tiny_model import ensure_tiny_model
from pytest_mi300x.engines.vllm import VLLMEngine
from pytest_mi300x.hosts.cpu import CPU_HOST
from pytest_mi300x.load.figures import compute_figures
from pytest_mi300x.load.spread import run_load_sync
from pytest_mi300x.net import free_port
from pytest_mi300x.servers.process import ServerProcess
from pytest_mi300x.telemetry.engine import TelemetrySampler
from pytest_mi300x.workload.arrivals import Arrivals
from pytest_mi300x.workload.datasets import RandomDataset
from pytest_mi300x.workload.tokenizer import ServedTokenizer

FIGURES = ("request_throughput", "median_ttft_ms", "mean_tpot_ms")
SERVER = ("server_mean_ttft_ms", "server_mean_tpot_ms", "server_prefix_cache_hit_rate")

SERVED = "tiny-llama"

# Runs under the engine's python: vllm bench serve's own entry points.
_BENCH = """
import argparse, sys
from vllm.benchmarks.serve import add_cli_args, main
parser = argparse.ArgumentParser()
add_cli_args(parser)
main(parser.parse_args(sys.argv[1:]))
"""


def ours(spec: LaunchSpec, tokenizer: ServedTokenizer, args: argparse.Namespace,
         seed: int) -> dict[str, float]:
    dataset = RandomDataset(args.input_len, args.output_len, args.num_prompts, seed=seed)
    requests = dataset.build(tokenizer)
    run = run_load_sync(base_url=spec.base_url, api_key=spec.api_key, model=SERVED,
                        requests=requests, arrivals=Arrivals(request_rate=args.rate), seed=seed)
    figures = compute_figures(run)
    assert figures["failed"] == 0, figures
    return {k: float(figures[k]) for k in FIGURES}


def vllm_bench(python: Path, spec: LaunchSpec, model_path: Path, args: argparse.Namespace,
               seed: int, out_dir: Path) -> dict[str, float]:
    name = f"bench-{seed}.json"
    cmd = [str(python), "-c", _BENCH, "--backend", "vllm", "--base-url", spec.base_url,
           "--endpoint", "/v1/completions", "--model", SERVED, "--tokenizer", str(model_path),
           "--dataset-name", "random", "--random-input-len", str(args.input_len),
           "--random-output-len", str(args.output_len), "--num-prompts", str(args.num_prompts),
           "--request-rate", str(args.rate), "--seed", str(seed), "--ignore-eos",
           "--temperature", "0", "--disable-tqdm", "--save-result",
           "--result-dir", str(out_dir), "--result-filename", name]
    env = {**os.environ, "OPENAI_API_KEY": spec.api_key, "HF_HUB_OFFLINE": "1"}
    subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL)
    result = json.loads((out_dir / name).read_text())
    assert result["failed"] == 0, result
    return {k: float(result[k]) for k in FIGURES}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vllm-build", default=DEFAULT_VLLM_BUILD)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--sample-interval", type=float, default=0.0,
                        help="scrape /metrics during runs every N s (0: before/after only)")
    parser.add_argument("--num-prompts", type=int, default=100)
    parser.add_argument("--input-len", type=int, default=128)
    parser.add_argument("--output-len", type=int, default=64)
    parser.add_argument("--rate", type=float, default=20.0)
    args = parser.parse_args()
    if args.rounds % 2:
        parser.error(f"--rounds {args.rounds}: use an even number so each client goes first "
                     "equally often")

    with EngineEnvironment(args.vllm_build) as install, \
            tempfile.TemporaryDirectory(prefix="vs-vllm-bench-") as tmp:
        model = ensure_tiny_model(install)
        engine = VLLMEngine(install.python, install.build)
        spec = LaunchSpec(model=str(model.path), served_model_name=SERVED, host="127.0.0.1",
                          port=free_port(), api_key=secrets.token_urlsafe(16),
                          flag_set=DEFAULT_FLAGS,
                          extra_args=("--load-format", "dummy", *CPU_HOST.engine_args),
                          env=dict(CPU_HOST.env))
        server = ServerProcess(engine.command(spec),
                               env={**os.environ, **engine.environment(spec)},
                               log_path=Path(tmp) / "server.log",
                               ready_url=f"{spec.base_url}/health")
        with server:
            print(f"vLLM {engine.version(spec.base_url, spec.api_key)} ready in "
                  f"{server.startup_s:.1f} s", file=sys.stderr)
            tokenizer = ServedTokenizer(spec.base_url, spec.api_key, SERVED, model.vocab_size,
                                        model.special_ids)
            ours(spec, tokenizer, args, seed=10_000)  # warm-up, not measured
            mine: list[dict[str, float]] = []
            theirs: list[dict[str, float]] = []
            for r in range(args.rounds):
                order = ("ours", "bench") if r % 2 == 0 else ("bench", "ours")
                for who in order:
                    with TelemetrySampler(spec.base_url,
                                          interval=args.sample_interval) as telemetry:
                        if who == "ours":
                            got = ours(spec, tokenizer, args, seed=r)
                        else:
                            got = vllm_bench(install.python, spec, model.path, args,
                                             seed=r, out_dir=Path(tmp))
                    got.update({k: telemetry.figures.get(k, float("nan")) for k in SERVER})
                    (mine if who == "ours" else theirs).append(got)
    print(f"workload: random {args.input_len} in / {args.output_len} out, "
          f"{args.num_prompts} prompts, rate {args.rate}, {args.rounds} rounds (median shown)")
    print(f"{'figure':<22}{'pytest-mi300x':>15}{'vllm bench':>13}{'ratio':>8}")
    print(f"{'':<22}{'':>15}{'':>13}{'':>8}{'paired':>8}")
    for key in FIGURES:
        a = statistics.median(m[key] for m in mine)
        b = statistics.median(t[key] for t in theirs)
        paired = statistics.median(m[key] / t[key] for m, t in zip(mine, theirs, strict=True))
        print(f"{key:<22}{a:>15.2f}{b:>13.2f}{a / b:>8.3f}{paired:>8.3f}")
    print("the engine's own view of the same runs (its /metrics histograms):")
    for key in SERVER:
        a = statistics.median(m[key] for m in mine)
        b = statistics.median(t[key] for t in theirs)
        print(f"{key:<30}{a:>10.3f}{b:>13.3f}{a / b if b else float('nan'):>8.3f}")
    for key in (*FIGURES, *SERVER):
        print(f"  {key} per round: ours {[round(m[key], 2) for m in mine]} "
              f"bench {[round(t[key], 2) for t in theirs]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
