"""What each figure is: its name (vllm bench serve's keys), its direction, whether it gates.

One list of headline figures serves every table (terminal, report.md, report.html,
merge summary, pytest-benchmark's extra_info).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

THROUGHPUTS = ("request_throughput", "output_throughput", "total_token_throughput")
LATENCIES = ("ttft", "tpot", "itl", "e2el")
PERCENTILES = (50, 90, 95, 99, 99.9)


def percentile_word(p: float) -> str:
    """vLLM's key spelling: 99 -> "99", 99.9 -> "99.9"."""
    return str(int(p)) if int(p) == p else str(p)


ACCURACY = "accuracy"
"""Right answers of the accuracy check ((right + 1) / (questions + 1)): gated, higher is
better, so a faster build that answers worse is a regression (accuracy/check.py). Judged on
its per-question outcomes (``accuracy_items_<k>``), by an exact paired test."""
ITEM_BITS = 48
"""Per-question outcomes ride in a repetition's figures as whole numbers of this many bits
(exact in a float), ``accuracy_items_0`` holding questions 0-47, and so on."""
CAPACITY = "max_rate_under_slo"
GRID_STEPS = {CAPACITY: "max_rate_step"}
"""A figure found on a grid, and the figure that holds its step (req/s): the gap between
the best passing rate and the lowest failing one above it (inf when the top rate held)."""
TAIL_GATED = ("p99_ttft_ms", "p99_itl_ms")
"""Tail latencies, gated (each its own family) only where their noise resolves the change a
test must resolve; elsewhere they warn."""
STEADINESS = "steadiness"
"""A build's own spread against the reference's, start to start and run to run (a verdict of
its own, judge/spreads.py): a build twice as noisy is a finding, lower is better."""


def item_figures(right: Sequence[bool]) -> dict[str, float]:
    """Per-question outcomes as figures (question i is bit i % ITEM_BITS of chunk i //
    ITEM_BITS)."""
    out: dict[str, float] = {}
    for k in range(0, len(right), ITEM_BITS):
        out[f"accuracy_items_{k // ITEM_BITS}"] = float(
            sum(1 << i for i, r in enumerate(right[k:k + ITEM_BITS]) if r))
    return out


def items_of(figures: dict[str, float]) -> list[bool] | None:
    """The per-question outcomes a repetition recorded, or None when it recorded none."""
    count = figures.get("accuracy_questions")
    if count is None or "accuracy_items_0" not in figures:
        return None
    out = []
    for i in range(int(count)):
        chunk = figures.get(f"accuracy_items_{i // ITEM_BITS}")
        if chunk is None:
            return None
        out.append(bool(int(chunk) >> (i % ITEM_BITS) & 1))
    return out


def _direction_table(percentiles: Iterable[float]) -> dict[str, str]:
    table = {name: "higher" for name in (*THROUGHPUTS, "request_goodput", CAPACITY, ACCURACY)}
    stats = ["mean", "median", "std", *(f"p{percentile_word(p)}" for p in percentiles)]
    for metric in LATENCIES:
        for stat in stats:
            table[f"{stat}_{metric}_ms"] = "lower"
    table[STEADINESS] = "lower"
    return table


METRIC_DIRECTIONS: dict[str, str] = _direction_table(PERCENTILES)
"""Every figure a verdict can judge: higher or lower is better."""

GATED_METRICS: frozenset[str] = frozenset(
    (*THROUGHPUTS, CAPACITY, ACCURACY, STEADINESS, *TAIL_GATED,
     *(f"median_{name}_ms" for name in LATENCIES)))
"""Throughputs, medians, capacity, accuracy and a build's steadiness fail a test; p99 TTFT
and ITL where their noise allows (``TAIL_GATED``); means, other tails and spreads move with
a single stall, so they only warn."""
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
