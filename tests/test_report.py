from __future__ import annotations

from pytest_mi300x.report import summary_table


def test_table_has_a_row_per_test_with_figures_and_validity() -> None:
    rows = [
        ("suites/test_headline.py::test_headline_rates[cp-on-qps-16]",
         {"request_throughput": 3.912, "output_throughput": 250.4, "median_ttft_ms": 41.26,
          "mean_tpot_ms": 20.5, "completed": 40, "failed": 0, "valid": True}),
        ("t::b", {"request_throughput": None, "completed": 3, "failed": 2, "valid": False}),
    ]
    lines = summary_table(rows)
    assert lines[0].split() == ["test", "req/s", "out", "tok/s", "med", "TTFT", "ms", "mean",
                                "TPOT", "ms", "completed", "failed", "valid"]
    assert lines[2].split()[1:] == ["3.91", "250.4", "41.3", "20.50", "40", "0", "yes"]
    assert lines[3].split()[1:] == ["-", "-", "-", "-", "3", "2", "NO"]
    assert len({len(line) for line in lines}) == 1
