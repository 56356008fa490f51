"""The ``pytest-mi300x`` command: provisioning, baselines and comparisons outside a test run."""

from __future__ import annotations

import argparse
import subprocess
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from pytest_mi300x import __version__
from pytest_mi300x.plugin.settings import DEFAULT_VLLM_BUILD

DEFAULT_SERVER_STARTS = 3
"""Server starts per refreshed baseline. A regression must then be past the worst of three
starts: an unchanged candidate start is the worst by chance one time in four (one in two
against a single start), and the floor only has to cover how far past it lands."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pytest-mi300x",
        description="Performance-regression suite for LLM serving engines. "
                    "Run the suite itself with: pytest suites/ [--gpu-host NAME]",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    prov = sub.add_parser("provision",
                          help="install an engine build and the tiny model into the cache now")
    prov.add_argument("--vllm-build", default=DEFAULT_VLLM_BUILD,
                      help=f"pip requirement or python/venv path (default: {DEFAULT_VLLM_BUILD})")
    prov.add_argument("--engine-cache", type=Path, default=None,
                      help="cache folder (default: $PYTEST_MI300X_CACHE or ~/.cache/pytest-mi300x)")

    base = sub.add_parser("baselines", help="refresh or list stored baselines")
    base_sub = base.add_subparsers(dest="action", required=True)
    refresh = base_sub.add_parser(
        "refresh", help="run the selection with --update-baselines over --servers server "
                        "starts (default 3; --servers N, 5 repetitions each); all other "
                        "arguments go to pytest (default: suites/)")
    refresh.add_argument("--servers", type=int, default=DEFAULT_SERVER_STARTS, metavar="N",
                         help="server starts to measure each baseline over, one pytest "
                              f"session each (default {DEFAULT_SERVER_STARTS})")
    refresh.add_argument("pytest_args", nargs=argparse.REMAINDER,
                         help="pytest arguments: paths, -k, --gpu-host, --repeats, ...")
    show = base_sub.add_parser("show", help="list stored baselines with age and provenance")
    show.add_argument("--baselines-dir", type=Path, default=Path("baselines"))

    compare = sub.add_parser("compare", help="apply the verdicts to two result folders; "
                                             "exit 1 on a regression")
    compare.add_argument("baseline", type=Path, help="results folder of the reference run")
    compare.add_argument("candidate", type=Path, help="results folder of the run to judge")

    hist = sub.add_parser("history", help="a metric over past runs, change points marked")
    hist.add_argument("--history-file", type=Path, default=Path(".perf-results/history.jsonl"),
                      help="history to read (default: .perf-results/history.jsonl)")
    hist.add_argument("-k", "--test", default="",
                      help="only tests whose id contains this text")
    hist.add_argument("--metric", action="append", default=[],
                      help="metric to show (repeatable; default: request_throughput and "
                           "median_ttft_ms)")
    hist.add_argument("--host", default=None, help="only runs on this host profile")
    hist.add_argument("--last", type=int, default=30, help="show at most this many runs")

    rep = sub.add_parser("report", help="write report.md and report.html for a results folder")
    rep.add_argument("results", type=Path, help="a .perf-results/<run-id> folder")
    rep.add_argument("--history-file", type=Path, default=None,
                     help="history for the plots' history lines (not appended to)")

    merge = sub.add_parser("merge", help="join result folders of a fleet run (one per host and "
                                         "shard) into one folder with a Markdown summary")
    merge.add_argument("out", type=Path, help="folder to write (one sub-folder per source)")
    merge.add_argument("sources", type=Path, nargs="+", help="--results-dir folders to join")
    return parser


def _server_starts(args: list[str]) -> tuple[int, list[str]]:
    """``--servers N`` taken out of the arguments otherwise meant for pytest."""
    rest: list[str] = []
    value: str | None = None
    it = iter(args)
    for arg in it:
        if arg == "--servers":
            value = next(it, "")
        elif arg.startswith("--servers="):
            value = arg.split("=", 1)[1]
        else:
            rest.append(arg)
    if value is None:
        return DEFAULT_SERVER_STARTS, rest
    if not value.isdigit() or int(value) < 1:
        raise ValueError(f"--servers {value!r} is not a whole number >= 1; "
                         f"write e.g. --servers {DEFAULT_SERVER_STARTS}")
    return int(value), rest


def _refresh(pytest_args: list[str]) -> int:
    try:
        starts, args = _server_starts([a for a in pytest_args if a != "--"])
    except ValueError as exc:
        print(f"pytest-mi300x baselines refresh: {exc}", file=sys.stderr)
        return 2
    args = args or ["suites/"]
    for start in range(1, starts + 1):
        # Each pytest session starts its own servers: that is what makes a start.
        mode = "--update-baselines" if start == 1 else "--add-baseline-server"
        cmd = [sys.executable, "-m", "pytest", mode, *args]
        print(f"server start {start} of {starts}; running:", " ".join(cmd), flush=True)
        rc = subprocess.call(cmd)
        if rc != 0:
            if start > 1:
                print(f"pytest-mi300x baselines refresh: server start {start} failed (exit "
                      f"{rc}); the baselines hold the first {start - 1} start(s). Run it "
                      "again to refresh them whole", file=sys.stderr)
            return rc
    return 0


def _show(root: Path) -> int:
    from pytest_mi300x.judge.baselines import BaselineError, BaselineStore

    try:
        stored = BaselineStore(root).all()
    except BaselineError as exc:
        print(f"pytest-mi300x: {exc}", file=sys.stderr)
        return 2
    if not stored:
        print(f"no baselines under {root}; make them with: pytest-mi300x baselines refresh")
        return 0
    now = datetime.now(UTC)
    for path, b in stored:
        try:
            created = datetime.strptime(b.created_at, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
            age = f"{(now - created).total_seconds() / 86400:.1f} d"
        except ValueError:
            age = "?"
        stack = b.comparability
        print(f"{path.relative_to(root)}  age {age}  reps {len(b.repetitions)}  "
              f"server starts {b.server_count}  "
              f"engine {stack.get('engine_build')} ({stack.get('engine_version')})  "
              f"torch {stack.get('torch')}  cpu {stack.get('cpu_model')} x{stack.get('cpu_count')}")
    return 0


def _history(args: argparse.Namespace) -> int:
    from pytest_mi300x.judge.changepoints import find_change_points_within
    from pytest_mi300x.judge.verdict import fingerprint_diff
    from pytest_mi300x.results.history import HistoryError, HistoryStore, setup_breaks, setup_of

    store = HistoryStore(args.history_file)
    try:
        tests = [t for t in store.tests() if args.test in t]
    except HistoryError as exc:
        print(f"pytest-mi300x: {exc}", file=sys.stderr)
        return 2
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
                note = (f"  <- change point: {cp.kind} {cp.change_pct:+.1f}% "
                        f"(median {cp.before:.4g} -> {cp.after:.4g})") if cp else ""
                if i in breaks and i > first:
                    diff = fingerprint_diff(setup_of(points[i - 1].entry), setup_of(p.entry))
                    print(f"  -- setup changed (no change point across it): {'; '.join(diff)}")
                print(f"  {p.date}  {p.run_id:<26} {p.engine_version:<12} {p.value:>10.4g}{note}")
    return 0


def _report(args: argparse.Namespace) -> int:
    from pytest_mi300x.reporting.report import collect, outcome_from_result, write_reports
    from pytest_mi300x.results.files import read_results
    from pytest_mi300x.results.history import HistoryStore

    docs = read_results(args.results) if args.results.is_dir() else []
    if not docs:
        print(f"pytest-mi300x report: {args.results} holds no result files; give a "
              ".perf-results/<run-id> folder", file=sys.stderr)
        return 2
    history = HistoryStore(args.history_file) if args.history_file else None
    outcomes = {d["test"]: outcome_from_result(d) for d in docs}
    run_ids = sorted({str(d.get("run_id")) for d in docs})
    paths = write_reports(collect(docs, outcomes, "+".join(run_ids), history), args.results)
    print("wrote", *paths)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:2] == ["baselines", "refresh"] and not {"-h", "--help"} & set(argv[2:]):
        # Everything after it is pytest's (options included), which argparse's
        # REMAINDER refuses when the first of them starts with "-".
        return _refresh(argv[2:])
    args = _parser().parse_args(argv)
    if args.command == "provision":
        from pytest_mi300x.engines.provision import ProvisionError, provision_main

        try:
            return provision_main(args.vllm_build, args.engine_cache)
        except ProvisionError as exc:
            print(f"pytest-mi300x: {exc}", file=sys.stderr)
            return 2
    if args.command == "baselines":
        return _refresh(args.pytest_args) if args.action == "refresh" else _show(
            args.baselines_dir)
    if args.command == "merge":
        from pytest_mi300x.reporting.merge import merge_folders

        return merge_folders(args.out, args.sources)
    if args.command == "compare":
        from pytest_mi300x.judge.compare import compare_folders

        return compare_folders(args.baseline, args.candidate)
    if args.command == "history":
        return _history(args)
    if args.command == "report":
        return _report(args)
    return 2


if __name__ == "__main__":
    sys.exit(main())
