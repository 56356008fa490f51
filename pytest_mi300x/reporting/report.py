"""The session's report files: ``report.md`` (fit for ``$GITHUB_STEP_SUMMARY``) and
``report.html`` (the same tables with plots), built from the result documents."""

from __future__ import annotations

import html
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pytest_mi300x.judge.changepoints import find_change_points_within
from pytest_mi300x.reporting import plots, roofline
from pytest_mi300x.reporting.outcomes import Outcome, count_kinds
from pytest_mi300x.reporting.terminal import VERDICT_HEADER, fmt_number, verdict_rows
from pytest_mi300x.results.files import BadLine, WriteError, append_text, write_text_atomic
from pytest_mi300x.results.history import (
    HistoryError,
    HistoryStore,
    Point,
    entry_from_result,
    setup_breaks,
)
from pytest_mi300x.results.metrics import HEADLINE
from pytest_mi300x.results.model import Result, read_folder


@dataclass
class TestRow:
    """One test in a report: its pytest outcome (with the one-line cause of a skip, error or
    failure) and its result, when it measured anything."""

    test: str
    outcome: str
    result: Result | None = None
    cause: str = ""
    kind: str = ""

    @property
    def runs(self) -> list[dict[str, Any]]:
        return [dict(r.raw) for r in self.result.valid_runs] if self.result else []

    @property
    def verdicts(self) -> list[dict[str, Any]]:
        return self.result.verdicts if self.result else []

    @property
    def gate_status(self) -> str:
        return self.result.gate_status if self.result else "-"

    def medians(self) -> dict[str, float]:
        return self.result.medians if self.result else {}


@dataclass
class ReportInput:
    """Everything one report shows."""

    run_id: str
    tests: list[TestRow]
    history: HistoryStore | None = None
    header: dict[str, str] = field(default_factory=dict)


def collect(results: Sequence[Result], outcomes: Mapping[str, Outcome], run_id: str,
            history: HistoryStore | None = None) -> ReportInput:
    """Join results with pytest outcomes (tests that failed before measuring too)."""
    by_name = {r.test: r for r in results}
    names = sorted(set(by_name) | set(outcomes))
    tests = []
    for n in names:
        outcome = outcomes.get(n)
        result = by_name.get(n)
        word = outcome.outcome if outcome else (str(result.status) if result else "unknown")
        tests.append(TestRow(n, word, result, outcome.cause if outcome else "",
                             outcome.kind if outcome else ""))
    header: dict[str, str] = {}
    if results:
        first = results[0]
        header = {"host": first.host_name, "engine": f"{first.build} ({first.engine_version})",
                  "harness": str((first.doc.get("harness") or {}).get("version")),
                  "cpu": str(first.fingerprint.get("cpu_model"))}
    return ReportInput(run_id, tests, history, header)


def _verdict_rows(tests: Sequence[TestRow]) -> list[list[str]]:
    return verdict_rows((t.test, t.verdicts) for t in tests)


def _md_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    def esc(cell: str) -> str:
        return cell.replace("|", "\\|")

    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header),
            *("| " + " | ".join(esc(c) for c in r) + " |" for r in rows)]


def _figure_rows(tests: Sequence[TestRow]) -> list[list[str]]:
    rows = []
    for t in tests:
        med = t.medians()
        end = t.outcome + (f" ({t.kind})" if t.kind else "") + (f": {t.cause}" if t.cause else "")
        rows.append([t.test, end, str(len(t.runs)),
                     *(fmt_number(med.get(k), fmt) for k, _, fmt in HEADLINE), t.gate_status])
    return rows


FIGURE_HEADER = ["test", "outcome", "reps", *(label for _, label, _ in HEADLINE), "baseline"]


def _counts(tests: Sequence[TestRow]) -> str:
    counts: dict[str, int] = {}
    for t in tests:
        counts[t.outcome] = counts.get(t.outcome, 0) + 1
    regressions = sum(1 for t in tests for v in t.verdicts
                      if v.get("gated") and v["kind"] == "regression")
    parts = [f"{n} {k}" for k, n in sorted(counts.items())]
    kinds = count_kinds([Outcome(t.outcome, t.cause, t.kind) for t in tests])
    failures = ("; failures by kind: " + ", ".join(f"{n} {k}" for k, n in sorted(kinds.items()))
                if kinds else "")
    return ", ".join(parts) + f"; {regressions} gated regression verdict(s)" + failures


def render_markdown(data: ReportInput) -> str:
    """The run as Markdown: headline counts, verdicts, figures, failure details."""
    lines = [f"# pytest-mi300x run {data.run_id}", ""]
    if data.header:
        lines += [" · ".join(f"{k} {v}" for k, v in data.header.items()), ""]
    lines += [_counts(data.tests), "", "## Verdicts against the baselines", ""]
    rows = _verdict_rows(data.tests)
    lines += _md_table(VERDICT_HEADER, rows) if rows else ["No test was compared with a baseline."]
    lines += ["", "## Figures (median of the repetitions)", ""]
    lines += _md_table(FIGURE_HEADER, _figure_rows(data.tests))
    found, why = roofline.rows(data.tests)
    if found or why:
        lines += ["", "## Against the roofline", ""]
        lines += ([roofline.MEANING, "", *_md_table(roofline.HEADER, found)] if found
                  else [f"No fractions of the roofline: {why}."])
    failing = [(t, v) for t in data.tests for v in t.verdicts
               if v.get("gated") and v["kind"] == "regression"]
    if failing:
        lines += ["", "## Regressions", ""]
        for t, v in failing:
            change = fmt_number(v["change_pct"], "{:+.1f}%")
            threshold = fmt_number(v["threshold_pct"], "{:.1f}%")
            lines += [f"- `{t.test}` **{v['metric']}**: "
                      f"baseline {fmt_number(v['baseline_median'])} {_reps(v['baseline'])}, "
                      f"now {fmt_number(v['candidate_median'])} {_reps(v['candidate'])}, "
                      f"change {change}, threshold {threshold}: {v['reason']}"]
    return "\n".join(lines) + "\n"


def _reps(values: Sequence[float]) -> str:
    return "[" + ", ".join(f"{x:.4g}" for x in values) + "]"


def _html_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f'<td class="{_css(c)}">{html.escape(c)}</td>' for c in r) + "</tr>"
        for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _css(cell: str) -> str:
    return {"regression": "bad", "failed": "bad", "improvement": "good",
            "inconclusive": "warn", "warn: regression": "warn"}.get(cell, "")


def _history(data: ReportInput, test: str, host: str | None
             ) -> tuple[dict[str, list[Point]], dict[str, list[Any]]]:
    if data.history is None:
        return {}, {}
    series = {m: data.history.series(test, m, host) for m in plots.HISTORY_METRICS}
    changes = {m: find_change_points_within([p.value for p in pts], m, setup_breaks(pts))
               for m, pts in series.items()}
    return series, changes


STYLE = """body{font-family:system-ui,sans-serif;margin:2em;max-width:1200px;color:#263238}
table{border-collapse:collapse;margin:1em 0;font-size:13px}
td,th{border:1px solid #cfd8dc;padding:3px 8px;text-align:right}
td:first-child,th:first-child{text-align:left}
.bad{background:#ffcdd2}.good{background:#c8e6c9}.warn{background:#ffe0b2}
section{border-top:2px solid #eceff1;margin-top:2em}svg{max-width:100%;height:auto}"""


def render_html(data: ReportInput) -> str:
    """A standalone page: the Markdown's tables, then per test bars, distributions, history."""
    parts = [f"<!doctype html><html><head><meta charset='utf-8'>"
             f"<title>pytest-mi300x {html.escape(data.run_id)}</title><style>{STYLE}</style>"
             f"</head><body><h1>pytest-mi300x run {html.escape(data.run_id)}</h1>"]
    if data.header:
        parts.append("<p>" + " · ".join(html.escape(f"{k} {v}") for k, v in data.header.items())
                     + "</p>")
    parts.append(f"<p>{html.escape(_counts(data.tests))}</p><h2>Verdicts</h2>")
    rows = _verdict_rows(data.tests)
    parts.append(_html_table(VERDICT_HEADER, rows) if rows
                 else "<p>No test was compared with a baseline.</p>")
    parts.append("<h2>Figures</h2>" + _html_table(FIGURE_HEADER, _figure_rows(data.tests)))
    found, why = roofline.rows(data.tests)
    if found or why:
        parts.append("<h2>Against the roofline</h2>" + (
            f"<p>{html.escape(roofline.MEANING)}</p>" + _html_table(roofline.HEADER, found)
            if found else f"<p>No fractions of the roofline: {html.escape(why)}.</p>"))
    for t in data.tests:
        if not t.runs:
            continue
        parts.append(f"<section><h2>{html.escape(t.test)}</h2>")
        verdicts = {v["metric"]: v for v in t.verdicts}
        parts.append("<h3>Against the baseline (bars: medians; dots: repetitions)</h3>")
        parts.append(plots.baseline_bars([r["figures"] for r in t.runs], verdicts))
        parts.append("<h3>Latency distributions</h3>")
        parts.append(plots.latency_distributions(t.runs))
        series, changes = _history(data, t.test, data.header.get("host"))
        if any(len(s) > 1 for s in series.values()):
            parts.append("<h3>History (dashed: change points; dotted: the setup changed)</h3>")
            parts.append(plots.history_lines(series, changes))
        parts.append("</section>")
    parts.append("</body></html>")
    return "\n".join(parts)


def write_reports(data: ReportInput, folder: Path) -> tuple[Path, Path]:
    """Write report.md and report.html; append the Markdown to the GitHub job summary."""
    folder.mkdir(parents=True, exist_ok=True)
    md, page = folder / "report.md", folder / "report.html"
    text = render_markdown(data)
    write_text_atomic(md, text)
    write_text_atomic(page, render_html(data))
    summary = os.environ.get("GITHUB_STEP_SUMMARY")
    if summary:
        append_text(Path(summary), text)
    return md, page


@dataclass(frozen=True)
class Published:
    """What the end of a session wrote, and what it could not (one line each): a history
    or report it cannot write ends no session, it is said."""

    reports: tuple[Path, Path] | None
    problems: tuple[str, ...] = ()
    skipped: tuple[BadLine, ...] = ()
    """History lines passed over (a line cut short by a full disk)."""


def publish(results_dir: Path, run_id: str, outcomes: Mapping[str, Outcome],
            history: HistoryStore) -> Published | None:
    """End of a session: append this run's figures to the history, then write the reports.

    Only the process where all results converge calls it (the xdist controller)."""
    if not results_dir.is_dir():
        return None
    results = [r for r in read_folder(results_dir) if r.run_id == run_id]
    if not results and not outcomes:
        return None
    problems = []
    try:
        history.append(entry_from_result(r) for r in results)
    except (WriteError, HistoryError) as exc:
        problems.append(f"history not appended: {exc}")
    readable: HistoryStore | None = history
    try:
        history.read()  # its unreadable lines, said at the end of the session
    except HistoryError as exc:
        readable = None  # the reports go without history plots
        if not problems:
            problems.append(f"history not read: {exc}")
    reports = None
    try:
        reports = write_reports(collect(results, outcomes, run_id, readable), results_dir)
    except WriteError as exc:
        problems.append(f"reports not written: {exc}")
    return Published(reports, tuple(problems), tuple(history.skipped))
