"""Progress lines for steps that take minutes (engine installs, server starts, load runs)."""

from __future__ import annotations

import sys
from collections.abc import Callable

Progress = Callable[[str], None]


class Notice(str):
    """A progress line said even where progress is quiet (``pytest -q``, the sessions of
    ``ab`` and ``bisect``): something the user's machine keeps changed (a build evicted)."""


def to_stderr(line: str) -> None:
    """The default outside pytest: one prefixed line on stderr."""
    print(f"[pytest-mi300x] {line}", file=sys.stderr, flush=True)


def silent(line: str) -> None:
    """Progress nobody reads."""
