"""``pytest-mi300x clean``: stop what killed sessions left running (servers, containers)."""

from __future__ import annotations

import argparse
import shutil
import sys


def run(args: argparse.Namespace) -> int:
    from pytest_mi300x.engines.cache import default_cache_dir
    from pytest_mi300x.engines.docker import DockerError, reap_orphans
    from pytest_mi300x.servers.records import RecordsError, ServerRecords, alive

    folder = (args.engine_cache or default_cache_dir()) / "servers"
    try:
        done = ServerRecords(folder).reap()
    except RecordsError as exc:
        print(f"pytest-mi300x clean: {exc}", file=sys.stderr)
        return 2
    unchecked = ""
    if shutil.which("docker") is not None:
        # Containers of ended sessions whose record is gone, found by their labels.
        try:
            done += reap_orphans(alive)
        except DockerError as exc:
            print(f"docker: could not list containers ({exc})", file=sys.stderr)
            unchecked = " (containers not checked)"
    for line in done:
        print(line)
    print(f"{len(done)} action(s); nothing left running by an ended session{unchecked}" if done
          else f"nothing left running by an ended session{unchecked}")
    return 0
