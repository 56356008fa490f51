from __future__ import annotations

import re
from pathlib import Path

import pytest

from pytest_mi300x.cli import main
from pytest_mi300x.judge.verdict import judge_all
from pytest_mi300x.reporting.outcomes import Outcome
from pytest_mi300x.reporting.report import collect, publish, render_html, render_markdown
from pytest_mi300x.reporting.terminal import verdict_table
from pytest_mi300x.results.history import HistoryStore, entry_from_result
from pytest_mi300x.results.model import Result
from tests.result_docs import result, result_doc, write_doc

A, B = "suites/t.py::test_a[qps-16]", "suites/t.py::test_b[qps-1000]"


def judged(base: list[float], now: list[float]) -> list[dict[str, object]]:
    """Verdicts of each value as its own server start (runs inside one start never stand in
    for starts, and a regression needs more than one start of the candidate)."""
    reps = lambda xs: [{"request_throughput": x, "median_ttft_ms": 20.0} for x in xs]  # noqa: E731
    return [v.to_dict() for v in judge_all(reps(base), reps(now),
                                           baseline_starts=range(len(base)),
                                           candidate_starts=range(len(now)))]


@pytest.fixture
def docs() -> list[dict[str, object]]:
    return [result_doc(A, [7.0, 7.1, 6.9], verdicts=judged([10.0, 10.1, 9.9, 10.0, 10.2],
                                                         [7.0, 7.1, 6.9])),
            result_doc(B, [20.0, 20.4, 19.8])]


def ended(**outcomes: str) -> dict[str, Outcome]:
    names = {"a": A, "b": B, "c": "suites/t.py::test_c"}
    return {names[k]: Outcome(*v.split(": ", 1)) for k, v in outcomes.items()}


def test_markdown_has_the_verdict_table_figures_and_regression_details(docs) -> None:
    text = render_markdown(collect([Result(d) for d in docs], ended(a="failed", b="passed"),
                                   "run-1"))
    assert ("| test | metric | baseline | now | change | threshold | spread | resolves "
            "| verdict |") in text
    row = next(line for line in text.splitlines()
               if line.startswith(f"| {A} | request_throughput"))
    assert re.search(r"\| 10 \| 7 \| -30\.\d% \| \d+\.\d% \| \d+\.\d% \| \d+\.\d% \| "
                     r"regression \|", row)
    assert "1 failed, 1 passed; 1 gated regression verdict(s)" in text
    assert "baseline 10 [10, 10.1, 9.9, 10, 10.2], now 7 [7, 7.1, 6.9]" in text
    assert f"| {B} | passed | 3 | 20.00 |" in text


def test_a_test_that_failed_before_measuring_still_has_a_row(docs) -> None:
    text = render_markdown(collect([Result(d) for d in docs],
                                   ended(c="error: ServerExited: the engine died"), "run-1"))
    assert "| suites/t.py::test_c | error: ServerExited: the engine died | 0 | - |" in text


def test_html_has_tables_and_one_plot_set_per_measured_test(docs, tmp_path: Path) -> None:
    history = HistoryStore(tmp_path / "history.jsonl")
    history.append(entry_from_result(result(A, [v], run_id=f"r{i}",
                                                date=f"2026-11-{i + 1:02d}T00:00:00Z"))
                   for i, v in enumerate([10.0, 10.1, 9.9, 7.0, 7.1]))
    page = render_html(collect([Result(d) for d in docs], ended(a="failed", b="passed"),
                               "run-1", history))
    assert page.startswith("<!doctype html>") and page.rstrip().endswith("</html>")
    assert page.count("<section>") == 2
    # Bars and distributions for both tests, history lines only where history exists.
    assert page.count("<svg") == 5
    assert "History (dashed: change points; dotted: the setup changed)" in page
    assert '<td class="bad">regression</td>' in page


def test_publish_appends_history_writes_both_files_and_the_job_summary(
        docs, tmp_path: Path, monkeypatch) -> None:
    results = tmp_path / "results"
    for d in docs:
        write_doc(results, d)
    write_doc(results, result_doc("t::older", [1.0], run_id="older-run"))
    summary = tmp_path / "summary.md"
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    history = HistoryStore(tmp_path / "history.jsonl")
    published = publish(results, "run-1", ended(a="failed", b="passed"), history)
    assert published is not None and published.reports is not None
    assert published.problems == () and published.skipped == ()
    md, page = published.reports
    assert md.read_text() == summary.read_text()
    assert "<svg" in page.read_text()
    assert sorted(e["test"] for e in history.read()) == [A, B]


def test_publish_without_results_writes_nothing(tmp_path: Path) -> None:
    history = HistoryStore(tmp_path / "history.jsonl")
    assert publish(tmp_path / "none", "run-1", {}, history) is None
    assert not history.path.exists()


def test_terminal_verdict_table_lists_gated_metrics_and_warnings(docs) -> None:
    verdicts = judged([10.0, 10.1, 9.9, 10.0, 10.2], [7.0, 7.1, 6.9])
    lines = verdict_table({A: {"gate": {"status": "compared", "verdicts": verdicts}},
                           B: {"gate": {"status": "no baseline"}}})
    assert lines[0].split() == ["test", "metric", "baseline", "now", "change", "threshold",
                                "spread", "resolves", "verdict"]
    assert any("request_throughput" in line and "regression" in line for line in lines)
    assert not any(B in line for line in lines)
    assert verdict_table({B: {"gate": {"status": "no baseline"}}}) == []


def test_report_command_rebuilds_reports_from_a_results_folder(docs, tmp_path: Path,
                                                             capsys) -> None:
    for d in docs:
        write_doc(tmp_path, d)
    assert main(["report", str(tmp_path)]) == 0
    text = (tmp_path / "report.md").read_text()
    assert f"| {A} | regression |" in text and f"| {B} | measured |" in text
    assert main(["report", str(tmp_path / "missing")]) == 2
    assert "holds no result files" in capsys.readouterr().err
