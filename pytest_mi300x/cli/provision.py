"""``pytest-mi300x provision``: install an engine build and the tiny model now."""

from __future__ import annotations

import argparse
import sys


def run(args: argparse.Namespace) -> int:
    from pytest_mi300x.engines.provision import EngineEnvironment, ProvisionError
    from pytest_mi300x.engines.tiny_model import ensure_tiny_model
    from pytest_mi300x.progress import to_stderr

    try:
        with EngineEnvironment(args.vllm_build, args.engine_cache) as install:
            model = ensure_tiny_model(install.python, args.engine_cache, progress=to_stderr)
    except (ProvisionError, RuntimeError) as exc:
        print(f"pytest-mi300x provision: {exc}", file=sys.stderr)
        return 1
    print(f"python: {install.python}")
    print(f"model: {model.path}")
    print(f"vllm: {install.version}")
    return 0
