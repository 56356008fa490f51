"""Keys under which the plugin keeps its state in pytest's stash."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:  # keeps `import pytest_mi300x.plugin.hooks` free of the heavy modules
    from pytest_mi300x.judge.baselines import BaselineWriter  # noqa: F401
    from pytest_mi300x.load.measurer import Measurer  # noqa: F401
    from pytest_mi300x.plugin.lifecycle import SigtermAsInterrupt  # noqa: F401
    from pytest_mi300x.plugin.progress import LiveProgress  # noqa: F401
    from pytest_mi300x.plugin.summary import SummaryCollector  # noqa: F401
    from pytest_mi300x.reporting.report import Published  # noqa: F401
    from pytest_mi300x.servers.pool import RunningServer  # noqa: F401
    from pytest_mi300x.session import PerfSession  # noqa: F401

SESSION_KEY = pytest.StashKey["PerfSession"]()
COLLECTOR_KEY = pytest.StashKey["SummaryCollector"]()
PROGRESS_KEY = pytest.StashKey["LiveProgress"]()
WRITER_KEY = pytest.StashKey["BaselineWriter"]()
REPORTS_KEY = pytest.StashKey["Published"]()
SIGNALS_KEY = pytest.StashKey["SigtermAsInterrupt"]()
SERVER_KEY = pytest.StashKey["RunningServer"]()
SERVERS_KEY = pytest.StashKey[list["RunningServer"]]()
MEASURER_KEY = pytest.StashKey["Measurer"]()
SIDE_MEASURERS_KEY = pytest.StashKey[list["Measurer"]]()
"""Measurers a claim test ran itself (sides no earlier test measured): their baselines."""
