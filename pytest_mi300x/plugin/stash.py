"""Keys under which the plugin keeps its state in pytest's stash."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from pytest_mi300x.judge.baselines import BaselineWriter
from pytest_mi300x.load.measurer import Measurer
from pytest_mi300x.servers.pool import RunningServer
from pytest_mi300x.session import PerfSession

SESSION_KEY = pytest.StashKey[PerfSession]()
SUMMARIES_KEY = pytest.StashKey[list[tuple[str, dict[str, Any]]]]()
SERVER_KEY = pytest.StashKey[RunningServer]()
MEASURER_KEY = pytest.StashKey[Measurer]()
WRITER_KEY = pytest.StashKey[BaselineWriter]()
OUTCOMES_KEY = pytest.StashKey[dict[str, str]]()
REPORTS_KEY = pytest.StashKey[tuple[Path, Path]]()
