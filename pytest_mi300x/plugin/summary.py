"""Collects what the end-of-session table and reports need from each test's reports.

Under xdist, reports reach the controller, so the controller's collector sees every test.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from pytest_mi300x.plugin.scheduling import PERF_MARK
from pytest_mi300x.reporting.outcomes import Outcome, one_line, skip_reason

SUMMARY_PROPERTY = "mi300x_summary"
"""A measured test's figures and verdicts, shipped to the controller in its report."""
FAILURE_PROPERTY = "mi300x_failure"
"""A failed test's failure kind and one-line cause."""
CLAIM_PROPERTY = "mi300x_claim"
"""A claim test's one line with this run's figures: what a passed claim test says."""


class SummaryCollector:
    """Figures per measured test, and how every test ended."""

    def __init__(self) -> None:
        self.rows: dict[str, dict[str, Any]] = {}
        self.outcomes: dict[str, Outcome] = {}

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if PERF_MARK not in report.keywords:
            return  # not a perf test (no server): not in the session table
        failure: dict[str, str] = {}
        claim = ""
        for name, value in report.user_properties:
            if name == SUMMARY_PROPERTY:
                self.rows[report.nodeid] = json.loads(str(value))
            elif name == FAILURE_PROPERTY:
                failure = json.loads(str(value))
            elif name == CLAIM_PROPERTY:
                claim = str(value)
        seen = self.outcomes.get(report.nodeid)
        xfail = getattr(report, "wasxfail", None)
        if xfail is not None and report.when == "call":
            # An expected failure (a claim marked as not holding on this host): its reason,
            # not the traceback's first line; an XPASS says the claim held after all.
            word = "xfailed" if report.skipped else "xpassed"
            self.outcomes[report.nodeid] = Outcome(word, one_line(str(xfail)))
            return
        if report.skipped:
            if seen is None:
                self.outcomes[report.nodeid] = Outcome("skipped", skip_reason(report.longrepr))
            return
        if report.passed:
            if report.when == "call":
                self.outcomes[report.nodeid] = Outcome("passed", claim)
            return
        # failed: in the call it is a failure, in setup or teardown an error
        if seen is not None and seen.outcome in ("failed", "error"):
            return
        word = "failed" if report.when == "call" else "error"
        cause = failure.get("cause") or one_line(_crash_message(report))
        self.outcomes[report.nodeid] = Outcome(word, cause, failure.get("kind", ""))


def _crash_message(report: pytest.TestReport) -> str:
    crash = getattr(report.longrepr, "reprcrash", None)
    return str(getattr(crash, "message", "") or report.longreprtext or "")
