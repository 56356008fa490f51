"""Figures of the HTML report, drawn with matplotlib and returned as inline SVG."""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from typing import Any

from pytest_mi300x.judge.changepoints import ChangePoint
from pytest_mi300x.results.history import Point, setup_breaks
from pytest_mi300x.results.model import median

BAR_METRICS = ("request_throughput", "output_throughput", "median_ttft_ms", "median_tpot_ms",
               "median_itl_ms", "median_e2el_ms", "max_rate_under_slo")
HISTORY_METRICS = ("request_throughput", "median_ttft_ms", "median_tpot_ms")
KIND_COLORS = {"regression": "#c62828", "improvement": "#2e7d32", "no change": "#607d8b",
               "inconclusive": "#ef6c00"}
BASELINE_COLOR = "#b0bec5"


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")  # no display on CI runners
    matplotlib.rcParams["svg.fonttype"] = "none"
    import matplotlib.pyplot as plt

    return plt


def _svg(fig: Any) -> str:
    buf = io.StringIO()
    fig.savefig(buf, format="svg", bbox_inches="tight")
    _pyplot().close(fig)
    text = buf.getvalue()
    return text[text.index("<svg"):]


def _grid(n: int, cols: int) -> tuple[int, int]:
    return max(1, math.ceil(n / cols)), min(n, cols)


def baseline_bars(runs: Sequence[Mapping[str, float]],
                  verdicts: Mapping[str, Mapping[str, Any]]) -> str:
    """Per metric: baseline and current medians as bars, every repetition as a dot."""
    plt = _pyplot()
    metrics = [m for m in BAR_METRICS if any(m in r for r in runs)]
    if not metrics:
        return ""  # nothing to draw (a grid of no columns is an error to matplotlib)
    rows, cols = _grid(len(metrics), 3)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.6 * rows), squeeze=False)
    for ax in axes.flat[len(metrics):]:
        ax.set_visible(False)
    for ax, metric in zip(axes.flat, metrics, strict=False):
        now = [float(r[metric]) for r in runs if metric in r]
        v = verdicts.get(metric)
        base = [float(x) for x in v.get("baseline", [])] if v else []
        color = KIND_COLORS.get(str(v["kind"]), "#546e7a") if v else "#546e7a"
        labels, columns, colors = [], [], []
        if base:
            labels.append("baseline")
            columns.append(base)
            colors.append(BASELINE_COLOR)
        labels.append("now")
        columns.append(now)
        colors.append(color)
        for x, (values, c) in enumerate(zip(columns, colors, strict=True)):
            ax.bar(x, median(values), color=c, width=0.6)
            ax.scatter([x] * len(values), values, color="black", s=12, zorder=3)
        ax.set_xticks(range(len(labels)), labels)
        title = metric
        if v:
            change = float(v.get("change_pct", math.nan))
            title += f"\n{v['kind']}" + ("" if math.isnan(change) else f" ({change:+.1f}%)")
        ax.set_title(title, fontsize=9, color=color if v else "black")
        ax.tick_params(labelsize=8)
    fig.tight_layout()
    return _svg(fig)


def _per_token_ms(record: Mapping[str, Any]) -> float | None:
    tokens = int(record.get("completion_tokens") or 0)
    ttft, latency = record.get("ttft"), record.get("latency")
    if tokens < 2 or ttft is None or latency is None:
        return None
    return (float(latency) - float(ttft)) / (tokens - 1) * 1000.0


def latency_distributions(runs: Sequence[Mapping[str, Any]]) -> str:
    """Empirical CDFs of per-request TTFT, TPOT and E2E latency, one line per repetition."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(10, 2.8))
    pick = {
        "TTFT (ms)": lambda r: None if r.get("ttft") is None else float(r["ttft"]) * 1000.0,
        "TPOT (ms)": _per_token_ms,
        "E2E latency (ms)": lambda r: None if r.get("latency") is None
        else float(r["latency"]) * 1000.0,
    }
    for ax, (label, get) in zip(axes, pick.items(), strict=True):
        for i, run in enumerate(runs):
            values = sorted(v for rec in run.get("records", []) if not rec.get("error")
                            and (v := get(rec)) is not None)
            if values:
                ys = [(k + 1) / len(values) for k in range(len(values))]
                ax.step(values, ys, where="post", linewidth=1, label=f"rep {i + 1}")
        ax.set_xlabel(label, fontsize=8)
        ax.set_ylabel("share of requests", fontsize=8)
        ax.tick_params(labelsize=8)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    return _svg(fig)


def history_lines(series: Mapping[str, Sequence[Point]],
                  changes: Mapping[str, Sequence[ChangePoint]]) -> str:
    """A metric per panel over runs, change points as dashed lines with their step."""
    plt = _pyplot()
    metrics = [m for m in HISTORY_METRICS if series.get(m)]
    fig, axes = plt.subplots(1, max(1, len(metrics)), figsize=(3.6 * max(1, len(metrics)), 2.8),
                             squeeze=False)
    for ax, metric in zip(axes.flat, metrics, strict=False):
        points = series[metric]
        ax.plot(range(len(points)), [p.value for p in points], marker="o", markersize=3,
                linewidth=1, color="#37474f")
        # each run's spread over its repetitions (what one point can be trusted to)
        low, high = zip(*(p.spread(metric) for p in points), strict=True)
        ax.vlines(range(len(points)), low, high, color="#90a4ae", linewidth=2, alpha=0.7)
        for index in setup_breaks(points):
            ax.axvline(index - 0.5, linestyle=":", color="#90a4ae", linewidth=1)
        for cp in changes.get(metric, []):
            ax.axvline(cp.index - 0.5, linestyle="--", color=KIND_COLORS[cp.kind], linewidth=1)
            ax.text(cp.index - 0.4, 0.96, f"{cp.change_pct:+.0f}%", fontsize=7, ha="left",
                    va="top", color=KIND_COLORS[cp.kind], transform=ax.get_xaxis_transform())
        # a release sweep reads by engine version, a nightly of one build by date
        versions = {p.engine_version for p in points}
        ticks = list(range(len(points)))[:: max(1, len(points) // 8 if len(versions) > 1
                                                 else len(points) // 6)]
        labels = [points[i].engine_version if len(versions) > 1 else points[i].date[5:10]
                  for i in ticks]
        ax.set_xticks(ticks, labels, fontsize=7, rotation=30 if len(versions) > 1 else 0)
        ax.set_title(metric, fontsize=9)
        ax.tick_params(labelsize=8)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return _svg(fig)
