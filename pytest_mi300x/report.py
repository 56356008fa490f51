"""The end-of-session terminal table."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import pytest

from pytest_mi300x.measure import SUMMARY_PROPERTY

COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("request_throughput", "req/s", "{:.2f}"),
    ("output_throughput", "out tok/s", "{:.1f}"),
    ("median_ttft_ms", "med TTFT ms", "{:.1f}"),
    ("mean_tpot_ms", "mean TPOT ms", "{:.2f}"),
    ("completed", "completed", "{}"),
    ("failed", "failed", "{}"),
)


def _cell(fmt: str, value: Any) -> str:
    if value is None:
        return "-"
    try:
        return fmt.format(value)
    except (ValueError, TypeError):
        return str(value)


def summary_table(rows: Sequence[tuple[str, dict[str, Any]]]) -> list[str]:
    """Lines of a fixed-width table: one row per test."""
    header = ["test", *(label for _, label, _ in COLUMNS), "valid"]
    body = [[name, *(_cell(fmt, row.get(key)) for key, _, fmt in COLUMNS),
             "yes" if row.get("valid") else "NO"] for name, row in rows]
    widths = [max(len(r[i]) for r in [header, *body]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        first = cells[0].ljust(widths[0])
        rest = (c.rjust(w) for c, w in zip(cells[1:], widths[1:], strict=True))
        return "  ".join([first, *rest])

    return [line(header), "  ".join("-" * w for w in widths), *(line(r) for r in body)]


class SummaryCollector:
    """Gathers each test's figures from its report; under xdist reports reach the controller."""

    def __init__(self, rows: list[tuple[str, dict[str, Any]]]) -> None:
        self.rows = rows

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        for name, value in report.user_properties:
            if name == SUMMARY_PROPERTY:
                self.rows.append((report.nodeid, json.loads(str(value))))
