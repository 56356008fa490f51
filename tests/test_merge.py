"""pytest-mi300x merge: result folders of a fleet run joined into one, with a Markdown summary."""

from __future__ import annotations

import io
from pathlib import Path

from pytest_mi300x.cli import main
from pytest_mi300x.reporting.merge import merge_folders
from pytest_mi300x.results.files import result_path, write_json_atomic
from pytest_mi300x.results.model import SCHEMA


def result(folder: Path, test: str, host: str, ttft: list[float]) -> None:
    runs = [{"figures": {"request_throughput": 10.0, "output_throughput": 640.0,
                         "median_ttft_ms": t, "mean_tpot_ms": 2.0}, "problems": []}
            for t in ttft]
    write_json_atomic(result_path(folder, test), {
        "schema": SCHEMA, "test": test, "runs": runs, "valid": True,
        "host": {"name": host}, "engine": {"build": "docker:rocm/vllm-ci:abc"},
        "gate": [{"status": "compared"}]})


def test_merge_keeps_each_source_apart_and_summarises(tmp_path: Path) -> None:
    a, b = tmp_path / "mi300x-01-shard1", tmp_path / "mi300x-02-shard1"
    result(a, "suites/t.py::test_x[cp-off]", "mi300x-01", [20.0, 30.0, 25.0])
    result(b, "suites/t.py::test_x[cp-off]", "mi300x-02", [40.0, 44.0])
    assert main(["merge", str(tmp_path / "merged"), str(a), str(b)]) == 0
    merged = tmp_path / "merged"
    assert len(list((merged / a.name).glob("*.json"))) == 1
    assert len(list((merged / b.name).glob("*.json"))) == 1
    summary = (merged / "summary.md").read_text()
    assert "| mi300x-01-shard1 | mi300x-01 | `suites/t.py::test_x[cp-off]` |" in summary
    # median TTFT of 20, 30, 25 and of 40, 44; mean TPOT 2; then the status and the gate
    assert "| 10.00 | 640.0 | 25.0 | - | - | 2.00 | measured | compared |" in summary
    assert "| 10.00 | 640.0 | 42.0 | - | - | 2.00 | measured | compared |" in summary


def test_a_source_without_results_is_listed_not_fatal(tmp_path: Path) -> None:
    ran = tmp_path / "downloaded" / "night-mi300x-01"
    # A downloaded night artifact: run folders under .perf-results/, and other files.
    result(ran / ".perf-results" / "run-1", "suites/t.py::test_x[cp-off]", "mi300x-01", [20.0])
    (ran / "night-out").mkdir(parents=True)
    (ran / "night-out" / "status").write_text("status=green\nexit=0\n")
    empty = tmp_path / "downloaded" / "night-mi300x-02"
    empty.mkdir()
    offline = tmp_path / "downloaded" / "night-mi300x-03"
    err = io.StringIO()
    assert merge_folders(tmp_path / "merged", [ran, empty, offline], err=err) == 0
    merged = tmp_path / "merged"
    assert (merged / "night-mi300x-01" / ".perf-results" / "run-1").is_dir()
    summary = (merged / "summary.md").read_text()
    assert "1 result(s) from 1 of 3 source(s)." in summary
    assert "| night-mi300x-01 | mi300x-01 | `suites/t.py::test_x[cp-off]` |" in summary
    assert summary.endswith("## Sources without results\n\n"
                            "- night-mi300x-02: no result files\n"
                            "- night-mi300x-03: no such folder (nothing was uploaded)\n")
    lines = err.getvalue().splitlines()
    assert len(lines) == 2 and "holds no pytest-mi300x/result/1 results" in lines[0]
    assert "night-mi300x-03 does not exist" in lines[1]


def test_merge_refuses_two_sources_of_one_name(tmp_path: Path) -> None:
    a, b = tmp_path / "x" / "shard1", tmp_path / "y" / "shard1"
    result(a, "suites/t.py::test_x", "h", [1.0])
    result(b, "suites/t.py::test_x", "h", [1.0])
    err = io.StringIO()
    assert merge_folders(tmp_path / "out", [a, b], err=err) == 2
    assert err.getvalue().count("\n") == 1 and "two sources share a folder name" in err.getvalue()
