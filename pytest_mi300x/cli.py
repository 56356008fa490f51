"""The ``pytest-mi300x`` command: engine provisioning and information outside a test run."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
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
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "provision":
        from pytest_mi300x.engines.provision import ProvisionError, provision_main

        try:
            return provision_main(args.vllm_build, args.engine_cache)
        except ProvisionError as exc:
            print(f"pytest-mi300x: {exc}", file=sys.stderr)
            return 2
    return 2


if __name__ == "__main__":
    sys.exit(main())
