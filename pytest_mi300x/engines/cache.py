"""Where engine venvs and generated models are cached."""

from __future__ import annotations

import os
from pathlib import Path

CACHE_ENV = "PYTEST_MI300X_CACHE"


def default_cache_dir() -> Path:
    """$PYTEST_MI300X_CACHE, else $XDG_CACHE_HOME/pytest-mi300x, else ~/.cache/pytest-mi300x."""
    if env := os.environ.get(CACHE_ENV):
        return Path(env).expanduser()
    if xdg := os.environ.get("XDG_CACHE_HOME"):
        return Path(xdg).expanduser() / "pytest-mi300x"
    return Path.home() / ".cache" / "pytest-mi300x"
