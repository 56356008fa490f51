"""How each test ended, in one line: passed, skipped (why), failed or error (what kind, why).

A failure is classified by the exception that ended the test: each of this project's
exceptions says its kind (``failure_kind``); a test's own ``assert`` is an ``assertion``;
anything else is the harness's. Only the gate's PerfRegression is a regression: an
infrastructure failure (GPUs, docker, ports, disk) never is.
"""

from __future__ import annotations

import os
import sysconfig
from dataclasses import dataclass
from pathlib import Path
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
    """The kind an exception declares (``failure_kind``: the gate's PerfRegression is the one
    regression), else a harness failure. A bare AssertionError is the harness's when an
    ``assert`` of this package raised it, and the test's own (``assertion``) when its code
    did: neither is a slowdown."""
    declared = getattr(exc, "failure_kind", None)
    if declared is not None:
        return FailureKind(declared)
    if isinstance(exc, AssertionError) and _raised_by_test_code(exc):
        return FailureKind.ASSERTION
    return FailureKind.HARNESS


_PACKAGE = str(Path(__file__).resolve().parents[1]) + os.sep
_LIBRARIES = tuple(str(Path(p).resolve()) + os.sep for p in {
    sysconfig.get_paths()[name] for name in ("stdlib", "platstdlib", "purelib", "platlib")})


def _raised_by_test_code(exc: BaseException) -> bool:
    """Whether the innermost frame that is neither a library's nor the standard library's
    belongs to a test (or its conftest), not to this package."""
    frames = []
    tb = exc.__traceback__
    while tb is not None:
        frames.append(str(Path(tb.tb_frame.f_code.co_filename).resolve()))
        tb = tb.tb_next
    for path in reversed(frames):
        if path.startswith(_PACKAGE):
            return False
        if not path.startswith(_LIBRARIES):
            return True
    return False


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
