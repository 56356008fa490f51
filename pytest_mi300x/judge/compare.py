"""Compare two result folders (two engine builds, say) with the same verdicts as the gate."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from pytest_mi300x.hosts.profile import sent_as_burst
from pytest_mi300x.judge import verdict
from pytest_mi300x.judge.baselines import BUILD_KEYS, comparability
from pytest_mi300x.results.files import read_results


def _by_test(folder: Path) -> dict[str, dict[str, Any]]:
    return {doc["test"]: doc for doc in read_results(folder)}


def _reps(doc: dict[str, Any]) -> list[dict[str, float]]:
    return [{k: float(v) for k, v in run["figures"].items() if v is not None}
            for run in doc["runs"] if not run.get("problems")]


def _stack(doc: dict[str, Any]) -> dict[str, Any]:
    return comparability(doc.get("fingerprint", {}), doc.get("engine", {}),
                         doc.get("workload", {}).get("scaled"),
                         doc.get("server", {}).get("flag_set"))


def _host_floors(doc: dict[str, Any]) -> dict[str, float]:
    host = doc.get("host", {})
    burst = sent_as_burst(doc.get("workload", {}).get("scaled"))
    return {**(host.get("floors") or {}), **((host.get("burst_floors") or {}) if burst else {})}


def _floors(a: dict[str, Any], b: dict[str, Any]) -> dict[str, float]:
    """The hosts' floors recorded with the runs, the wider where both give one: the same
    tolerance the gate applied when each run was judged against its baseline."""
    fa, fb = _host_floors(a), _host_floors(b)
    return {m: max(float(fa.get(m, 0.0)), float(fb.get(m, 0.0))) for m in {*fa, *fb}}


def compare_folders(baseline: Path, candidate: Path, out: Any = sys.stdout) -> int:
    """Print one line per gated verdict; 1 when any gated metric regressed, 2 on bad input."""
    for folder in (baseline, candidate):
        if not folder.is_dir():
            print(f"pytest-mi300x compare: {folder} is not a results folder; give two "
                  ".perf-results/<run-id> folders", file=sys.stderr)
            return 2
    a, b = _by_test(baseline), _by_test(candidate)
    common = sorted(set(a) & set(b))
    if not common:
        print(f"pytest-mi300x compare: no test appears in both {baseline} and {candidate}",
              file=sys.stderr)
        return 2
    regressed = False
    print(f"{'test':<60} {'metric':<22} {'baseline':>10} {'candidate':>10} {'change':>8} "
          f"{'thresh':>7}  verdict", file=out)
    for test in common:
        stack_a, stack_b = _stack(a[test]), _stack(b[test])
        # Comparing engine builds is the point here; anything else differing is not.
        differs = [d for d in verdict.fingerprint_diff(stack_a, stack_b)
                   if d.split(":", 1)[0] not in BUILD_KEYS]
        if differs:
            print(f"{test:<60} inconclusive: not comparable: {'; '.join(differs)}", file=out)
            continue
        for v in verdict.judge_all(_reps(a[test]), _reps(b[test]),
                                   floors=_floors(a[test], b[test])):
            if not v.gated:
                continue
            regressed |= v.fails
            print(f"{test[-60:]:<60} {v.metric:<22} {v.baseline_median:>10.4g} "
                  f"{v.candidate_median:>10.4g} {v.change_pct:>+7.1f}% {v.threshold_pct:>6.1f}%  "
                  f"{v.kind.value}", file=out)
    only = sorted(set(a) ^ set(b))
    if only:
        print(f"{len(only)} test(s) in only one folder, not compared", file=out)
    return 1 if regressed else 0
