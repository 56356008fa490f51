"""Why a test did not pass. Its own module, below every other: the exceptions that declare
a kind live in modules that results/model.py itself imports (results/files.py's WriteError)."""

from __future__ import annotations

import enum


class FailureKind(enum.StrEnum):
    """Why a test did not pass: only a gated regression (PerfRegression) is a slowdown, and
    an infrastructure failure never is."""

    REGRESSION = "regression"  # the gate: a gated metric worse than its baseline
    UNDECIDED = "undecided"  # the gate: moved on one start, or cannot gate tonight as it did
    INVALID_RUN = "invalid run"
    ENGINE = "engine"  # the server did not start, died or stalled
    INFRA = "infra"  # GPUs, docker, disk, ports: the machine, not the build
    HARNESS = "harness"  # a bug or bad input on our side
    ASSERTION = "assertion"  # a test's own assert: what it checked did not hold
    CLAIM = "claim"  # a seed claim this session's own figures do not bear out
    SKIPPED = "skipped"
