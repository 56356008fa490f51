"""``pytest-mi300x steadiness``: is this machine as steady today as its tests' records?

A few server starts of a probe test (one pytest session each, as ``ab`` runs them) with the
reference build (the baselines' build: ``--reference``), their spread compared with the
probe's noise record (judge/steadiness.py). It writes ``steadiness.json`` (with the build it
measured), which a session given ``--steadiness=FILE`` reads: a machine noisier than its
record widens every verdict's noise by the factor measured, except for the build the check
ran, if that is the build under judgement. A night runs it once per host, before the
suite, and gives the file to every shard.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from pytest_mi300x.config import DEFAULT_VLLM_BUILD
from pytest_mi300x.results.files import RESULTS_DIRNAME

DEFAULT_PROBE = "suites/test_headline.py::test_headline_rates[vllm-seed-default-qps-1000]"
"""A short burst with the engine's default flags: steady where the machine is."""
DEFAULT_STARTS = 5
"""Starts of the reference build: against a record of 24 df, 5 starts see a day twice as
noisy about 3 times in 4 and widen on a day like the record 1 time in 20 (simulated:
benchmarks/loophole_sim.py noisyday; 3 starts, the old default, half the time)."""


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="pytest-mi300x steadiness", allow_abbrev=False,
        description="Start the engine a few times on a probe test (default: "
                    f"{DEFAULT_PROBE}) and compare the starts' spread with the probe's noise "
                    "record (kept with its baseline): a machine noisier than its record says "
                    "so, and `pytest --steadiness=OUT/steadiness.json` widens every verdict "
                    "by what it measured. Other arguments go to pytest.")
    p.add_argument("--starts", type=int, default=DEFAULT_STARTS, metavar="N",
                   help=f"server starts (default {DEFAULT_STARTS}; at least 2)")
    p.add_argument("--reference", "--build", dest="build", default=DEFAULT_VLLM_BUILD,
                   metavar="BUILD",
                   help="the reference build, as ab takes it: the build the baselines were "
                        "made with (the last good one), never the build under judgement, whose "
                        "own spread is a finding about it, not the machine's (default "
                        f"{DEFAULT_VLLM_BUILD})")
    p.add_argument("--repeats", type=int, default=None, metavar="R",
                   help="measured runs per start (default: the suite's)")
    p.add_argument("--out", type=Path, default=None,
                   help="folder for the starts and steadiness.json (default: "
                        ".perf-results/steadiness-<date>; a rerun the same day continues)")
    p.add_argument("--baselines-dir", type=Path, default=Path("baselines"),
                   help="where the probe's noise record is kept (default baselines/)")
    return p


def run(argv: list[str]) -> int:
    from pytest_mi300x.ab.builds import BuildError, parse_build
    from pytest_mi300x.ab.noiselog import NoiseLog
    from pytest_mi300x.ab.starts import Record, SessionRunner
    from pytest_mi300x.hosts.fingerprint import host_fingerprint
    from pytest_mi300x.judge.steadiness import assess
    from pytest_mi300x.results.files import ReadError

    args, selection = parser().parse_known_args(argv)
    selection = [a for a in selection if a != "--"] or [DEFAULT_PROBE]
    if args.starts < 2:
        print(f"pytest-mi300x steadiness: --starts {args.starts}: a spread needs at least 2 "
              "starts; write e.g. --starts 3", file=sys.stderr)
        return 2
    try:
        build = parse_build(args.build, where="--build")
    except BuildError as exc:
        print(f"pytest-mi300x steadiness: {exc}", file=sys.stderr)
        return 2
    day = time.strftime("%Y%m%d")
    out = args.out or Path(RESULTS_DIRNAME) / f"steadiness-{day}"
    meta = {"build": build.describe(), "selection": selection, "repeats": args.repeats,
            "day": day}
    try:
        record = Record(out / "starts.json", meta)
    except ReadError as exc:
        print(f"pytest-mi300x steadiness: {exc}", file=sys.stderr)
        return 2
    print(f"steadiness of this machine: {args.starts} starts of the reference {build.name} on "
          f"{' '.join(selection)}; starts in {out}", flush=True)
    runner = SessionRunner(selection, out, repeats=args.repeats,
                           progress=lambda line: print(line, flush=True))
    while len(record.of(build)) < args.starts:
        index = record.next_index(build)
        print(f"start {index} of {args.starts}: running", flush=True)
        start = runner(build, index)
        if not any(t.reps for t in start.tests.values()):
            problems = [p for t in start.tests.values() for p in t.problems]
            print(f"pytest-mi300x steadiness: start {index} measured nothing "
                  f"({problems[0] if problems else f'pytest exited {start.rc}'}); see "
                  f"{start.folder}/pytest.log", file=sys.stderr)
            return 2
        record.add(start)
    noise = NoiseLog(record, args.baselines_dir)
    found = assess(noise.today(build), {t: noise.records(t) for t in record.tests()},
                   host_fingerprint(), build=build.engine_build)
    found.write(out / "steadiness.json")
    for comparison in found.comparisons:
        print(comparison.line())
    print(found.summary())
    for line in noise.learn(build, source=f"steadiness check {day}"):
        print(line)
    print(f"give it to today's sessions: pytest ... --steadiness={out / 'steadiness.json'}")
    return 0
