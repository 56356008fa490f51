"""The night's budget: head-to-head starts it may add, and the time it must end by.

A start is only begun while the budget holds: fewer starts than the limit so far, and time
left for one more start as long as the night's starts have taken (their median). Spent, it
raises ``BudgetSpent``, which is no error (``bisect`` lets errors of a start through as
``ReferenceFailed``; this is not one): what was measured stands, undecided where it is.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

from pytest_mi300x.ab.builds import Build
from pytest_mi300x.ab.starts import RunStart, Start


class BudgetSpent(Exception):  # noqa: N818 - a state of the night, not a failure
    """No start may begin: the limit of starts is reached or the night's time is up."""


class Budget:
    def __init__(self, seconds_left: float, limit: int | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.deadline = clock() + seconds_left
        self.limit = limit
        self.used = 0
        self.durations: list[float] = []

    def observe(self, seconds: float) -> None:
        """A start of the night took this long (what the next one is expected to take)."""
        self.durations.append(seconds)

    def check(self) -> None:
        if self.limit is not None and self.used >= self.limit:
            raise BudgetSpent(f"the budget of {self.limit} start(s) is used")
        expected = statistics.median(self.durations) if self.durations else 0.0
        left = self.deadline - self.clock()
        if left < expected:
            raise BudgetSpent(f"{max(0.0, left) / 60:.0f} min left of the night, a start "
                              f"takes about {expected / 60:.1f} min")

    def wrap(self, runner: RunStart) -> RunStart:
        """``runner`` that first checks the budget and counts what it runs."""
        def run(build: Build, index: int) -> Start:
            self.check()
            start = runner(build, index)
            self.used += 1
            return start
        return run
