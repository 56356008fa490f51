from __future__ import annotations

import pytest

from pytest_mi300x.reporting.outcomes import Outcome
from pytest_mi300x.reporting.terminal import gate_cell, summary_table


def test_table_has_a_row_per_test_with_figures_and_how_it_ended() -> None:
    name = "suites/test_headline.py::test_headline_rates[cp-on-qps-16]"
    rows = {
        name: {"request_throughput": 3.912, "output_throughput": 250.4, "median_ttft_ms": 41.26,
               "mean_ttft_ms": 45.0, "median_tpot_ms": 20.1, "mean_tpot_ms": 20.5,
               "completed": 40, "failed": 0, "valid": True},
        "t::b": {"request_throughput": None, "completed": 3, "failed": 2, "valid": False},
    }
    outcomes = {name: Outcome("passed"),
                "t::b": Outcome("failed", "InvalidRun: 2 of 5 requests failed", "invalid run"),
                "t::c": Outcome("skipped", "runs on the GPU host: needs mi300x")}
    lines = summary_table(outcomes, rows)
    assert lines[0].split() == ["test", "req/s", "out", "tok/s", "med", "TTFT", "ms", "mean",
                                "TTFT", "ms", "med", "TPOT", "ms", "mean", "TPOT", "ms",
                                "done", "failed", "vs", "baseline"]
    assert lines[2].split()[1:] == ["3.91", "250.4", "41.3", "45.0", "20.10", "20.50", "40",
                                    "0", "-"]
    assert lines[3].endswith("INVALID RUN: InvalidRun: 2 of 5 requests failed")
    assert lines[4].split()[1:7] == ["-"] * 6
    assert lines[4].endswith("SKIPPED: runs on the GPU host: needs mi300x")


def verdict(metric: str, kind: str, gated: bool = True) -> dict[str, object]:
    return {"metric": metric, "kind": kind, "gated": gated}


@pytest.mark.parametrize(("gate", "cell"), [
    ({"status": "no baseline"}, "no baseline"),
    ({"status": "baseline written"}, "written"),
    ({"status": "compared", "verdicts": [verdict("request_throughput", "regression"),
                                         verdict("median_ttft_ms", "improvement")]},
     "REGRESSION: request_throughput"),
    ({"status": "compared", "verdicts": [verdict("median_ttft_ms", "improvement")]},
     "improved: median_ttft_ms"),
    ({"status": "compared", "verdicts": [verdict("p99_ttft_ms", "regression", gated=False),
                                         verdict("median_ttft_ms", "no change")]},
     "no change (warn: p99_ttft_ms)"),
])
def test_gate_cell_says_the_verdict_in_a_few_words(gate: dict[str, object], cell: str) -> None:
    assert gate_cell({"gate": gate}) == cell


def test_the_capacity_column_shows_only_when_a_test_measured_it() -> None:
    rows = {"s::cap[default]": {"max_rate_under_slo": 12.25, "completed": 40, "failed": 0,
                                "valid": True},
            "s::rate[default]": {"request_throughput": 3.9, "valid": True}}
    lines = summary_table({}, rows)
    assert "SLO req/s" in lines[0]
    assert "12.25" in lines[2]
    assert "SLO req/s" not in summary_table({}, {"s::rate": rows["s::rate[default]"]})[0]


def test_the_roofline_fractions_show_on_a_gpu_host_and_the_cpu_host_says_why() -> None:
    from pytest_mi300x.reporting.report import collect, render_html, render_markdown
    from pytest_mi300x.results.model import Result
    from tests.result_docs import result_doc

    gpu = result_doc("s::t[default]", [4.0, 4.2])
    for run in gpu["runs"]:
        run["figures"].update(roofline_decode_bw_pct=41.5, roofline_prefill_compute_pct=12.25)
    gpu["host_fit"] = {"roofline": {"gpus": 4, "accelerator": "mi300x",
                                    "peak_pflops_bf16": 5.2296, "hbm_tb_s": 21.2}}
    text = render_markdown(collect([Result(gpu)], {}, "run-1"))
    assert "## Against the roofline" in text
    assert "| s::t[default] | 41.5% | 12.2% | 4 x mi300x: 5.23 PFLOP/s BF16, 21.2 TB/s |" in text
    assert "Decode bandwidth: the weights read once per decode step" in text
    assert "41.5%" in render_html(collect([Result(gpu)], {}, "run-1"))
    cpu = result_doc("s::t[default]", [4.0])
    cpu["host_fit"] = {"roofline": None, "why": "no roofline on host 'cpu' (a CPU host)"}
    text = render_markdown(collect([Result(cpu)], {}, "run-1"))
    assert "No fractions of the roofline: no roofline on host 'cpu' (a CPU host)." in text
    # The terminal shows the columns only where a result has them.
    rows = {"s::t": {"roofline_decode_bw_pct": 41.5, "roofline_prefill_compute_pct": 12.25,
                     "valid": True}}
    assert "HBM bw %" in summary_table({}, rows)[0] and "41.5" in summary_table({}, rows)[2]
    assert "HBM bw %" not in summary_table({}, {"s::t": {"valid": True}})[0]
