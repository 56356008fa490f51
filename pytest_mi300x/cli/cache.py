"""``pytest-mi300x cache list`` and ``cache prune``: the engine cache's builds (size on disk,
last use, whether a running session holds them), and eviction down to a size limit."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pytest_mi300x.engines.cache import LIMIT_ENV


def limit(value: str | None, option: str) -> int | None:
    """Bytes from the option's value, else $PYTEST_MI300X_ENGINE_CACHE_LIMIT, else None;
    raises CacheLimitError naming where a bad value came from."""
    from pytest_mi300x.engines.cache import limit_from_env, parse_size

    return parse_size(value, option) if value is not None else limit_from_env()


def _root(args: argparse.Namespace) -> Path:
    from pytest_mi300x.engines.cache import default_cache_dir

    return Path(args.engine_cache) if args.engine_cache else default_cache_dir()


def show(args: argparse.Namespace) -> int:
    from pytest_mi300x.engines.cache import CacheLimitError, format_size
    from pytest_mi300x.engines.eviction import EngineCache
    from pytest_mi300x.engines.holds import is_held

    try:
        size_limit = limit(None, "")
    except CacheLimitError as exc:
        print(f"pytest-mi300x cache: {exc}", file=sys.stderr)
        return 2
    cache = EngineCache(_root(args), size_limit)
    builds = cache.builds()
    other = cache.other_bytes(builds)
    total = sum(b.size for b in builds) + other
    told = (f"limit {format_size(size_limit)} (${LIMIT_ENV})" if size_limit is not None
            else "no limit here (--engine-cache-limit, ini engine_cache_limit or "
                 f"${LIMIT_ENV} sets one)")
    print(f"engine cache {cache.root}: {format_size(total)} in {len(builds)} build(s); {told}")
    if not builds:
        return 0
    rows = [("build (evicted first at the top)", "size", "last used", "held")]
    for b in builds:
        held = "yes: a running session uses it" if is_held(b.venv) else "no"
        rows.append((b.label, format_size(b.size), b.when, held))
    rows.append(("other files (model, records, old caches)", format_size(other), "", ""))
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    for r in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=False))
              + "  " + r[3])
    return 0


def prune(args: argparse.Namespace) -> int:
    from pytest_mi300x.engines.cache import CacheLimitError, format_size
    from pytest_mi300x.engines.eviction import EngineCache

    try:
        size_limit = limit(args.limit, "--limit")
    except CacheLimitError as exc:
        print(f"pytest-mi300x cache prune: {exc}", file=sys.stderr)
        return 2
    if size_limit is None:
        print(f"pytest-mi300x cache prune: no limit given; pass --limit SIZE (e.g. --limit 40G) "
              f"or set ${LIMIT_ENV}", file=sys.stderr)
        return 2
    cache = EngineCache(_root(args), size_limit, progress=lambda line: print(line, flush=True))
    done = cache.make_room()
    print(f"engine cache {cache.root}: {format_size(done.usage)} after evicting "
          f"{len(done.evicted)} build(s); limit {format_size(size_limit)}")
    return 0
