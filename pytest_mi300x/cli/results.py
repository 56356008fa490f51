"""``pytest-mi300x report|merge|compare|recommend``: what a run folder says, outside a test run."""

from __future__ import annotations

import argparse
import sys


def report(args: argparse.Namespace) -> int:
    from pytest_mi300x.reporting.report import collect, write_reports
    from pytest_mi300x.results.history import HistoryStore
    from pytest_mi300x.results.model import read_folder

    skipped: list[str] = []
    results = read_folder(args.results, skipped) if args.results.is_dir() else []
    for line in skipped:
        print(f"pytest-mi300x report: {line}", file=sys.stderr)
    if not results:
        print(f"pytest-mi300x report: {args.results} holds no result files; give a "
              ".perf-results/<run-id> folder", file=sys.stderr)
        return 2
    history = HistoryStore(args.history_file) if args.history_file else None
    run_ids = sorted({r.run_id for r in results})
    paths = write_reports(collect(results, {}, "+".join(run_ids), history), args.results)
    print("wrote", *paths)
    return 0


def merge(args: argparse.Namespace) -> int:
    from pytest_mi300x.reporting.merge import merge_folders

    return merge_folders(args.out, args.sources)


def compare(args: argparse.Namespace) -> int:
    from pytest_mi300x.judge.compare import compare_folders

    return compare_folders(args.baseline, args.candidate)


def recommend(args: argparse.Namespace) -> int:
    from pytest_mi300x.judge.recommend import recommend_folders

    return recommend_folders(args.results)
