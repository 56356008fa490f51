"""What a measurement produced: repetitions, a workload's result, and why a run is invalid;
and which seeds a workload's repetitions measure."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pytest_mi300x.judge.gate import GateOutcome
from pytest_mi300x.load.records import LoadRun
from pytest_mi300x.results.model import FailureKind, finite_figures, median_figures

if TYPE_CHECKING:
    from pytest_mi300x.workload.workload import Workload


class OutputLengthDrift(UserWarning):
    """An engine's outputs stopped well short of (or past) the asked lengths."""


class InvalidRun(AssertionError):
    """A run whose figures mean nothing (failed requests, wrong token counts)."""

    failure_kind = FailureKind.INVALID_RUN


class EngineStalled(InvalidRun):
    """Streams stopped sending mid-run: the engine hung. Its server is replaced."""

    failure_kind = FailureKind.ENGINE


@dataclass(frozen=True)
class Repetition:
    """One measured run of a workload (for a capacity sweep: one whole sweep, ``run`` its
    best passing point)."""

    seed: int
    figures: dict[str, float | int]
    problems: list[str]
    run: LoadRun
    sweep: dict[str, Any] | None = None

    @property
    def valid(self) -> bool:
        return not self.problems


@dataclass
class PerfResult:
    """Every repetition of one workload, the median figures, and the gate's outcome."""

    repetitions: list[Repetition]
    path: Path
    outcome: GateOutcome | None = None
    accuracy: dict[str, Any] | None = None
    """The accuracy check's passes (one per repetition), or why it was skipped."""

    @property
    def figures(self) -> dict[str, float]:
        """Median over the repetitions, per figure."""
        return median_figures([finite_figures(r.figures) for r in self.repetitions])

    @property
    def valid(self) -> bool:
        return bool(self.repetitions) and all(r.valid for r in self.repetitions)


@dataclass(frozen=True)
class Measured:
    """A result of this session (valid, or failed and why), kept for the claims that compare
    results."""

    workload: dict[str, Any]
    """The workload as the test wrote it (full size)."""
    result: PerfResult
    server: str
    """The server's key: results of one server need no start-to-start noise."""
    failed: str = ""
    """Why the measurement failed (its error's first line); empty for a valid result."""


def fresh_seeds(measured: dict[str, dict[int, str]] | None, scaled: Workload, repeats: int,
                test_id: str) -> list[int]:
    """A fresh seed per repetition (identical prompts would hit the prefix cache of the one
    before and measure the cache instead), moved on past the seeds another test of the same
    dataset measured on the server (``measured``: RunningServer.measured_seeds, a server
    flag sets share: servers/shared.py). Recorded there under ``test_id``."""
    dataset: Any = scaled.dataset
    seeds = [dataset.seed + rep for rep in range(repeats)]
    if measured is None or scaled.prefix_cache != "as-is":
        return seeds  # an endpoint, or a workload that empties the cache itself
    same = {k: v for k, v in dataset.describe().items() if k != "seed"}
    held = measured.setdefault(json.dumps(same, sort_keys=True, default=str), {})
    while any(held.get(s, test_id) != test_id for s in seeds):
        seeds = [s + repeats for s in seeds]
    held.update(dict.fromkeys(seeds, test_id))
    return seeds
