"""``pytest-mi300x clean``: stop what killed sessions left running (servers, containers)."""

from __future__ import annotations

import argparse
import sys


def run(args: argparse.Namespace) -> int:
    from pytest_mi300x.engines.cache import default_cache_dir
    from pytest_mi300x.servers.records import RecordsError, ServerRecords

    folder = (args.engine_cache or default_cache_dir()) / "servers"
    try:
        done = ServerRecords(folder).reap()
    except RecordsError as exc:
        print(f"pytest-mi300x clean: {exc}", file=sys.stderr)
        return 2
    for line in done:
        print(line)
    print(f"{len(done)} action(s); nothing left running by an ended session" if done
          else "nothing left running by an ended session")
    return 0
