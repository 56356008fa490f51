"""The engine's own start-to-start spread, measured with `vllm bench serve` (not this
project's client): the machine's noise today, to report beside any figure measured on it.

Starts the CPU engine on the tiny model `--starts` times (a fresh server each, vLLM's default
flags, the cpu host's env and placement off), and on each start runs `vllm bench serve` on a
fixed burst (`--num-prompts` random prompts of `--input-len` in / `--output-len` out, sent at
once) once as a warm-up and `--runs` times measured. Prints each start's median and the CV
of request throughput, median TTFT and mean TPOT within starts and between starts.

    python benchmarks/engine_spread.py --starts 3 --runs 3
"""

from __future__ import annotations

import argparse
import json
import math
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from pytest_mi300x.config import DEFAULT_VLLM_BUILD
from pytest_mi300x.engines.base import LaunchSpec
from pytest_mi300x.engines.flags import DEFAULT_FLAGS
from pytest_mi300x.engines.provision import EngineEnvironment
from pytest_mi300x.engines.tiny_model import ensure_tiny_model
from pytest_mi300x.engines.vllm import VLLMEngine
from pytest_mi300x.hosts.cpu import CPU_HOST
from pytest_mi300x.net import free_port
from pytest_mi300x.servers.process import ServerProcess

FIGURES = ("request_throughput", "median_ttft_ms", "mean_tpot_ms")
SERVED = "tiny-llama"
_BENCH = """
import argparse, sys
from vllm.benchmarks.serve import add_cli_args, main
parser = argparse.ArgumentParser()
add_cli_args(parser)
main(parser.parse_args(sys.argv[1:]))
"""


def bench(python: Path, spec: LaunchSpec, model: Path, args: argparse.Namespace, seed: int,
          out: Path) -> dict[str, float]:
    name = f"bench-{seed}.json"
    cmd = [str(python), "-c", _BENCH, "--backend", "vllm", "--base-url", spec.base_url,
           "--endpoint", "/v1/completions", "--model", SERVED, "--tokenizer", str(model),
           "--dataset-name", "random", "--random-input-len", str(args.input_len),
           "--random-output-len", str(args.output_len), "--num-prompts", str(args.num_prompts),
           "--request-rate", "inf", "--seed", str(seed), "--ignore-eos", "--temperature", "0",
           "--disable-tqdm", "--save-result", "--result-dir", str(out),
           "--result-filename", name]
    env = {**os.environ, "OPENAI_API_KEY": spec.api_key, "HF_HUB_OFFLINE": "1"}
    subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    result = json.loads((out / name).read_text())
    if result["failed"]:
        raise SystemExit(f"vllm bench serve: {result['failed']} requests failed")
    return {k: float(result[k]) for k in FIGURES}


def cv(values: list[float]) -> float:
    logs = [math.log(v) for v in values]
    return math.expm1(statistics.stdev(logs)) * 100 if len(logs) > 1 else math.nan


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vllm-build", default=DEFAULT_VLLM_BUILD)
    parser.add_argument("--starts", type=int, default=3)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--num-prompts", type=int, default=100)
    parser.add_argument("--input-len", type=int, default=64)
    parser.add_argument("--output-len", type=int, default=64)
    args = parser.parse_args()
    starts: list[list[dict[str, float]]] = []
    with EngineEnvironment(args.vllm_build) as install, \
            tempfile.TemporaryDirectory(prefix="engine-spread-") as tmp:
        model = ensure_tiny_model(install)
        engine = VLLMEngine(install.python, install.build)
        for start in range(args.starts):
            spec = LaunchSpec(model=str(model.path), served_model_name=SERVED,
                              host="127.0.0.1", port=free_port(),
                              api_key=secrets.token_urlsafe(16), flag_set=DEFAULT_FLAGS,
                              extra_args=("--load-format", "dummy", *CPU_HOST.engine_args),
                              env=dict(CPU_HOST.env))
            server = ServerProcess(engine.command(spec),
                                   env={**os.environ, **engine.environment(spec)},
                                   log_path=Path(tmp) / f"server-{start}.log",
                                   ready_url=f"{spec.base_url}/health")
            began = time.monotonic()
            with server:
                ready = time.monotonic() - began
                bench(install.python, spec, model.path, args, 10_000 + start, Path(tmp))
                runs = [bench(install.python, spec, model.path, args, start * 100 + r,
                              Path(tmp)) for r in range(args.runs)]
            starts.append(runs)
            print(f"start {start + 1}: ready in {ready:.0f} s; "
                  + "; ".join(f"{k} " + ", ".join(f"{r[k]:.4g}" for r in runs)
                              for k in FIGURES), flush=True)
    print(f"vllm bench serve, {args.vllm_build}, random {args.input_len}/{args.output_len}, "
          f"{args.num_prompts} prompts as one burst; {args.starts} starts x {args.runs} runs")
    print(f"{'figure':<20}{'start medians':>34}{'CV within':>11}{'CV between':>12}")
    for key in FIGURES:
        medians = [statistics.median(r[key] for r in runs) for runs in starts]
        within = statistics.fmean(cv([r[key] for r in runs]) for runs in starts)
        print(f"{key:<20}{', '.join(f'{m:.4g}' for m in medians):>34}{within:>10.1f}%"
              f"{cv(medians):>11.1f}%")
    return 0


if __name__ == "__main__":
    sys.exit(main())
