"""The ``pytest-mi300x`` command: provisioning, baselines, comparisons, A/B runs, bisects
and reports outside a test run. Each command lives in its own module here."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from pytest_mi300x import __version__
from pytest_mi300x.config import DEFAULT_VLLM_BUILD
from pytest_mi300x.results.files import HISTORY_NAME, RESULTS_DIRNAME


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
    prov.add_argument("--engine-cache-limit", default=None, metavar="SIZE",
                      help="size the cache may take (40G, 40000M): least recently used builds "
                           "no running session holds are evicted first (default: "
                           "$PYTEST_MI300X_ENGINE_CACHE_LIMIT, else no limit)")

    cache = sub.add_parser("cache", help="the engine cache: its builds with size, last use and "
                                         "holds (cache list), eviction to a limit (cache prune)")
    cache_sub = cache.add_subparsers(dest="action", required=True)
    listing = cache_sub.add_parser("list", help="builds in eviction order: size on disk, last "
                                                "use, whether a running session holds them")
    evict = cache_sub.add_parser("prune", help="evict least recently used builds that no "
                                               "running session holds until the cache fits")
    evict.add_argument("--limit", default=None, metavar="SIZE",
                       help="e.g. 40G or 40000M (default: $PYTEST_MI300X_ENGINE_CACHE_LIMIT)")
    for each in (listing, evict):
        each.add_argument("--engine-cache", type=Path, default=None,
                          help="cache folder (default: $PYTEST_MI300X_CACHE or "
                               "~/.cache/pytest-mi300x)")

    base = sub.add_parser("baselines", help="refresh or list stored baselines")
    base_sub = base.add_subparsers(dest="action", required=True)
    refresh = base_sub.add_parser(
        "refresh", help="run the selection with --update-baselines over --servers server "
                        "starts (default 5; --servers N, 5 repetitions each); all other "
                        "arguments go to pytest (default: suites/)")
    refresh.add_argument("--servers", type=int, default=5, metavar="N",
                         help="server starts to measure each baseline over, one pytest "
                              "session each (default 5)")
    refresh.add_argument("--start", type=int, default=None, metavar="K",
                         help="run server start K only (one job of the baselines workflow): "
                              "1 makes the baselines anew, a later one adds its start")
    refresh.add_argument("--dry-run", action="store_true",
                         help="print each start's pytest command; run nothing")
    refresh.add_argument("pytest_args", nargs=argparse.REMAINDER,
                         help="pytest arguments: paths, -k, --gpu-host, --repeats, ...")
    show = base_sub.add_parser("show", help="list stored baselines with age and provenance")
    show.add_argument("--baselines-dir", type=Path, default=Path("baselines"))

    compare = sub.add_parser("compare", help="apply the verdicts to two result folders; "
                                             "exit 1 on a regression, 3 when a test's runs "
                                             "are not comparable")
    compare.add_argument("baseline", type=Path, help="results folder of the reference run")
    compare.add_argument("candidate", type=Path, help="results folder of the run to judge")

    rec = sub.add_parser("recommend", help="per workload of a matrix run: the best flag set "
                                           "for each headline metric, its margin over the "
                                           "next best and whether that is beyond the noise, "
                                           "and the Pareto set of req/s against TTFT")
    rec.add_argument("results", type=Path, nargs="+",
                     help=".perf-results/<run-id> folders (each is one server start of the "
                          "flag sets it ran)")

    hist = sub.add_parser("history", help="a metric over past runs, change points marked")
    hist.add_argument("--history-file", type=Path, default=Path(RESULTS_DIRNAME) / HISTORY_NAME,
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

    clean = sub.add_parser("clean", help="stop engine servers and containers that killed "
                                         "sessions left running on this machine")
    clean.add_argument("--engine-cache", type=Path, default=None,
                       help="cache folder (default: the engine_cache ini key of the pytest "
                            "ini here, else $PYTEST_MI300X_CACHE or ~/.cache/pytest-mi300x)")
    sub.add_parser("plan", add_help=False,
                   help="every server the selected tests would start (command line, env, "
                        "GPUs, tests), with nothing started (pytest-mi300x plan --help)")
    sub.add_parser("ab", add_help=False,
                   help="two builds head to head on the selected tests, interleaved server "
                        "starts, a verdict per metric (pytest-mi300x ab --help)")
    sub.add_parser("culprit", add_help=False,
                   help="from a red night's results to the build that caused it: confirm, "
                        "bisect, name it with its evidence (pytest-mi300x culprit --help)")
    sub.add_parser("steadiness", add_help=False,
                   help="a few starts of a probe test: is this machine as steady today as its "
                        "tests' noise records? (pytest-mi300x steadiness --help)")
    sub.add_parser("night", add_help=False,
                   help="a whole night on this host: tonight's build against the last green "
                        "one, confirmed head to head; night culprit, night status "
                        "(pytest-mi300x night --help)")
    sub.add_parser("doctor", add_help=False,
                   help="is this host fit to measure on? GPUs, partitions, NUMA balancing, "
                        "power, driver/ROCm/firmware, numbering, the build, /dev/kfd, disk "
                        "(pytest-mi300x doctor --help)")
    sub.add_parser("bisect", add_help=False,
                   help="the first build of an ordered list that made the selected tests "
                        "slower (pytest-mi300x bisect --help)")
    merge = sub.add_parser("merge", help="join result folders of a fleet run (one per host and "
                                         "shard) into one folder with a Markdown summary")
    merge.add_argument("out", type=Path, help="folder to write (one sub-folder per source)")
    merge.add_argument("sources", type=Path, nargs="+", help="--results-dir folders to join")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:2] == ["baselines", "refresh"] and not {"-h", "--help"} & set(argv[2:]):
        from pytest_mi300x.cli import baselines

        # Everything after it is pytest's (options included), which argparse's
        # REMAINDER refuses when the first of them starts with "-".
        return baselines.refresh(argv[2:])
    if argv[:1] == ["plan"]:
        from pytest_mi300x.cli import plan

        # Everything after it is pytest's, as for baselines refresh.
        return plan.run(argv[1:])
    if argv[:1] == ["culprit"]:
        from pytest_mi300x.cli import culprit

        return culprit.run(argv[1:])
    if argv[:1] == ["night"]:
        from pytest_mi300x.cli import night

        return night.run(argv[1:])
    if argv[:1] == ["doctor"]:
        from pytest_mi300x.cli import doctor

        return doctor.run(argv[1:])
    if argv[:1] == ["steadiness"]:
        from pytest_mi300x.cli import steadiness

        return steadiness.run(argv[1:])
    if argv[:1] in (["ab"], ["bisect"]):
        from pytest_mi300x.cli import ab

        # Their own options, then the pytest selection (which argparse cannot take whole).
        return ab.ab(argv[1:]) if argv[0] == "ab" else ab.bisect(argv[1:])
    args = _parser().parse_args(argv)
    if args.command == "provision":
        from pytest_mi300x.cli import provision

        return provision.run(args)
    if args.command == "baselines":
        from pytest_mi300x.cli import baselines

        return (baselines.refresh(args.pytest_args) if args.action == "refresh"
                else baselines.show(args.baselines_dir))
    if args.command == "cache":
        from pytest_mi300x.cli import cache

        return cache.show(args) if args.action == "list" else cache.prune(args)
    if args.command == "clean":
        from pytest_mi300x.cli import clean

        return clean.run(args)
    if args.command == "history":
        from pytest_mi300x.cli import history

        return history.run(args)
    from pytest_mi300x.cli import results

    return {"merge": results.merge, "compare": results.compare,
            "report": results.report, "recommend": results.recommend}[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
