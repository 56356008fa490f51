"""Shared fixtures of the plugin's own tests."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pytest_mi300x.config import DEFAULT_VLLM_BUILD
from pytest_mi300x.engines.provision import EngineEnvironment

# pytester points HOME at a temporary folder; pin the caches (engine venvs, the
# tiny model, vLLM's compile cache) to the real user cache so runs stay warm.
os.environ.setdefault("XDG_CACHE_HOME", str(Path.home() / ".cache"))


@pytest.fixture(scope="session")
def engine_python() -> Path:
    """Python of the real engine venv: $PYTEST_MI300X_ENGINE_PYTHON, else the default
    build provisioned into the user cache (as a user's first run does)."""
    given = os.environ.get("PYTEST_MI300X_ENGINE_PYTHON")
    if given:
        return Path(given)
    with EngineEnvironment(DEFAULT_VLLM_BUILD) as install:
        return install.python
