"""Side by side: this harness's client and `vllm bench serve` on one real vLLM server.

Starts the CPU engine on the tiny model (provisioned, and placed, as the plugin does: vLLM's
compute threads on their CPUs, the server's front end and both clients on the rest; `--unplaced`
leaves all to the OS), then runs the same random workload (same lengths, count, rate and seed:
the same prompts' lengths and the same send schedule) with both clients, alternating which
goes first each round. Per figure it prints each client's median over rounds, their ratio,
and the geometric mean of the rounds' paired ratios with its 95% interval (each round ran
both clients back to back on the same server, so the machine's drift cancels in a pair).

Around every run the engine's /metrics is read (through the engine's `metric_series`) and its
own means of TTFT, TPOT and E2E latency printed per client. Each client figure's ratio then
splits in two: how the two clients measured the same engine work (client figure over the
engine's, ours against theirs: 1.0 when they measure alike) and how fast the engine served
each client's load (the engine's figure, ours against theirs: 1.0 when the clients loaded it
alike). Where the pacing went (lead to the first send, lateness against the schedule, tail
after the last send) explains a throughput ratio: throughput is requests over duration.

    python benchmarks/vs_vllm_bench.py --rounds 6
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
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np

from pytest_mi300x.config import DEFAULT_VLLM_BUILD
from pytest_mi300x.engines.base import LaunchSpec
from pytest_mi300x.engines.flags import DEFAULT_FLAGS
from pytest_mi300x.engines.provision import EngineEnvironment
from pytest_mi300x.engines.tiny_model import ensure_tiny_model
from pytest_mi300x.engines.vllm import VLLMEngine
from pytest_mi300x.hosts.cpu import CPU_HOST
from pytest_mi300x.hosts.placement import Placement, pinned
from pytest_mi300x.load.figures import compute_figures
from pytest_mi300x.load.spread import run_load_sync
from pytest_mi300x.net import free_port
from pytest_mi300x.servers.process import ServerProcess
from pytest_mi300x.telemetry.engine import TelemetrySampler
from pytest_mi300x.workload.arrivals import Arrivals
from pytest_mi300x.workload.datasets import PromptRequest, RandomDataset
from pytest_mi300x.workload.tokenizer import ServedTokenizer

FIGURES = ("request_throughput", "median_ttft_ms", "mean_tpot_ms", "mean_ttft_ms")
PACING = ("duration", "lead_ms", "late_ms", "tail_ms", "mean_e2el_ms", "input_tokens")
"""Where each client's duration went: ``lead_ms`` from its run start to its first send,
``late_ms`` how late the median send left against the seed's schedule (both clients draw the
same one), ``tail_ms`` from the last send to the last completion; ``input_tokens`` the
prompt tokens the server counted."""
SERVER = ("server_mean_ttft_ms", "server_mean_tpot_ms", "server_mean_e2el_ms",
          "server_mean_queue_time_ms", "server_prompt_tokens", "server_generation_tokens",
          "server_prefix_cache_hit_rate")
REQUIRED = SERVER[:2]
"""Without these the engine view cannot arbitrate: the run stops."""
E2E = {"e2el_sum": "vllm:e2e_request_latency_seconds_sum",
       "e2el_count": "vllm:e2e_request_latency_seconds_count"}
"""Read besides the engine's series: its own end-to-end latency, from its arrival to its
last token (the client's E2E adds the HTTP path both ways)."""
SPLIT = (("mean_ttft_ms", "server_mean_ttft_ms"), ("mean_tpot_ms", "server_mean_tpot_ms"),
         ("mean_e2el_ms", "server_mean_e2el_ms"))

SERVED = "tiny-llama"

# Runs under the engine's python: vllm bench serve's own entry points.
_BENCH = """
import argparse, sys
from vllm.benchmarks.serve import add_cli_args, main
parser = argparse.ArgumentParser()
add_cli_args(parser)
main(parser.parse_args(sys.argv[1:]))
"""


def engine_view(base_url: str, series: Mapping[str, str], interval: float,
                run: Callable[[], dict[str, float]]) -> dict[str, float]:
    """One client's run with the engine's own view of it: its /metrics counters and
    histograms before and after, read through the engine's ``metric_series`` (without them
    the sampler reads nothing, and the column printed nan in every round). A run whose
    engine view is missing stops the benchmark: that column is the arbiter between load
    and measurement."""
    with TelemetrySampler(base_url, {**series, **E2E}, interval=interval) as telemetry:
        got = run()
    missing = [k for k in REQUIRED if k not in telemetry.figures]
    if missing:
        raise RuntimeError(f"the engine's /metrics at {base_url} gave no {', '.join(missing)} "
                           f"(errors: {'; '.join(telemetry.errors) or 'none'})")
    figures = dict(telemetry.figures)
    before, after = telemetry.before, telemetry.after
    count = after.get("e2el_count", 0.0) - before.get("e2el_count", 0.0)
    if count > 0:
        figures["server_mean_e2el_ms"] = 1000 * (after["e2el_sum"] - before["e2el_sum"]) / count
    return {**got, **{k: figures.get(k, math.nan) for k in SERVER}}


def pacing(sends: list[float], ends: list[float], schedule: list[float], duration: float,
           input_tokens: float) -> dict[str, float]:
    """``PACING`` from each request's send and last-chunk times (seconds from the run's
    start) and the schedule's offsets, in request order."""
    first = min(sends)
    late = statistics.median((s - first) - (o - schedule[0])
                             for s, o in zip(sends, schedule, strict=True))
    return {"duration": duration, "lead_ms": 1000 * first, "late_ms": 1000 * late,
            "tail_ms": 1000 * (max(ends) - max(sends)),
            "mean_e2el_ms": 1000 * statistics.fmean(e - s for s, e in zip(sends, ends,
                                                                           strict=True)),
            "input_tokens": input_tokens}


def schedule(args: argparse.Namespace, seed: int) -> list[float]:
    return Arrivals(request_rate=args.rate).offsets(args.num_prompts, seed)


def ours(spec: LaunchSpec, requests: list[PromptRequest], args: argparse.Namespace,
         seed: int) -> dict[str, float]:
    run = run_load_sync(base_url=spec.base_url, api_key=spec.api_key, model=SERVED,
                        requests=requests, arrivals=Arrivals(request_rate=args.rate), seed=seed)
    figures = compute_figures(run)
    assert figures["failed"] == 0, figures
    sends = [r.send_time for r in run.records]
    ends = [r.send_time + (r.latency or 0.0) for r in run.records]
    return {**{k: float(figures[k]) for k in FIGURES},
            **pacing(sends, ends, schedule(args, seed), run.duration,
                     float(figures["total_input_tokens"])),
            "client_cpu_s": run.client_cpu_time}


def vllm_bench(python: Path, spec: LaunchSpec, model_path: Path, args: argparse.Namespace,
               seed: int, out_dir: Path) -> dict[str, float]:
    name = f"bench-{seed}.json"
    cmd = [str(python), "-c", _BENCH, "--backend", "vllm", "--base-url", spec.base_url,
           "--endpoint", "/v1/completions", "--model", SERVED, "--tokenizer", str(model_path),
           "--dataset-name", "random", "--random-input-len", str(args.input_len),
           "--random-output-len", str(args.output_len), "--num-prompts", str(args.num_prompts),
           "--request-rate", str(args.rate), "--seed", str(seed), "--ignore-eos",
           "--temperature", "0", "--disable-tqdm", "--save-result", "--save-detailed",
           "--result-dir", str(out_dir), "--result-filename", name]
    env = {**os.environ, "OPENAI_API_KEY": spec.api_key, "HF_HUB_OFFLINE": "1"}
    child = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL)
    cpu = CpuTrace(child.pid)
    if child.wait() != 0:
        raise subprocess.CalledProcessError(child.returncode, cmd)
    cpu.stop()
    result = json.loads((out_dir / name).read_text())
    assert result["failed"] == 0, result
    # start_times are perf_counter values (CLOCK_MONOTONIC); its run started `duration`
    # before its last completion.
    ends_abs = [s + lat for s, lat in zip(result["start_times"], result["latencies"],
                                          strict=True)]
    began = max(ends_abs) - result["duration"]
    sends = [s - began for s in result["start_times"]]
    ends = [e - began for e in ends_abs]
    return {**{k: float(result[k]) for k in FIGURES},
            **pacing(sends, ends, schedule(args, seed), float(result["duration"]),
                     float(result["total_input_tokens"])),
            "client_cpu_s": cpu.between(began, began + float(result["duration"]))}


class CpuTrace:
    """A process's CPU seconds read from /proc 20 times a second, so that the part spent in
    a window (vllm bench serve's run, not its imports) can be told: the load a client
    offers is its requests and its own CPU, on cores it shares with the server."""

    def __init__(self, pid: int) -> None:
        self.pid, self.points = pid, [(time.perf_counter(), 0.0)]
        self.tick = os.sysconf("SC_CLK_TCK")
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            try:
                fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                return
            self.points.append((time.perf_counter(),
                                (int(fields[11]) + int(fields[12])) / self.tick))

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(1)

    def between(self, start: float, end: float) -> float:
        times = [t for t, _ in self.points]
        cpus = [c for _, c in self.points]
        return float(np.interp(end, times, cpus) - np.interp(start, times, cpus))


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
    parser.add_argument("--unplaced", action="store_true",
                        help="leave the engine, its front end and the clients to the OS "
                             "(default: placed as the plugin places them on the cpu host)")
    args = parser.parse_args()
    if args.rounds % 2:
        parser.error(f"--rounds {args.rounds}: use an even number so each client goes first "
                     "equally often")

    with EngineEnvironment(args.vllm_build) as install, \
            tempfile.TemporaryDirectory(prefix="vs-vllm-bench-") as tmp:
        model = ensure_tiny_model(install)
        engine = VLLMEngine(install.python, install.build)
        place = None if args.unplaced else Placement.for_this_machine(CPU_HOST.frontend_cpus)
        spec = LaunchSpec(model=str(model.path), served_model_name=SERVED, host="127.0.0.1",
                          port=free_port(), api_key=secrets.token_urlsafe(16),
                          flag_set=DEFAULT_FLAGS,
                          extra_args=("--load-format", "dummy", *CPU_HOST.engine_args),
                          env=dict(CPU_HOST.env),
                          engine_cpus=place.engine_cpus if place else ())
        server = ServerProcess(engine.command(spec),
                               env={**os.environ, **engine.environment(spec)},
                               log_path=Path(tmp) / "server.log",
                               ready_url=f"{spec.base_url}/health",
                               cpus=place.frontend_cpus if place else ())
        print(f"placement: {place.describe() if place else 'none (the OS places all)'}",
              file=sys.stderr)
        # Both clients run on the front end's CPUs, as the plugin's client does (the vllm
        # bench process inherits the set).
        with server, pinned(place.frontend_cpus if place else None):
            print(f"vLLM {engine.version(spec.base_url, spec.api_key)} ready in "
                  f"{server.startup_s:.1f} s", file=sys.stderr)
            tokenizer = ServedTokenizer(spec.base_url, spec.api_key, SERVED, model.vocab_size,
                                        model.special_ids)
            def prompts(seed: int) -> list[PromptRequest]:
                return RandomDataset(args.input_len, args.output_len, args.num_prompts,
                                     seed=seed).build(tokenizer)

            ours(spec, prompts(10_000), args, seed=10_000)  # warm-up, not measured
            mine: list[dict[str, float]] = []
            theirs: list[dict[str, float]] = []
            for r in range(args.rounds):
                order = ("ours", "bench") if r % 2 == 0 else ("bench", "ours")
                requests = prompts(r)  # built before either run: /tokenize is not load
                for who in order:
                    def run(who: str = who, r: int = r,
                            requests: list[PromptRequest] = requests) -> dict[str, float]:
                        if who == "ours":
                            return ours(spec, requests, args, seed=r)
                        return vllm_bench(install.python, spec, model.path, args, seed=r,
                                          out_dir=Path(tmp))

                    got = engine_view(spec.base_url, engine.metric_series,
                                      args.sample_interval, run)
                    (mine if who == "ours" else theirs).append(got)
    print(f"workload: random {args.input_len} in / {args.output_len} out, "
          f"{args.num_prompts} prompts, rate {args.rate}, {args.rounds} rounds (median shown)")
    print(f"{'figure':<30}{'pytest-mi300x':>13}{'vllm bench':>12}{'ratio':>7}"
          f"{'paired (95% interval)':>26}")
    rows(FIGURES, mine, theirs)
    print("where the time went (pacing; ms unless named):")
    rows(PACING, mine, theirs)
    print("the engine's own view of the same runs (its /metrics histograms):")
    rows(SERVER, mine, theirs)
    print("each paired ratio split: measurement (client over engine, ours against theirs) x "
          "load (the engine's figure, ours against theirs):")
    for client, server in SPLIT:
        measured = [(m[client] / m[server]) / (t[client] / t[server])
                    for m, t in zip(mine, theirs, strict=True)]
        load = [m[server] / t[server] for m, t in zip(mine, theirs, strict=True)]
        print(f"  {client:<28} measurement {interval(measured)}   load {interval(load)}")
    print("each client's own CPU during its runs (the load it adds on the cores it shares):")
    rows(("client_cpu_s",), mine, theirs)
    for key in (*FIGURES, *PACING, *SERVER):
        print(f"  {key} per round: ours {[round(m[key], 2) for m in mine]} "
              f"bench {[round(t[key], 2) for t in theirs]}")
    return 0


def interval(ratios: list[float]) -> str:
    """The geometric mean of paired ratios with its 95% t interval (rounds are the unit)."""
    logs = [math.log(r) for r in ratios if r > 0 and math.isfinite(r)]
    if len(logs) < 2:
        return "n/a"
    from scipy.stats import t

    mean = statistics.fmean(logs)
    half = t.ppf(0.975, len(logs) - 1) * statistics.stdev(logs) / math.sqrt(len(logs))
    return f"{math.exp(mean):.3f} ({math.exp(mean - half):.3f}..{math.exp(mean + half):.3f})"


def rows(keys: tuple[str, ...], mine: list[dict[str, float]],
         theirs: list[dict[str, float]]) -> None:
    """Median of each client's rounds, their ratio, and the rounds' paired ratios (each
    round ran both clients back to back on the same server)."""
    for key in keys:
        a = statistics.median(m[key] for m in mine)
        b = statistics.median(t[key] for t in theirs)
        paired = interval([m[key] / t[key] if t[key] else math.nan
                           for m, t in zip(mine, theirs, strict=True)])
        print(f"{key:<30}{a:>13.2f}{b:>12.2f}{a / b if b else math.nan:>7.3f}{paired:>26}")


if __name__ == "__main__":
    sys.exit(main())
