"""How each test ended, in one line: passed, skipped (why), failed or error (what kind, why).

A failure is classified by the exception that ended the test: each of this project's
exceptions says its kind (``failure_kind``); anything else is the harness's. An
infrastructure failure (GPUs, docker, ports, disk) is never counted as a regression.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pytest_mi300x.results.model import FailureKind

CAUSE_MAX = 200


@dataclass(frozen=True)
class Outcome:
    """One test's end."""

    outcome: str  # passed, failed, skipped, error
    cause: str = ""  # one line: a skip's reason, a failure's first line
    kind: str = ""  # a FailureKind value for failed and error

    def to_dict(self) -> dict[str, str]:
        return {"outcome": self.outcome, "cause": self.cause, "kind": self.kind}


def one_line(text: str) -> str:
    line = next((s.strip() for s in str(text).splitlines() if s.strip()), "")
    return line if len(line) <= CAUSE_MAX else line[:CAUSE_MAX - 3] + "..."


def kind_of(exc: BaseException) -> FailureKind:
    """The kind an exception declares (``failure_kind``), else a harness failure; an
    AssertionError raised by a test's own assert is the test's verdict: a regression."""
    declared = getattr(exc, "failure_kind", None)
    if declared is not None:
        return FailureKind(declared)
    if type(exc) is AssertionError:
        return FailureKind.REGRESSION
    return FailureKind.HARNESS


def skip_reason(longrepr: Any) -> str:
    """A skip report's reason (pytest keeps it as (path, line, 'Skipped: reason'))."""
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        return one_line(str(longrepr[2]).removeprefix("Skipped: "))
    return one_line(str(longrepr))


def describe(exc: BaseException) -> tuple[FailureKind, str]:
    """(kind, one-line cause) of an exception that ended a test."""
    return kind_of(exc), one_line(f"{type(exc).__name__}: {exc}")


def count_kinds(outcomes: list[Outcome]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for o in outcomes:
        if o.outcome in ("failed", "error"):
            kind = o.kind or FailureKind.HARNESS.value
            counts[kind] = counts.get(kind, 0) + 1
    return counts
