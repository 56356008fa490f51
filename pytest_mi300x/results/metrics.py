"""What each figure is: its name (vllm bench serve's keys), its direction, whether it gates.

One list of headline figures serves every table (terminal, report.md, report.html,
merge summary, pytest-benchmark's extra_info).
"""

from __future__ import annotations

from collections.abc import Iterable

THROUGHPUTS = ("request_throughput", "output_throughput", "total_token_throughput")
LATENCIES = ("ttft", "tpot", "itl", "e2el")
PERCENTILES = (50, 90, 95, 99, 99.9)


def percentile_word(p: float) -> str:
    """vLLM's key spelling: 99 -> "99", 99.9 -> "99.9"."""
    return str(int(p)) if int(p) == p else str(p)


ACCURACY = "accuracy"
"""Right answers of the accuracy check ((right + 1) / (questions + 1)): gated, higher is
better, so a faster build that answers worse is a regression (accuracy/check.py)."""


def _direction_table(percentiles: Iterable[float]) -> dict[str, str]:
    table = {name: "higher" for name in (*THROUGHPUTS, "request_goodput", "max_rate_under_slo",
                                         ACCURACY)}
    stats = ["mean", "median", "std", *(f"p{percentile_word(p)}" for p in percentiles)]
    for metric in LATENCIES:
        for stat in stats:
            table[f"{stat}_{metric}_ms"] = "lower"
    return table


METRIC_DIRECTIONS: dict[str, str] = _direction_table(PERCENTILES)
"""Every figure a verdict can judge: higher or lower is better."""

GATED_METRICS: frozenset[str] = frozenset(
    (*THROUGHPUTS, "max_rate_under_slo", ACCURACY,
     *(f"median_{name}_ms" for name in LATENCIES)))
"""Throughputs and medians fail a test; means, tails and spreads move with a single
stall, so they only warn."""
WARN_METRICS: frozenset[str] = frozenset(METRIC_DIRECTIONS) - GATED_METRICS

HEADLINE: tuple[tuple[str, str, str], ...] = (
    ("request_throughput", "req/s", "{:.2f}"),
    ("output_throughput", "out tok/s", "{:.1f}"),
    ("median_ttft_ms", "med TTFT ms", "{:.1f}"),
    ("mean_ttft_ms", "mean TTFT ms", "{:.1f}"),
    ("median_tpot_ms", "med TPOT ms", "{:.2f}"),
    ("mean_tpot_ms", "mean TPOT ms", "{:.2f}"),
)
"""(figure, column label, format): the seed's own figures (requests/s, mean TTFT, mean
TPOT) beside the gated medians."""
HEADLINE_FIGURES: tuple[str, ...] = tuple(name for name, _, _ in HEADLINE)


def is_throughput(metric: str) -> bool:
    return metric in THROUGHPUTS
