"""``pytest-mi300x provision``: install an engine build and the tiny model now."""

from __future__ import annotations

import argparse
import sys


def run(args: argparse.Namespace) -> int:
    from pytest_mi300x.cli.cache import limit
    from pytest_mi300x.engines.cache import LIMIT_OPTION, CacheLimitError
    from pytest_mi300x.engines.provision import EngineEnvironment, ProvisionError
    from pytest_mi300x.engines.tiny_model import ensure_tiny_model
    from pytest_mi300x.progress import to_stderr

    try:
        cache_limit = limit(args.engine_cache_limit, LIMIT_OPTION)
    except CacheLimitError as exc:
        print(f"pytest-mi300x provision: {exc}", file=sys.stderr)
        return 2
    try:
        with EngineEnvironment(args.vllm_build, args.engine_cache,
                               cache_limit=cache_limit) as install:
            model = ensure_tiny_model(install.python, args.engine_cache, progress=to_stderr)
    except (ProvisionError, RuntimeError) as exc:
        print(f"pytest-mi300x provision: {exc}", file=sys.stderr)
        return 1
    print(f"python: {install.python}")
    print(f"model: {model.path}")
    print(f"vllm: {install.version}")
    return 0
