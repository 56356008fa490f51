"""Where the cpu host's noise comes from: run-to-run and start-to-start spread of each figure,
for workloads of several sizes and shapes, under several engine settings (placement,
threads), on the real engine through this project's own client.

    python benchmarks/noise_sources.py --starts 4 [--variant default --variant nobind ...]
        [--out /tmp/noise.json] [--reuse /tmp/noise.json]

Each server start serves every workload in turn (one warm-up run, then --repeats measured
runs each). Per workload and figure it prints the median, the CV of runs within a start
(pooled), the CV of the start medians, and how long one run took. Run it on a quiet
machine: nothing else running, no test session, no other engine.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from pytest_mi300x import DEFAULT_FLAGS, Arrivals, RandomDataset, Workload
from pytest_mi300x.config import Settings
from pytest_mi300x.hosts.cpu import CPU_HOST
from pytest_mi300x.hosts.profile import WorkloadScale
from pytest_mi300x.session import PerfSession

FIGURES = ("request_throughput", "output_throughput", "median_ttft_ms", "mean_ttft_ms",
           "median_tpot_ms", "mean_tpot_ms", "median_e2el_ms", "server_mean_ttft_ms",
           "server_mean_tpot_ms")

WORKLOADS: dict[str, Workload] = {
    # what the suites' headline bursts were scaled to (40 prompts)
    "burst-40": Workload(RandomDataset(64, 64, 40), Arrivals()),
    "burst-200": Workload(RandomDataset(64, 64, 200), Arrivals()),
    "burst-800": Workload(RandomDataset(64, 64, 800), Arrivals()),
    "burst-1600": Workload(RandomDataset(64, 64, 1600), Arrivals()),
    # all sent at once, but at most N in flight (the client's cap): a steady batch
    "conc-16-400": Workload(RandomDataset(64, 64, 400), Arrivals(max_concurrency=16)),
    "conc-32-800": Workload(RandomDataset(64, 64, 800), Arrivals(max_concurrency=32)),
    # paced: a new Poisson schedule per run, and the same schedule every run
    "poisson-4-40-fixed": Workload(RandomDataset(64, 64, 40), Arrivals(request_rate=4.0, seed=0)),
    "poisson-8-160": Workload(RandomDataset(64, 64, 160), Arrivals(request_rate=8.0)),
    "poisson-8-160-fixed": Workload(RandomDataset(64, 64, 160),
                                    Arrivals(request_rate=8.0, seed=0)),
}

VARIANTS: dict[str, dict[str, Any]] = {
    "default": {},
    "nobind": {"engine_env": (("VLLM_CPU_OMP_THREADS_BIND", "nobind"),)},
    "bind-core1": {"engine_env": (("VLLM_CPU_OMP_THREADS_BIND", "1"),)},
    "bind-core0": {"engine_env": (("VLLM_CPU_OMP_THREADS_BIND", "0"),)},
    "nice0": {"engine_nice": 0},
}


def measure(variant: str, starts: int, repeats: int, names: list[str]) -> list[dict[str, Any]]:
    opts = VARIANTS[variant]
    host = replace(CPU_HOST, scale=WorkloadScale(),
                   engine_nice=opts.get("engine_nice", CPU_HOST.engine_nice))
    rows = []
    for start in range(starts):
        with tempfile.TemporaryDirectory() as tmp:
            settings = Settings(repeats=repeats, engine_env=opts.get("engine_env", ()),
                                baselines_dir=Path(tmp) / "none", run_id=f"noise-{variant}")
            t0 = time.monotonic()
            with PerfSession(settings, host, Path(tmp), progress=lambda _: None) as session:
                server = session.server("vllm", "llama-3.1-70b", DEFAULT_FLAGS)
                started = time.monotonic() - t0
                for name in names:
                    perf = session.measurer(server, f"noise::{name}", "llama-3.1-70b")
                    result = perf.run(WORKLOADS[name])
                    for rep in result.repetitions:
                        figures = {k: v for k, v in rep.figures.items() if k in FIGURES
                                   or k == "duration"}
                        figures.update({k: v for k, v in rep.run.server.get("figures", {}).items()
                                        if k in FIGURES})
                        rows.append({"variant": variant, "start": start, "workload": name,
                                     "start_s": started, **figures})
        print(f"{variant}: start {start + 1}/{starts} done ({started:.0f} s to ready)",
              file=sys.stderr, flush=True)
    return rows


def cv(values: list[float]) -> float:
    if len(values) < 2 or statistics.fmean(values) == 0:
        return math.nan
    return statistics.stdev(values) / statistics.fmean(values) * 100


def summarise(rows: list[dict[str, Any]]) -> None:
    keys = sorted({(r["variant"], r["workload"]) for r in rows})
    print(f"{'variant':<11} {'workload':<20} {'figure':<20} {'median':>9} {'CV in':>6} "
          f"{'CV betw':>7} {'run s':>6}")
    for variant, workload in keys:
        mine = [r for r in rows if r["variant"] == variant and r["workload"] == workload]
        starts = sorted({r["start"] for r in mine})
        run_s = statistics.median(r["duration"] for r in mine)
        for figure in FIGURES:
            per = [[r[figure] for r in mine if r["start"] == s and figure in r] for s in starts]
            per = [p for p in per if p]
            if not per:
                continue
            within = [cv(p) for p in per if len(p) > 1]
            between = cv([statistics.median(p) for p in per])
            print(f"{variant:<11} {workload:<20} {figure:<20} "
                  f"{statistics.median(v for p in per for v in p):>9.4g} "
                  f"{statistics.fmean(within) if within else math.nan:>5.1f}% "
                  f"{between:>6.1f}% {run_s:>6.1f}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--starts", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--variant", action="append", choices=sorted(VARIANTS))
    parser.add_argument("--workload", action="append", choices=sorted(WORKLOADS))
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--reuse", type=Path, default=None,
                        help="summarise a saved --out file instead of measuring")
    args = parser.parse_args()
    if args.reuse:
        rows = json.loads(args.reuse.read_text())
    else:
        rows = []
        for variant in args.variant or ["default"]:
            rows += measure(variant, args.starts, args.repeats,
                            args.workload or list(WORKLOADS))
            if args.out:
                args.out.write_text(json.dumps(rows))
    summarise(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
