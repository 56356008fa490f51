"""The ``pytest-mi300x`` command: provisioning, baselines and comparisons outside a test run."""

from __future__ import annotations

import argparse
import subprocess
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from pytest_mi300x import __version__
from pytest_mi300x.settings import DEFAULT_VLLM_BUILD


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
        "refresh", help="run the selection with --update-baselines (5 repetitions by default); "
                        "all other arguments go to pytest (default: suites/)")
    refresh.add_argument("pytest_args", nargs=argparse.REMAINDER)
    show = base_sub.add_parser("show", help="list stored baselines with age and provenance")
    show.add_argument("--baselines-dir", type=Path, default=Path("baselines"))

    compare = sub.add_parser("compare", help="apply the verdicts to two result folders; "
                                             "exit 1 on a regression")
    compare.add_argument("baseline", type=Path, help="results folder of the reference run")
    compare.add_argument("candidate", type=Path, help="results folder of the run to judge")

    merge = sub.add_parser("merge", help="join result folders of a fleet run (one per host and "
                                         "shard) into one folder with a Markdown summary")
    merge.add_argument("out", type=Path, help="folder to write (one sub-folder per source)")
    merge.add_argument("sources", type=Path, nargs="+", help="--results-dir folders to join")
    return parser


def _refresh(pytest_args: list[str]) -> int:
    args = [a for a in pytest_args if a != "--"] or ["suites/"]
    cmd = [sys.executable, "-m", "pytest", "--update-baselines", *args]
    print("running:", " ".join(cmd), flush=True)
    return subprocess.call(cmd)


def _show(root: Path) -> int:
    from pytest_mi300x.baselines import BaselineError, BaselineStore

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
              f"engine {stack.get('engine_build')} ({stack.get('engine_version')})  "
              f"torch {stack.get('torch')}  cpu {stack.get('cpu_model')} x{stack.get('cpu_count')}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
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
        from pytest_mi300x.merge import merge_folders

        return merge_folders(args.out, args.sources)
    if args.command == "compare":
        from pytest_mi300x.compare import compare_folders

        return compare_folders(args.baseline, args.candidate)
    return 2


if __name__ == "__main__":
    sys.exit(main())
