"""``pytest-mi300x history``: a metric over past runs, change points and setup breaks."""

from __future__ import annotations

import argparse
import sys


def run(args: argparse.Namespace) -> int:
    from pytest_mi300x.judge.changepoints import find_change_points_within
    from pytest_mi300x.results.history import HistoryError, HistoryStore, setup_breaks, setup_of
    from pytest_mi300x.results.stack import stack_diff

    store = HistoryStore(args.history_file)
    try:
        tests = [t for t in store.tests() if args.test in t]
    except HistoryError as exc:
        print(f"pytest-mi300x: {exc}", file=sys.stderr)
        return 2
    for bad in store.skipped:
        print(f"pytest-mi300x history: {bad}", file=sys.stderr)
    if not tests:
        print(f"no runs in {args.history_file}" + (f" for tests matching {args.test!r}"
                                                   if args.test else "")
              + "; every pytest run of the suite appends to it")
        return 0
    for test in tests:
        for metric in args.metric or ["request_throughput", "median_ttft_ms"]:
            points = store.series(test, metric, args.host)
            if not points:
                continue
            breaks = setup_breaks(points)
            marks = {cp.index: cp for cp in
                     find_change_points_within([p.value for p in points], metric, breaks)}
            print(f"{test}  {metric}")
            first = max(0, len(points) - args.last)
            for i, p in enumerate(points[first:], start=first):
                cp = marks.get(i)
                note = f"  <- change point: {cp.describe()}" if cp else ""
                if i in breaks and i > first:
                    diff = stack_diff(setup_of(points[i - 1].entry), setup_of(p.entry))
                    print(f"  -- setup changed (no change point across it): {'; '.join(diff)}")
                low, high = p.spread(metric)
                print(f"  {p.date}  {p.run_id:<26} {p.engine_version:<12} {p.value:>10.4g}"
                      f"  runs {low:.4g}..{high:.4g}{note}")
    return 0
