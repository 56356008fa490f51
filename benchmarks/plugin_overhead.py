"""What the plugin costs a pytest run before any server starts: collecting 1,000
parametrized perf cases with the plugin, against the same file without it, in one run.

    python benchmarks/plugin_overhead.py [--rounds 7] [--cases 1000]

Each round runs `pytest --collect-only -q` in a fresh process, alternating with and without
(`-p no:mi300x`), so both see the same machine state; the figure is the ratio of medians.
Goal (issue 13): at most 1.5x.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

CASES = """
import pytest
from pytest_mi300x import Arrivals, FlagSet, RandomDataset, Workload, flag_sets

RATES = [pytest.param(r, id=f"qps-{{r}}") for r in range({rates})]
SETS = flag_sets(*(FlagSet.of(f"seqs-{{n}}", max_num_seqs=n) for n in range(1, {sets} + 1)))


@pytest.mark.parametrize("rate", RATES)
@SETS
def test_case(perf, flag_set, rate):
    perf.run(Workload(RandomDataset(input_len=64, output_len=64, num_prompts=10),
                      Arrivals(request_rate=float(rate))))
"""


def collect(folder: Path, *extra: str) -> tuple[float, int]:
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q",
                           "-p", "no:cacheprovider", *extra, "test_cases.py"],
                          cwd=folder, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - started
    collected = sum(1 for line in proc.stdout.splitlines() if "::test_case[" in line)
    if proc.returncode != 0:
        raise SystemExit(f"pytest failed ({proc.returncode}):\n{proc.stdout[-2000:]}")
    return elapsed, collected


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--cases", type=int, default=1000)
    args = parser.parse_args()
    sets = 10
    rates = max(1, args.cases // sets)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "test_cases.py").write_text(textwrap.dedent(CASES.format(rates=rates,
                                                                           sets=sets)))
        (folder / "pytest.ini").write_text("[pytest]\n")
        collect(folder)  # warm the file system and bytecode caches once
        with_plugin, without = [], []
        for _ in range(args.rounds):
            t, n = collect(folder)
            with_plugin.append(t)
            t0, n0 = collect(folder, "-p", "no:mi300x")
            without.append(t0)
        assert n == n0 == rates * sets, (n, n0)
    a, b = statistics.median(with_plugin), statistics.median(without)
    print(f"cases collected: {n} ({sets} flag sets x {rates} rates), {args.rounds} rounds each")
    print(f"{'':24}{'median s':>10}{'min s':>8}{'max s':>8}")
    print(f"{'with pytest-mi300x':24}{a:>10.3f}{min(with_plugin):>8.3f}{max(with_plugin):>8.3f}")
    print(f"{'without (-p no:mi300x)':24}{b:>10.3f}{min(without):>8.3f}{max(without):>8.3f}")
    print(f"ratio with/without: {a / b:.2f}x (goal: at most 1.5x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
