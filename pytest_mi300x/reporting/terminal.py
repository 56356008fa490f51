"""The end-of-session terminal table."""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from typing import Any

import pytest

from pytest_mi300x.judge.verdict import GATED_METRICS
from pytest_mi300x.load.measurer import SUMMARY_PROPERTY

COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("request_throughput", "req/s", "{:.2f}"),
    ("output_throughput", "out tok/s", "{:.1f}"),
    ("median_ttft_ms", "med TTFT ms", "{:.1f}"),
    ("mean_tpot_ms", "mean TPOT ms", "{:.2f}"),
    ("completed", "completed", "{:.0f}"),
    ("failed", "failed", "{:.0f}"),
)


def _cell(fmt: str, value: Any) -> str:
    if value is None:
        return "-"
    try:
        return fmt.format(value)
    except (ValueError, TypeError):
        return str(value)


def gate_cell(row: dict[str, Any]) -> str:
    """The baseline verdict of a row in a few words."""
    gate = row.get("gate")
    if not gate:
        return "-"
    status = str(gate.get("status"))
    if status != "compared":
        return {"baseline written": "written"}.get(status, status)
    verdicts = gate.get("verdicts", [])
    worse = [v["metric"] for v in verdicts if v["kind"] == "regression" and v["gated"]]
    if worse:
        return "REGRESSION: " + ",".join(worse)
    better = [v["metric"] for v in verdicts if v["kind"] == "improvement" and v["gated"]]
    if better:
        return "improved: " + ",".join(better)
    warned = [v["metric"] for v in verdicts if v["kind"] == "regression"]
    return "no change" + (f" (warn: {','.join(warned)})" if warned else "")


def summary_table(rows: Sequence[tuple[str, dict[str, Any]]]) -> list[str]:
    """Lines of a fixed-width table: one row per test (median of its repetitions)."""
    header = ["test", *(label for _, label, _ in COLUMNS), "valid", "vs baseline"]
    body = [[name, *(_cell(fmt, row.get(key)) for key, _, fmt in COLUMNS),
             "yes" if row.get("valid") else "NO", gate_cell(row)] for name, row in rows]
    widths = [max(len(r[i]) for r in [header, *body]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        first = cells[0].ljust(widths[0])
        rest = (c.rjust(w) for c, w in zip(cells[1:-1], widths[1:-1], strict=True))
        return "  ".join([first, *rest, cells[-1].ljust(widths[-1])]).rstrip()

    return [line(header), "  ".join("-" * w for w in widths), *(line(r) for r in body)]


VERDICT_HEADER = ["test", "metric", "baseline", "now", "change", "threshold", "verdict"]


def fmt_number(value: Any, fmt: str = "{:.4g}") -> str:
    """A figure for a table cell; '-' when missing or NaN."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return fmt.format(value)


def verdict_rows(judged: Iterable[tuple[str, Sequence[dict[str, Any]]]]) -> list[list[str]]:
    """One row per gated metric, and per tail metric that got worse (a warning)."""
    rows = []
    for test, verdicts in judged:
        for v in verdicts:
            kind = str(v["kind"])
            if v["metric"] not in GATED_METRICS:
                if kind != "regression":
                    continue
                kind = "warn: regression"
            rows.append([test, v["metric"], fmt_number(v.get("baseline_median"), "{:.4g}"),
                         fmt_number(v.get("candidate_median"), "{:.4g}"),
                         fmt_number(v.get("change_pct"), "{:+.1f}%"),
                         fmt_number(v.get("threshold_pct"), "{:.1f}%"), kind])
    return rows


def verdict_table(rows: Sequence[tuple[str, dict[str, Any]]]) -> list[str]:
    """Fixed-width lines of every verdict in the summary rows; empty when nothing was judged."""
    body = verdict_rows((name, (row.get("gate") or {}).get("verdicts", [])) for name, row in rows)
    if not body:
        return []
    widths = [max(len(r[i]) for r in [VERDICT_HEADER, *body]) for i in range(len(VERDICT_HEADER))]

    def line(cells: list[str]) -> str:
        return "  ".join(c.ljust(w) if i in (0, 1, 6) else c.rjust(w)
                         for i, (c, w) in enumerate(zip(cells, widths, strict=True))).rstrip()

    return [line(VERDICT_HEADER), "  ".join("-" * w for w in widths), *(line(r) for r in body)]


class SummaryCollector:
    """Gathers each test's figures and outcome from its reports; under xdist, reports reach
    the controller, so the controller's collector sees every test."""

    def __init__(self, rows: list[tuple[str, dict[str, Any]]], outcomes: dict[str, str]) -> None:
        self.rows = rows
        self.outcomes = outcomes

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        for name, value in report.user_properties:
            if name == SUMMARY_PROPERTY:
                self.rows.append((report.nodeid, json.loads(str(value))))
        if report.when == "call":
            self.outcomes[report.nodeid] = report.outcome
        elif report.outcome != "passed" and self.outcomes.get(report.nodeid) != "failed":
            self.outcomes[report.nodeid] = "skipped" if report.skipped else "error"
