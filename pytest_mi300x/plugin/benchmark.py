"""pytest-benchmark, used for what it is good at: each perf test's measured repetitions
become its rounds (the round's time is the run's duration, so `ops` is runs per second),
with the serving figures in ``extra_info``. ``--benchmark-json``, ``--benchmark-autosave``,
``--benchmark-compare`` and ``pytest-benchmark compare`` then work on these tests as on
any other, and so do tools that read that JSON (github-action-benchmark, Bencher). Its
table at the end of a session shows only when a ``--benchmark-*`` option asks for it.

pytest-benchmark has no public call to record rounds measured elsewhere; this uses the
one its maintainers point to (``_make_stats``), guarded: nothing is recorded when the
fixture is disabled (it is under xdist), and a test without a valid run is marked as an
error so that it never writes an empty entry.
"""

from __future__ import annotations

import os
import shlex
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from pytest_mi300x.load.measurer import Measurer

PLUGIN = "benchmark"  # the name pytest-benchmark registers under (its pytest11 entry point)


def asked_for(config: pytest.Config) -> bool:
    """Whether a ``--benchmark-*`` option (on the command line, in PYTEST_ADDOPTS or the
    ini's addopts) asks for pytest-benchmark's output. Without one its table of run
    durations would only repeat the session table's figures less usefully."""
    given = [*map(str, config.invocation_params.args),
             *shlex.split(os.environ.get("PYTEST_ADDOPTS", "")), *config.getini("addopts")]
    return any(arg.startswith("--benchmark-") and not arg.startswith(_NOT_OUTPUT)
               for arg in given)


_NOT_OUTPUT = ("--benchmark-skip", "--benchmark-disable")


def fixture_for(request: pytest.FixtureRequest) -> Any | None:
    """The test's ``benchmark`` fixture when pytest-benchmark is active and a
    ``--benchmark-*`` option asks for what it records."""
    config = request.config
    if not config.pluginmanager.hasplugin(PLUGIN) or config.getoption("benchmark_skip",
                                                                       False):
        return None
    if not asked_for(config):
        return None  # never requested: no rounds, so pytest-benchmark prints no table
    bench = request.getfixturevalue("benchmark")
    return bench if getattr(bench, "enabled", False) else None


def record(bench: Any, measurer: Measurer) -> None:
    """The last workload's valid repetitions as rounds, its figures as extra_info."""
    if not measurer.results:
        return
    last = measurer.results[-1]
    valid = [r for r in last.repetitions if r.valid]
    bench._mode = "pytest-mi300x repetitions"  # claims the fixture; silences "not used"
    if not valid:
        bench.has_error = True  # pytest-benchmark leaves errored entries out of its JSON
        return
    stats = bench._make_stats(1)
    for rep in valid:
        stats.update(rep.run.duration)
    bench.extra_info.update({f"mi300x.{k}": v for k, v in measurer.summary().items()
                             if isinstance(v, int | float | str | bool)})
    bench.extra_info["mi300x.figures"] = last.figures
