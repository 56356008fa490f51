"""Compare two result folders (two engine builds, say) with the same verdicts as the gate."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TextIO

from pytest_mi300x.judge import verdict
from pytest_mi300x.judge.multiplicity import per_test_alpha
from pytest_mi300x.results.model import Result, by_test, read_folder
from pytest_mi300x.results.stack import split_builds, stack_diff

NOT_JUDGED = 3
"""compare's exit when nothing regressed but some test could not be judged: its runs are
not comparable, or one session a side gave no start-to-start evidence, or a change on one
start is undecided until a head-to-head (``pytest-mi300x ab``) confirms it."""


def _wider(fa: dict[str, float], fb: dict[str, float]) -> dict[str, float]:
    return {m: max(fa.get(m, 0.0), fb.get(m, 0.0)) for m in {*fa, *fb}}


def shared_floors(a: Result, b: Result) -> dict[str, float]:
    """The hosts' floors recorded with the runs, the wider where both give one: the same
    tolerance the gate applied when each run was judged against its baseline."""
    return _wider(a.host_floors, b.host_floors)


def shared_noise(a: Result, b: Result) -> dict[str, float]:
    """The hosts' recorded start-to-start noise, the larger where both give one."""
    return _wider(a.host_noise, b.host_noise)


def compare_folders(baseline: Path, candidate: Path, out: TextIO | None = None,
                    err: TextIO | None = None) -> int:
    """Print one line per gated verdict.

    Exit 1 when any gated metric regressed, or when the candidate cannot be judged
    (a test of the baseline is missing from it, or its runs are invalid): a candidate
    that measured nothing must not pass. Otherwise exit 3 (NOT_JUDGED) when a test's two
    runs are not comparable (other hardware, another workload), or a test's verdicts do
    not decide it (each folder is one session, one server start: the runs inside it never
    stand in for starts, and a change on one start is undecided until ``pytest-mi300x ab``
    confirms it head to head): neither a pass nor a regression. Exit 2 on bad input.
    """
    out, err = out or sys.stdout, err or sys.stderr
    for folder in (baseline, candidate):
        if not folder.is_dir():
            print(f"pytest-mi300x compare: {folder} is not a results folder; give two "
                  ".perf-results/<run-id> folders", file=err)
            return 2
    skipped: list[str] = []
    a, b = by_test(read_folder(baseline, skipped)), by_test(read_folder(candidate, skipped))
    for line in skipped:
        print(f"pytest-mi300x compare: {line}", file=err)
    common = sorted(set(a) & set(b))
    if not common:
        print(f"pytest-mi300x compare: no test appears in both {baseline} and {candidate}",
              file=err)
        return 2
    failed = False
    alpha = per_test_alpha(len(common))
    not_judged = 0
    print(f"{'test':<60} {'metric':<22} {'baseline':>10} {'candidate':>10} {'change':>8} "
          f"{'thresh':>7} {'resolves':>8}  verdict", file=out)
    for test in common:
        # Comparing engine builds is the point here; anything else differing is not.
        _, differs = split_builds(stack_diff(a[test].stack, b[test].stack))
        if differs:
            print(f"{test:<60} inconclusive: not comparable: {'; '.join(differs)}", file=out)
            not_judged += 1
            continue
        if not b[test].valid:
            failed = True
            why = "; ".join(b[test].problems[:2]) or "no valid run"
            print(f"{test[-60:]:<60} INVALID candidate: {why}", file=out)
            continue
        verdicts = verdict.judge_all(a[test].repetitions, b[test].repetitions,
                                     floors=shared_floors(a[test], b[test]),
                                     noise=shared_noise(a[test], b[test]), alpha=alpha,
                                     detail=f"{len(common)} test(s) share 5%")
        for v in verdicts:
            if not v.gated:
                continue
            failed |= v.fails
            word = "undecided" if v.suspect else v.kind.value
            print(f"{test[-60:]:<60} {v.metric:<22} {v.baseline_median:>10.4g} "
                  f"{v.candidate_median:>10.4g} {v.change_pct:>+7.1f}% {v.threshold_pct:>6.1f}% "
                  f"{v.resolves_pct:>7.1f}%  {word}", file=out)
        if verdict.decision(verdicts) not in ("no change", "regression"):
            not_judged += 1
    missing = sorted(set(a) - set(b))
    if missing:
        failed = True
        print(f"{len(missing)} test(s) of the baseline missing from the candidate: "
              + ", ".join(missing[:5]), file=out)
    extra = sorted(set(b) - set(a))
    if extra:
        print(f"{len(extra)} test(s) only in the candidate, not compared", file=out)
    if failed:
        return 1
    if not_judged:
        print(f"{not_judged} test(s) not judged (not comparable, or undecided on one session "
              f"a side: use pytest-mi300x ab): exit {NOT_JUDGED}", file=out)
        return NOT_JUDGED
    return 0
