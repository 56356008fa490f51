"""Slow drift, simulated: what the history's change points and the night's anchor check
(judge/drift.py) flag when a build loses a little at each release.

    python benchmarks/drift_sim.py [--series 40] [--nights 8] [--noise 0.5 --noise 1 ...]

A series is ``--lead`` nights at one level, then ``--releases`` releases that each lose
``--loss`` percent against the one before and hold for ``--nights`` nights, with normal
night-to-night noise (CV ``--noise`` percent); a flat series has the same length and noise
and no loss. Per noise level it prints:

- change points: the share of drifting series with a regression flagged, and of flat ones
  with any change point;
- anchor: the share of drifting series whose last night is a drift against the anchor (the
  baseline of ``--starts`` starts before the first release), with tonight's one start alone,
  and with the rolling baseline's last ``--starts`` nights as the current level; and the
  same on flat series (false drifts), each at one of 26 gated tests' share of a night's 5%.

Run on another checkout (`PYTHONPATH=that/checkout python benchmarks/drift_sim.py`) it
simulates that checkout's change points (the anchor check is new: it prints n/a there).
"""

from __future__ import annotations

import argparse
import math
import sys

import numpy as np

from pytest_mi300x.judge.changepoints import find_change_points
from pytest_mi300x.judge.multiplicity import per_test_alpha

METRIC = "request_throughput"


def series(rng: np.random.Generator, noise: float, args: argparse.Namespace,
           loss: float) -> list[float]:
    levels = [1.0] * args.lead + [(1 - loss) ** k for k in range(1, args.releases + 1)
                                  for _ in range(args.nights)]
    return list(100.0 * np.array(levels) * np.exp(rng.normal(0.0, noise, len(levels))))


def anchored(values: list[float], args: argparse.Namespace, rolling: bool) -> bool | None:
    """Whether the last night (or the last ``--starts`` nights) drifted against the anchor
    (the first ``--starts`` nights, one start each); None where there is no anchor check."""
    try:
        from pytest_mi300x.judge.baselines import Baseline
        from pytest_mi300x.judge.drift import against_anchor
    except ImportError:
        return None
    k = args.starts
    anchor = Baseline(test="t", host="h", engine="e", model="m",
                      repetitions=[{METRIC: v} for v in values[:k]], servers=list(range(k)),
                      comparability={}, provenance={"host": {"floors": {METRIC: 5.0}}})
    now = values[-k:] if rolling else values[-1:]
    drift = against_anchor(anchor, [{METRIC: v} for v in now], list(range(len(now))),
                           alpha=per_test_alpha(26))
    return bool(drift.drifted)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--series", type=int, default=40)
    parser.add_argument("--noise", type=float, action="append", default=[],
                        help="night-to-night CV, percent (default: 0.5, 1, 2)")
    parser.add_argument("--lead", type=int, default=10, help="nights before the first release")
    parser.add_argument("--nights", type=int, default=8, help="nights each release holds")
    parser.add_argument("--releases", type=int, default=5)
    parser.add_argument("--loss", type=float, default=3.0, help="percent lost per release")
    parser.add_argument("--starts", type=int, default=5,
                        help="nights (one start each) in the anchor and the rolling baseline")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    noises = [n / 100 for n in args.noise] or [0.005, 0.01, 0.02]
    total = (1 - args.loss / 100) ** args.releases - 1
    print(f"{args.series} series a cell: {args.lead} nights, then {args.releases} releases of "
          f"-{args.loss:g}% ({total:+.1%} in all), {args.nights} nights each")
    print(f"{'noise':>6} | {'change points: drift':>20} {'flat':>6} | "
          f"{'anchor: tonight':>15} {'rolling':>8} {'flat tonight':>12} {'flat rolling':>12}")

    def share(flags: list[bool | None]) -> str:
        known = [f for f in flags if f is not None]
        return f"{sum(known)}/{len(known)}" if known else "n/a"

    for noise in noises:
        rng = np.random.default_rng(args.seed)
        drifting = [series(rng, noise, args, args.loss / 100) for _ in range(args.series)]
        flat = [series(rng, noise, args, 0.0) for _ in range(args.series)]
        cp = [any(p.kind == "regression" for p in find_change_points(v, METRIC))
              for v in drifting]
        cp_flat = [bool(find_change_points(v, METRIC)) for v in flat]
        print(f"{noise:>6.1%} | {share(list(cp)):>20} {share(list(cp_flat)):>6} | "
              f"{share([anchored(v, args, False) for v in drifting]):>15} "
              f"{share([anchored(v, args, True) for v in drifting]):>8} "
              f"{share([anchored(v, args, False) for v in flat]):>12} "
              f"{share([anchored(v, args, True) for v in flat]):>12}", flush=True)
    return 0 if not math.isnan(total) else 1


if __name__ == "__main__":
    sys.exit(main())
