"""Keys under which the plugin keeps its state in pytest's stash."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:  # keeps `import pytest_mi300x.plugin.hooks` free of the heavy modules
    pass

SESSION_KEY = pytest.StashKey["PerfSession"]()
COLLECTOR_KEY = pytest.StashKey["SummaryCollector"]()
PROGRESS_KEY = pytest.StashKey["LiveProgress"]()
WRITER_KEY = pytest.StashKey["BaselineWriter"]()
REPORTS_KEY = pytest.StashKey[tuple[Path, Path]]()
SIGNALS_KEY = pytest.StashKey["SigtermAsInterrupt"]()
SERVER_KEY = pytest.StashKey["RunningServer"]()
MEASURER_KEY = pytest.StashKey["Measurer"]()
