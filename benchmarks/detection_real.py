"""Detection on the real CPU engine: false alarms (A/A) and catch rates (A/B) of the gate.

Runs the suite as a user would, one `pytest` process (so one fresh vLLM server)
per instance, alternating A and B instances:

- A: the default engine build and flags.
- B: the same with a real slowdown given as engine env or engine args
  (`--slowdown-env KEY=VAL`, `--slowdown-arg='--max-num-seqs 4'`).

Each instance measures every selected test with 5 repetitions (what
`baselines refresh` stores). Then, per test and gated metric:

- A/A false alarms: every ordered pair of different A instances, the first's
  5 runs as the baseline and the second's first 3 as the candidate (a plain
  run's default), judged with the host's floors, as the gate does. With
  `--baseline-servers K` the baseline is every set of K A instances, judged as
  the band of K server starts (what `baselines refresh --servers K` stores),
  and the candidate every other A instance.
- 10% injected: the same pairs with the candidate made 10% worse (throughput
  x 0.9, latency x 1.1): the power at 10% on the real noise.
- A/B: every (A, B) pair: the catch rate of the real slowdown, with its size.
- Noise: coefficient of variation within one server and between servers
  (the spread of the per-instance medians), which the gate's per-run noise
  estimate cannot see.

    python benchmarks/detection_real.py --instances 5 \
        --slowdown-env VLLM_CPU_OMP_THREADS_BIND=nobind

Pairs share instances, so they are not independent trials: read the rates
with the instance count beside them.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from pytest_mi300x.hosts.cpu import CPU_HOST
from pytest_mi300x.judge.verdict import DEFAULT_FLOOR_PCT, GATED_METRICS, Kind, judge_band
from pytest_mi300x.results.files import read_results
from pytest_mi300x.results.metrics import METRIC_DIRECTIONS
from pytest_mi300x.results.stack import sent_as_burst

ROOT = Path(__file__).resolve().parents[1]
BASE_REPS, CAND_REPS = 5, 3
DEFAULT_SELECTION = "vllm-seed-default and (qps-16 or qps-1000)"
CALIBRATION_FLOORS = (5.6, 8.0, 10.0, 12.0, 15.0, 20.0, 25.0, 30.0, 40.0, 60.0)


def run_instance(out: Path, selection: str, extra: list[str]) -> float:
    cmd = [sys.executable, "-m", "pytest", str(ROOT / "suites" / "test_headline.py"),
           "-k", selection, "--repeats", str(BASE_REPS), "--results-dir", str(out),
           "--history-file", str(out / "history.jsonl"), "-q", "-p", "no:cacheprovider", *extra]
    started = time.monotonic()
    with (out.parent / f"{out.name}.log").open("w") as log:
        subprocess.run(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, check=False)
    return time.monotonic() - started


def load(folder: Path) -> dict[str, list[dict[str, float]]]:
    return {doc["test"]: [r["figures"] for r in doc["runs"] if not r.get("problems")]
            for doc in read_results(folder)}


def worsen(values: list[float], metric: str, pct: float) -> list[float]:
    factor = 1 + pct / 100 if METRIC_DIRECTIONS[metric] == "lower" else 1 - pct / 100
    return [v * factor for v in values]


def cv(values: list[float]) -> float:
    return statistics.stdev(values) / statistics.mean(values) * 100 if len(values) > 1 else 0.0


def columns(a_runs: list[dict[str, list[dict[str, float]]]],
            b_runs: list[dict[str, list[dict[str, float]]]], test: str, metric: str
            ) -> tuple[list[list[float]], list[list[float]]] | None:
    """Per-instance values of one metric: A with all runs, B with the candidate's runs."""
    a_sets = [x[test] for x in a_runs if len(x.get(test, [])) >= BASE_REPS]
    b_sets = [x[test] for x in b_runs if len(x.get(test, [])) >= CAND_REPS]
    if len(a_sets) < 2 or metric not in a_sets[0][0]:
        return None
    return ([[float(r[metric]) for r in reps] for reps in a_sets],
            [[float(r[metric]) for r in reps[:CAND_REPS]] for reps in b_sets])


@dataclass(frozen=True)
class Rates:
    """Regression verdicts among A/A pairs, A/A pairs made 10% worse, and A/B pairs."""

    aa: int
    injected: int
    pairs: int
    ab: int
    ab_pairs: int
    ratio: float

    @classmethod
    def of(cls, col: list[list[float]], bcol: list[list[float]], metric: str,
           floor: float, starts: int = 1) -> Rates:
        """Baselines of ``starts`` A instances each (judged by their band, as a baseline
        refreshed with ``--servers`` is) against every other A and every B instance."""
        def regressed(base: tuple[list[float], ...], cand: list[float]) -> bool:
            return judge_band(metric, base, cand, floor_pct=floor).kind is Kind.REGRESSION

        combos = list(itertools.combinations(range(len(col)), starts))
        pairs = [(tuple(col[i] for i in c), col[j][:CAND_REPS])
                 for c in combos for j in range(len(col)) if j not in c]
        ab = [(tuple(col[i] for i in c), cand) for c in combos for cand in bcol]
        ratios = [statistics.median(c) / statistics.median(b) for b in col for c in bcol]
        return cls(
            aa=sum(regressed(b, c) for b, c in pairs),
            injected=sum(regressed(b, worsen(c, metric, 10.0)) for b, c in pairs),
            pairs=len(pairs),
            ab=sum(regressed(b, c) for b, c in ab),
            ab_pairs=len(ab),
            ratio=statistics.median(ratios) if ratios else math.nan,
        )


def share(count: int, n: int) -> str:
    return f"{count:>3}/{n:<3}" + (f"{count / n * 100:>4.0f}%" if n else "    -")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instances", type=int, default=8, help="servers per variant")
    parser.add_argument("--slowdown-env", action="append", default=[], metavar="KEY=VAL")
    parser.add_argument("--slowdown-arg", action="append", default=[], metavar="ARGS")
    parser.add_argument("-k", dest="selection", default=DEFAULT_SELECTION)
    parser.add_argument("--out", type=Path, default=Path(".perf-results/detection"))
    parser.add_argument("--reuse", action="store_true",
                        help="analyse instances already in --out instead of running new ones")
    parser.add_argument("--baseline-servers", type=int, default=1, metavar="K",
                        help="server starts per baseline (K A instances judged as a band, as "
                             "`baselines refresh --servers K` stores them; default 1)")
    parser.add_argument("--floor", action="append", default=[], metavar="METRIC=PCT",
                        help="override a floor (default: the cpu host's floors)")
    args = parser.parse_args()
    slowdown = [*(f"--engine-env={e}" for e in args.slowdown_env),
                *(f"--engine-arg={a}" for a in args.slowdown_arg)]
    if not slowdown:
        parser.error("give the B variant's slowdown: --slowdown-env KEY=VAL or --slowdown-arg")
    floors, burst_floors = dict(CPU_HOST.floors), dict(CPU_HOST.burst_floors)
    for item in args.floor:
        metric, _, pct = item.partition("=")
        floors[metric] = burst_floors[metric] = float(pct)

    if not args.reuse:
        args.out.mkdir(parents=True, exist_ok=True)
        for i in range(args.instances):
            order = [("A", []), ("B", slowdown)]
            for variant, extra in order if i % 2 == 0 else order[::-1]:
                took = run_instance(args.out / f"{variant}{i}", args.selection, extra)
                print(f"instance {variant}{i}: {took:.0f} s", flush=True)
    instances: dict[str, list[dict[str, list[dict[str, float]]]]] = {"A": [], "B": []}
    for folder in sorted(args.out.glob("[AB]*")):
        if folder.is_dir():
            instances[folder.name[0]].append(load(folder))
    a_runs, b_runs = instances["A"], instances["B"]
    # The host's burst floors apply to tests sent as one burst, as in the gate.
    bursts = {doc["test"] for folder in args.out.glob("A*") if folder.is_dir()
              for doc in read_results(folder)
              if sent_as_burst(doc.get("workload", {}).get("scaled"))}

    def floor_for(test: str, metric: str) -> float:
        table = {**floors, **burst_floors} if test in bursts else floors
        return table.get(metric, DEFAULT_FLOOR_PCT)

    print(f"\n{len(a_runs)} A and {len(b_runs)} B instances (B: {' '.join(slowdown)}); "
          f"baselines of {args.baseline_servers} server start(s) x {BASE_REPS} runs vs "
          f"{CAND_REPS} candidate runs; floors: host cpu")
    tests = sorted(set().union(*(set(x) for x in a_runs)))
    header = (f"{'test':<44} {'metric':<22} {'floor':>6} {'CV in':>6} {'CV betw':>8} "
              f"{'A/A alarms':>13} {'10% caught':>13} {'B/A':>7} {'A/B caught':>13}")
    print(header)
    print("-" * len(header))
    cells = [(test, metric, cols) for test in tests for metric in sorted(GATED_METRICS)
             if (cols := columns(a_runs, b_runs, test, metric)) is not None]
    for test, metric, (col, bcol) in cells:
        floor = floor_for(test, metric)
        r = Rates.of(col, bcol, metric, floor, args.baseline_servers)
        within = statistics.median(cv(c) for c in col)
        between = cv([statistics.median(c) for c in col])
        ratio = f"{r.ratio:.3f}" if bcol else "-"
        print(f"{test.split('::')[-1][:44]:<44} {metric:<22} {floor:>5.1f}% "
              f"{within:>5.1f}% {between:>7.1f}% {share(r.aa, r.pairs):>13} "
              f"{share(r.injected, r.pairs):>13} {ratio:>7} {share(r.ab, r.ab_pairs):>13}")
    print("\nCalibration: the smallest floor with A/A alarms <= 1% of pairs, and its power at a "
          "10% (injected) and the real (A/B) slowdown")
    for test, metric, (col, bcol) in cells:
        name = f"  {test.split('::')[-1][:44]:<44} {metric:<22}"
        for floor in CALIBRATION_FLOORS:
            r = Rates.of(col, bcol, metric, floor, args.baseline_servers)
            if r.aa <= 0.01 * r.pairs:
                print(f"{name} floor {floor:>5.1f}%: A/A {share(r.aa, r.pairs)}, "
                      f"10% caught {share(r.injected, r.pairs)}, A/B caught "
                      f"{share(r.ab, r.ab_pairs)}")
                break
        else:
            print(f"{name} no floor up to {CALIBRATION_FLOORS[-1]}% keeps A/A alarms <= 1%")
    n_aa = math.comb(len(a_runs), args.baseline_servers) * (len(a_runs) - args.baseline_servers)
    bound = 1 - 0.05 ** (1 / max(1, n_aa))
    print(f"\nWith zero A/A alarms in {n_aa} pairs the one-sided 95% "
          f"upper bound on the false-alarm rate is about {bound * 100:.1f}% (pairs share "
          "instances, so fewer effective trials).")
    json.dump({"slowdown": slowdown, "instances": {k: len(v) for k, v in instances.items()}},
              (args.out / "summary.json").open("w"))
    return 0 if a_runs else 1


if __name__ == "__main__":
    sys.exit(main())
