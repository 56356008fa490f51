"""Where engine venvs and generated models are cached, and how the cache's size is told
and measured (its limit: engines/eviction.py)."""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path

CACHE_ENV = "PYTEST_MI300X_CACHE"
LIMIT_ENV = "PYTEST_MI300X_ENGINE_CACHE_LIMIT"
LIMIT_OPTION = "--engine-cache-limit"
LIMIT_INI = "engine_cache_limit"
MARKER = "pytest-mi300x-install.json"
"""In a build's venv: written last, so its presence means the install is complete."""

_SIZE = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*(?:([kmgt])(i?b)?)?\s*$", re.IGNORECASE)
_POWERS = {"k": 1, "m": 2, "g": 3, "t": 4}


class CacheLimitError(ValueError):
    """A size limit that cannot be read; one line naming where it came from and the fix."""


def default_cache_dir() -> Path:
    """$PYTEST_MI300X_CACHE, else $XDG_CACHE_HOME/pytest-mi300x, else ~/.cache/pytest-mi300x."""
    if env := os.environ.get(CACHE_ENV):
        return Path(env).expanduser()
    if xdg := os.environ.get("XDG_CACHE_HOME"):
        return Path(xdg).expanduser() / "pytest-mi300x"
    return Path.home() / ".cache" / "pytest-mi300x"


def engines_dir(root: Path) -> Path:
    """The folder of the engine venvs, one per build (engines/provision.py)."""
    return root / "engines"


def side_folders(root: Path, key: str) -> tuple[Path, Path]:
    """(Inductor's compile cache, vLLM's own cache folder) of one build, ``key`` being its
    venv's folder name. Beside the venvs, not in /tmp (which may be wiped), so compiled
    graphs survive between sessions; one per build, so an evicted build takes its own along
    (a shared one would outgrow the limit with every torch release)."""
    return root / "inductor" / key, root / "vllm-cache" / key


def limit_from_env() -> int | None:
    """$PYTEST_MI300X_ENGINE_CACHE_LIMIT as bytes, None when unset or empty."""
    value = os.environ.get(LIMIT_ENV, "")
    return parse_size(value, f"${LIMIT_ENV}") if value.strip() else None


def parse_size(text: str, where: str = LIMIT_OPTION) -> int:
    """Bytes from ``40G``, ``40GB``, ``40000M``, ``1.5T``, ``40GiB`` or a plain number of GB
    (decimal units: 1G = 1000M); raises a one-line CacheLimitError naming ``where``."""
    match = _SIZE.match(str(text))
    if match is None:
        raise CacheLimitError(
            f"{where} {text!r} is not a size; write a number with a unit, e.g. 40G, 40GB or "
            "40000M (K, M, G, T; KiB..TiB for powers of 1024; a plain number is GB)")
    number, unit, suffix = match.groups()
    base = 1024 if suffix and suffix.lower() == "ib" else 1000
    return int(float(number) * base ** _POWERS[(unit or "g").lower()])


def format_size(size: float) -> str:
    """``3.7 GB``, ``250.0 MB``: decimal units, as limits are written."""
    for unit, power in (("TB", 4), ("GB", 3), ("MB", 2), ("kB", 1)):
        if abs(size) >= 1000 ** power:
            return f"{size / 1000 ** power:.1f} {unit}"
    return f"{size:.0f} B"


def disk_usage(path: Path, skip: frozenset[str] = frozenset()) -> int:
    """Bytes ``path`` takes on disk, counted as ``du`` does: allocated blocks, not apparent
    sizes; a file with several hard links once; symlinks not followed. Paths in ``skip``
    (as strings) are left out with everything under them. 0 when it does not exist."""
    seen: set[tuple[int, int]] = set()

    def blocks(st: os.stat_result) -> int:
        if st.st_nlink > 1 and not stat.S_ISDIR(st.st_mode):
            if (st.st_dev, st.st_ino) in seen:
                return 0
            seen.add((st.st_dev, st.st_ino))
        return st.st_blocks * 512

    try:
        top = os.lstat(path)
    except OSError:
        return 0
    total = blocks(top)
    stack = [str(path)] if stat.S_ISDIR(top.st_mode) else []
    while stack:
        try:
            entries = os.scandir(stack.pop())
        except OSError:  # removed while we walk, or not ours to read
            continue
        with entries:
            for entry in entries:
                if entry.path in skip:
                    continue
                try:
                    st = entry.stat(follow_symlinks=False)
                except OSError:
                    continue
                total += blocks(st)
                if stat.S_ISDIR(st.st_mode):
                    stack.append(entry.path)
    return total
