"""Monte Carlo of the verdict rule as it runs: `pytest-mi300x ab` (ABBA starts, balanced looks
that spend the budget, Holm over a test's gated families) and the nightly gate (one start
against a baseline of 3, the session's 5% split over its gated tests), fed by simulated
server starts at given noise.

    python benchmarks/ab_sim.py [--trials 1000] [--noise BETWEEN:WITHIN ...] [--tests 26]
        [--drift PCT] [--drift-shape walk|wave] [--rule shipped --rule unpaired] [--no-gate]

A start draws its own offset (start-to-start noise, CV `between`) and each of its runs a
little more (`within`); a build 10% slower is 0.9x on throughput (1/0.9 on latency). Per
noise level it prints, for `ab` (3 to 6 starts a side) and for the gate:

- A/A: the share of unchanged pairs called a regression (per test), and for the gate the
  share of nights of `--tests` unchanged tests with at least one red test;
- 10%: the share of 10% slowdowns caught (on any gated metric; "tput", on the throughput
  itself, the power a verdict's resolution speaks of), and the share of tests that can gate
  (resolve a 10% change at 95% power) with the starts they have;
- exits: for `ab`, how many A/A runs ended "no change" (exit 0) and "undecided" (exit 3);
- needs: the median over the 10% runs of the starts a side `ab` says a 10% change needs
  (its throughput verdict at the last look); `--max-starts` at that count shows whether an
  `ab` that long does catch 95%.

`--drift` adds a machine that wanders while an `ab` runs, shared by whichever build starts
next (what the A/A runs on a shared 2-core machine show): `--drift-shape walk` (default), a
random walk of that CV a start; `wave`, a machine that slows down by that much and recovers
(or the reverse) over the `ab`'s longest run, from a random phase.
`--stalls 10:25` makes one start in ten 25% slower for its whole life (the heavy tail real
starts on shared machines show, which a normal model of the noise leaves out).
`--rule unpaired` judges an `ab` on the two sides' starts as independent samples instead of
with the machine's drift fitted (the shipped rule), for a side-by-side comparison of the two.
Run on another checkout (`PYTHONPATH=that/checkout python benchmarks/ab_sim.py ...`) it
simulates that checkout's rule: how the figures before and after a change are made.

Goals (issue 18): at most 1% false failures per test and 5% per night, and 90% of 10%
slowdowns caught wherever the test says it can gate.
"""

from __future__ import annotations

import argparse
import math
import random
import statistics
import sys
from collections.abc import Callable

from pytest_mi300x.ab import headtohead
from pytest_mi300x.ab.builds import parse_build
from pytest_mi300x.ab.headtohead import HeadToHead
from pytest_mi300x.ab.starts import Record, Runs, Start
from pytest_mi300x.judge.multiplicity import per_test_alpha
from pytest_mi300x.judge.verdict import judge_all

TEST = "sim::test"
FLOORS = {"request_throughput": 5.0, "output_throughput": 5.0, "median_ttft_ms": 5.0,
          "median_tpot_ms": 5.0}


class Simulated:
    """Starts of builds with known speeds (the same shape as the engine's noise)."""

    def __init__(self, speed: dict[str, float], rng: random.Random, between: float,
                 within: float, runs: int, host_noise: float, drift: float = 0.0,
                 stalls: tuple[float, float] = (0.0, 0.0), shape: str = "walk",
                 period: int = 12) -> None:
        self.speed, self.rng, self.drift, self.level = speed, rng, drift, 0.0
        self.stalls, self.shape, self.period, self.done = stalls, shape, period, 0
        self.phase = rng.uniform(0, 2 * math.pi)
        self.between, self.within, self.runs, self.host_noise = between, within, runs, host_noise

    def reps(self, speed: float, runs: int) -> list[dict[str, float]]:
        # TTFT and TPOT move with throughput but carry noise of their own.
        offset = [self.rng.gauss(0, self.between) for _ in range(3)]
        if self.rng.random() < self.stalls[0]:  # a start that lives its life slowed down
            offset = [o + math.log(1 - self.stalls[1]) for o in offset]
        out = []
        for _ in range(runs):
            f = [speed * math.exp(o + self.rng.gauss(0, self.within)) for o in offset]
            out.append({"request_throughput": 100 * f[0], "output_throughput": 6400 * f[0],
                        "median_ttft_ms": 50 / f[1], "median_tpot_ms": 4 / f[2]})
        return out

    def __call__(self, build, index: int) -> Start:  # noqa: ANN001
        noise = dict.fromkeys(FLOORS, self.host_noise) if self.host_noise else {}
        # The machine, whichever build runs: a random walk, or a slow-down and recovery.
        if self.shape == "walk":
            self.level += self.rng.gauss(0, self.drift)
        else:
            self.level = self.drift * math.sin(2 * math.pi * self.done / self.period
                                               + self.phase)
        self.done += 1
        speed = self.speed[build.name] * math.exp(self.level)
        return Start(build.name, index, "sim", 0, 0.0,
                     {TEST: Runs(self.reps(speed, self.runs), dict(FLOORS),
                                 noise)})


def stalls(args: argparse.Namespace) -> tuple[float, float]:
    share, slower = (float(x) / 100 for x in args.stalls.split(":"))
    return share, slower


def unpaired(judge_all: Callable) -> Callable:
    """``judge_all`` with ab's pairing turned off (ab passes ``paired=True``)."""
    return lambda *args, **kw: judge_all(*args, **{**kw, "paired": False})


def ab_trial(slowdown: float, rng: random.Random, args: argparse.Namespace, between: float,
             within: float) -> tuple[bool, bool, bool, int, float, bool]:
    """(alarm, undecided, can gate at the end, starts a side, starts a 10% change needs,
    the throughput itself called a regression)."""
    a, b = parse_build("a==1"), parse_build("a==1 +label b")
    runner = Simulated({a.name: 1.0, b.name: 1.0 - slowdown}, rng, between, within,
                       args.runs, args.host_noise, args.drift / 100, stalls(args),
                       args.drift_shape, 2 * args.max_starts)
    outcome = HeadToHead(a, b, runner, Record(None, {}), min_starts=args.starts,
                         max_starts=args.max_starts, progress=lambda _: None).run()
    tput = next(v for v in outcome.verdicts[TEST] if v.metric == "request_throughput")
    needs = math.nan if tput.decided or tput.starts_needed is None else tput.starts_needed
    return (bool(outcome.regressed), bool(outcome.undecided), tput.can_gate, outcome.looks,
            needs, tput.fails)


def gate_trial(slowdown: float, rng: random.Random, args: argparse.Namespace, between: float,
               within: float) -> tuple[bool, bool]:
    """(the test failed, its throughput can gate) for one nightly start against a baseline
    of ``--baseline-starts`` starts of 5 runs."""
    sim = Simulated({}, rng, between, within, args.runs, args.host_noise, 0.0, stalls(args))
    base, servers = [], []
    for start in range(args.baseline_starts):
        reps = sim.reps(1.0, 5)
        base += reps
        servers += [start] * len(reps)
    cand = sim.reps(1.0 - slowdown, args.runs)
    noise = dict.fromkeys(FLOORS, args.host_noise) if args.host_noise else {}
    verdicts = judge_all(base, cand, baseline_starts=servers, floors=FLOORS, noise=noise,
                         alpha=per_test_alpha(args.tests), pool_record=True)
    tput = next(v for v in verdicts if v.metric == "request_throughput")
    return any(v.fails for v in verdicts), tput.can_gate


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=1000)
    parser.add_argument("--starts", type=int, default=3)
    parser.add_argument("--max-starts", type=int, default=6)
    parser.add_argument("--baseline-starts", type=int, default=3)
    parser.add_argument("--runs", type=int, default=3, help="runs per start")
    parser.add_argument("--tests", type=int, default=26, help="gated tests in a night")
    parser.add_argument("--host-noise", type=float, default=2.0,
                        help="the host's recorded start-to-start noise, percent (0: none)")
    parser.add_argument("--noise", action="append", default=[], metavar="BETWEEN:WITHIN",
                        help="CVs in percent (default: 1:2 2:2 5:3 15:8)")
    parser.add_argument("--drift", type=float, default=0.0,
                        help="the machine's random walk during an ab, CV percent a start")
    parser.add_argument("--stalls", default="0:0", metavar="SHARE:SLOWER",
                        help="percent of starts that run slower all their life, and by how "
                             "much (heavy tails, as shared machines show: e.g. 10:25)")
    parser.add_argument("--drift-shape", choices=("walk", "wave"), default="walk",
                        help="walk: a random walk of --drift a start; wave: slows down by "
                             "--drift and recovers over the longest ab")
    parser.add_argument("--rule", action="append", choices=("shipped", "unpaired"),
                        default=[], help="how ab judges its starts (default: shipped)")
    parser.add_argument("--no-gate", action="store_true", help="simulate ab only")
    parser.add_argument("--threshold", type=float, default=None, metavar="PCT",
                        help="every metric's floor (default 5): 0.1 leaves only the budget "
                             "between noise and an alarm, to check the false-alarm rate")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    if args.threshold is not None:
        FLOORS.update(dict.fromkeys(FLOORS, args.threshold))
    shipped = headtohead.judge_all
    levels = [tuple(float(x) / 100 for x in n.split(":")) for n in args.noise] or \
        [(0.01, 0.02), (0.02, 0.02), (0.05, 0.03), (0.15, 0.08)]
    rng = random.Random(args.seed)
    print(f"{args.trials} trials per cell; ab: {args.starts} to {args.max_starts} starts a "
          f"side; gate: 1 start against {args.baseline_starts}, {args.tests} tests a night; "
          f"{args.runs} runs a start; host record {args.host_noise or 'none'}%; "
          f"drift {args.drift}% a start ({args.drift_shape}); stalls {args.stalls}; floors "
          f"{FLOORS['request_throughput']:g}%")
    print(f"{'rule':>8} {'between':>7} {'within':>6} | {'ab A/A':>7} {'exit 0':>6} {'exit 3':>6} "
          f"{'10% caught':>10} {'tput':>6} {'can gate':>8} {'starts':>6} {'needs':>6} | "
          f"{'gate A/A':>8} "
          f"{'per night':>9} {'10% caught':>10} {'can gate':>8} {'caught|can':>10}")
    for rule, (between, within) in ((r, lv) for lv in levels for r in args.rule or ["shipped"]):
        # "unpaired" is the shipped rule with the A/B's own analysis turned off.
        headtohead.judge_all = shipped if rule == "shipped" else unpaired(shipped)
        aa = [ab_trial(0.0, rng, args, between, within) for _ in range(args.trials)]
        ab = [ab_trial(0.10, rng, args, between, within) for _ in range(args.trials)]
        share = statistics.fmean
        needs = [r[4] for r in ab if r[4] == r[4]]
        print(f"{rule:>8} {between:>7.1%} {within:>6.1%} | {share(r[0] for r in aa):>7.2%} "
              f"{share(not r[0] and not r[1] for r in aa):>6.1%} "
              f"{share(r[1] for r in aa):>6.1%} {share(r[0] for r in ab):>10.1%} "
              f"{share(r[5] for r in ab):>6.1%} "
              f"{share(r[2] for r in ab):>8.1%} {share(r[3] for r in ab):>6.2f} "
              f"{statistics.median(needs) if needs else math.nan:>6} | ", end="", flush=True)
        if args.no_gate:
            print()
            continue
        g_aa = [gate_trial(0.0, rng, args, between, within) for _ in range(args.trials)]
        g_ab = [gate_trial(0.10, rng, args, between, within) for _ in range(args.trials)]
        per_test = share(f for f, _ in g_aa)
        caught_can = [f for f, can in g_ab if can]
        print(f"{per_test:>8.2%} {1 - (1 - per_test) ** args.tests:>9.1%} "
              f"{share(f for f, _ in g_ab):>10.1%} {share(c for _, c in g_ab):>8.1%} "
              f"{(share(caught_can) if caught_can else math.nan):>10.1%}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
