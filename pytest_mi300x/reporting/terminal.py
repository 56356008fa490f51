"""The end-of-session terminal table."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from pytest_mi300x.reporting.outcomes import Outcome
from pytest_mi300x.results.metrics import GATED_METRICS, HEADLINE

OPTIONAL_COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("max_rate_under_slo", "SLO req/s", "{:.2f}"),
    ("roofline_decode_bw_pct", "HBM bw %", "{:.1f}"),
    ("roofline_prefill_compute_pct", "prefill FLOP %", "{:.1f}"),
)
"""Columns shown only when some test measured them (capacity tests; the roofline's
fractions on GPU hosts: reporting/roofline.py says what they mean)."""


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
    if gate.get("decision") == "undecided":  # judge/gate.py: not a pass, not yet a regression
        moved = [v["metric"] for v in verdicts if v.get("suspect") and v["gated"]]
        return "UNDECIDED" + (": " + ",".join(moved) if moved else "")
    better = [v["metric"] for v in verdicts if v["kind"] == "improvement" and v["gated"]]
    if better:
        return "improved: " + ",".join(better)
    warned = [v["metric"] for v in verdicts if v["kind"] == "regression"]
    return "no change" + (f" (warn: {','.join(warned)})" if warned else "")


def summary_table(outcomes: Mapping[str, Outcome],
                  rows: Mapping[str, dict[str, Any]]) -> list[str]:
    """Lines of a fixed-width table, one row per test: the median figures of a measured
    test, and for every test how it ended (a skip's reason, a failure's kind and cause)."""
    columns = HEADLINE + tuple(c for c in OPTIONAL_COLUMNS
                               if any(c[0] in row for row in rows.values()))
    header = ["test", *(label for _, label, _ in columns), "done", "failed", "vs baseline"]
    body = []
    for name in sorted(set(outcomes) | set(rows)):
        row = rows.get(name, {})
        outcome = outcomes.get(name)
        end = gate_cell(row) if row else "-"
        if outcome is not None and (outcome.outcome != "passed" or outcome.cause):
            kind = f" ({outcome.kind})" if outcome.kind else ""
            end = f"{outcome.outcome.upper()}{kind}: {outcome.cause}" if outcome.cause \
                else outcome.outcome.upper()
            if row and not row.get("valid", True):
                end = "INVALID RUN: " + (outcome.cause or "see the failure")
        body.append([name, *(_cell(fmt, row.get(key)) for key, _, fmt in columns),
                     _cell("{:.0f}", row.get("completed")), _cell("{:.0f}", row.get("failed")),
                     end])
    widths = [max(len(r[i]) for r in [header, *body]) for i in range(len(header) - 1)]

    def line(cells: list[str]) -> str:
        first = cells[0].ljust(widths[0])
        rest = (c.rjust(w) for c, w in zip(cells[1:-1], widths[1:], strict=True))
        return "  ".join([first, *rest, cells[-1]]).rstrip()

    return [line(header), "  ".join("-" * w for w in widths) + "  " + "-" * 11,
            *(line(r) for r in body)]


def accuracy_notes(rows: Mapping[str, dict[str, Any]]) -> list[str]:
    """Each reason the accuracy check was skipped, once, with how many tests it held for
    (on the cpu host every test asking for it: the tiny model's weights are random)."""
    tests: dict[str, int] = {}
    for row in rows.values():
        reason = row.get("accuracy_skipped")
        if reason:
            tests[str(reason)] = tests.get(str(reason), 0) + 1
    return [f"accuracy not checked in {n} test{'s' if n > 1 else ''}: "
            f"{reason.removeprefix('accuracy check skipped: ')}"
            for reason, n in sorted(tests.items())]


VERDICT_HEADER = ["test", "metric", "baseline", "now", "change", "threshold", "spread",
                  "resolves", "verdict"]


def fmt_number(value: Any, fmt: str = "{:.4g}") -> str:
    """A figure for a table cell; '-' when missing or NaN."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return value if isinstance(value, str) else fmt.format(value)


def verdict_rows(judged: Iterable[tuple[str, Sequence[dict[str, Any]]]]) -> list[list[str]]:
    """One row per gated metric, and per tail metric that got worse (a warning)."""
    rows = []
    for test, verdicts in judged:
        for v in verdicts:
            kind = "undecided" if v.get("suspect") else str(v["kind"])
            if not v.get("gated", v["metric"] in GATED_METRICS):
                if kind != "regression":
                    continue
                kind = "warn: regression"
            rows.append([test, v["metric"], fmt_number(v.get("baseline_median"), "{:.4g}"),
                         fmt_number(v.get("candidate_median"), "{:.4g}"),
                         fmt_number(v.get("change_pct"), "{:+.1f}%"),
                         fmt_number(v.get("threshold_pct"), "{:.1f}%"),
                         fmt_number(v.get("noise_pct"), "{:.1f}%"),
                         fmt_number(_finite(v.get("resolves_pct")), "{:.1f}%"), kind])
    return rows


def _finite(value: Any) -> Any:
    """A resolving power of 'nothing' (inf) or past 10x shows as words, not a number."""
    if isinstance(value, float) and math.isinf(value):
        return "none"
    return ">10x" if isinstance(value, float) and value >= 900 else value


def unresolved_lines(rows: Mapping[str, dict[str, Any]]) -> list[str]:
    """Per test, each gated metric that cannot resolve the change it must: one line each."""
    return [f"{name}: {line}" for name, row in sorted(rows.items())
            for line in (row.get("gate") or {}).get("unresolved", [])]


def verdict_table(rows: Mapping[str, dict[str, Any]]) -> list[str]:
    """Fixed-width lines of every verdict in the summary rows; empty when nothing was judged."""
    body = verdict_rows((name, (row.get("gate") or {}).get("verdicts", []))
                        for name, row in sorted(rows.items()))
    if not body:
        return []
    widths = [max(len(r[i]) for r in [VERDICT_HEADER, *body]) for i in range(len(VERDICT_HEADER))]

    last = len(VERDICT_HEADER) - 1

    def line(cells: list[str]) -> str:
        return "  ".join(c.ljust(w) if i in (0, 1, last) else c.rjust(w)
                         for i, (c, w) in enumerate(zip(cells, widths, strict=True))).rstrip()

    lines = [line(VERDICT_HEADER), "  ".join("-" * w for w in widths), *(line(r) for r in body)]
    unresolved = unresolved_lines(rows)
    if unresolved:
        lines += ["", "what these starts cannot resolve (spread: a start's; resolves: the change "
                      "caught at 95% power):", *unresolved]
    return lines
