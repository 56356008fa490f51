"""Monte Carlo of an A/B as `pytest-mi300x ab` runs it: the real HeadToHead procedure (ABBA
starts, the verdict rule, early stopping), fed by simulated server starts.

    python benchmarks/ab_sim.py [--trials 2000] [--between 1.0 --within 1.0 ...]

A start draws its own offset (start-to-start noise, CV `between`) and each of its runs a
little more (`within`); a build 10% slower is 0.9x on throughput (1/0.9 on latency). For
each noise level it prints the share of A/A pairs called a regression (false alarms), the
share of 10% slowdowns caught, and the starts each side used on average. The rule's goal:
at most 1% false alarms and at least 95% of 10% slowdowns caught.
"""

from __future__ import annotations

import argparse
import math
import random
import statistics
import sys

from pytest_mi300x.ab.builds import parse_build
from pytest_mi300x.ab.headtohead import HeadToHead, regressed
from pytest_mi300x.ab.starts import Record, Runs, Start

TEST = "sim::test"


class Simulated:
    """Starts of builds with known speeds (the same shape as the engine's noise)."""

    def __init__(self, speed: dict[str, float], rng: random.Random, between: float,
                 within: float, runs: int, floor: float) -> None:
        self.speed, self.rng = speed, rng
        self.between, self.within, self.runs, self.floor = between, within, runs, floor

    def __call__(self, build, index: int) -> Start:
        offset = self.rng.gauss(0, self.between)
        reps = []
        for _ in range(self.runs):
            f = self.speed[build.name] * math.exp(offset + self.rng.gauss(0, self.within))
            reps.append({"request_throughput": 100 * f, "median_ttft_ms": 50 / f})
        limits = {"request_throughput": 5.0, "median_ttft_ms": 5.0}
        noise = {k: self.floor for k in limits} if self.floor else {}
        return Start(build.name, index, "sim", 0, 0.0, {TEST: Runs(reps, limits, noise)})


def trial(slowdown: float, rng: random.Random, args: argparse.Namespace,
          between: float, within: float) -> tuple[bool, int]:
    a, b = parse_build("a==1"), parse_build("a==1 +label b")
    runner = Simulated({a.name: 1.0, b.name: 1.0 - slowdown}, rng, between, within,
                       args.runs, args.host_noise)
    record = Record(None, {})
    verdicts = HeadToHead(a, b, runner, record, min_starts=args.starts,
                          max_starts=args.max_starts, progress=lambda _: None).run()
    return bool(regressed(verdicts)), len(record.of(a))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=2000)
    parser.add_argument("--starts", type=int, default=3)
    parser.add_argument("--max-starts", type=int, default=6)
    parser.add_argument("--runs", type=int, default=3, help="runs per start")
    parser.add_argument("--host-noise", type=float, default=0.0,
                        help="the host's recorded start-to-start noise, percent (0: none)")
    parser.add_argument("--noise", action="append", default=[], metavar="BETWEEN:WITHIN",
                        help="CVs in percent (default: 0.5:1 1:1 1:3 2:2 3:3 5:5)")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    levels = [tuple(float(x) / 100 for x in n.split(":")) for n in args.noise] or \
        [(0.005, 0.01), (0.01, 0.01), (0.01, 0.03), (0.02, 0.02), (0.03, 0.03), (0.05, 0.05)]
    rng = random.Random(args.seed)
    print(f"{args.trials} trials per cell; {args.starts} to {args.max_starts} starts per "
          f"build, {args.runs} runs per start, host noise {args.host_noise or 'none'}")
    print(f"{'between':>8} {'within':>7} {'A/A alarms':>11} {'10% caught':>11} "
          f"{'starts A/A':>11} {'starts 10%':>11}")
    for between, within in levels:
        aa = [trial(0.0, rng, args, between, within) for _ in range(args.trials)]
        ab = [trial(0.10, rng, args, between, within) for _ in range(args.trials)]
        alarms, caught = sum(r for r, _ in aa) / len(aa), sum(r for r, _ in ab) / len(ab)
        used_aa, used_ab = statistics.fmean(n for _, n in aa), statistics.fmean(n for _, n in ab)
        print(f"{between:>7.1%} {within:>7.1%} {alarms:>11.2%} {caught:>11.1%} "
              f"{used_aa:>11.2f} {used_ab:>11.2f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
