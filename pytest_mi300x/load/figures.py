"""Serving figures of a load run, defined exactly as `vllm bench serve` defines them."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from pytest_mi300x.load.records import LoadRun, RequestRecord
from pytest_mi300x.results.metrics import METRIC_DIRECTIONS, percentile_word

__all__ = ["METRIC_DIRECTIONS", "check_slos", "compute_figures", "find_problems",
           "output_length_drift"]


# Stored with every figure: tools disagree on what TPOT and ITL mean.
FORMULAS: dict[str, str] = {
    "ttft": "vllm-bench-serve: first SSE chunk with non-empty choices minus send time",
    "tpot": (
        "vllm-bench-serve: mean over requests with completion_tokens > 1 of "
        "(e2el - ttft) / (completion_tokens - 1)"
    ),
    "itl": (
        "vllm-bench-serve: gaps between consecutive choices chunks (per chunk, not per "
        "token), pooled over requests"
    ),
    "e2el": "vllm-bench-serve: last choices chunk minus send time (usage chunk excluded)",
    "tokens": (
        "vllm-bench-serve: server usage.prompt_tokens / usage.completion_tokens; "
        "without usage, the target prompt length and the count of choices chunks"
    ),
    "throughput": "vllm-bench-serve: totals over completed requests / whole run duration",
    "goodput": (
        "vllm-bench-serve (DistServe): completed requests with every given SLO met "
        "(ttft, tpot, e2el <= SLO ms) / whole run duration"
    ),
    "aggregates": "mean, median, population std, numpy linear percentiles; ms",
}


def _output_tokens(record: RequestRecord) -> int:
    # vllm trusts usage when it is truthy; chunks are the fallback (may undercount).
    return record.completion_tokens or len(record.chunk_times)


def _input_tokens(record: RequestRecord) -> int:
    return record.prompt_tokens if record.prompt_tokens is not None else record.prompt_len


def _stats(
    name: str, values: list[float], percentiles: Sequence[float]
) -> dict[str, float]:
    # `values or 0` is vllm's rule: an empty list reports 0, not NaN.
    data: list[float] | int = values or 0
    out = {
        f"mean_{name}_ms": float(np.mean(data)) * 1000,
        f"median_{name}_ms": float(np.median(data)) * 1000,
        f"std_{name}_ms": float(np.std(data)) * 1000,
    }
    for p in percentiles:
        out[f"p{percentile_word(p)}_{name}_ms"] = float(np.percentile(data, p)) * 1000
    return out


SLO_NAMES = ("ttft", "tpot", "e2el")


def check_slos(slos: dict[str, float]) -> dict[str, float]:
    """SLOs in ms keyed ttft/tpot/e2el (vllm bench serve's --goodput); ValueError otherwise."""
    for name, value in slos.items():
        if name not in SLO_NAMES:
            raise ValueError(f"SLO {name!r} is not one of {', '.join(SLO_NAMES)}; "
                             "write e.g. {'ttft': 200, 'tpot': 50} (milliseconds)")
        if not isinstance(value, int | float) or value < 0:
            raise ValueError(f"SLO {name}={value!r} must be a number of ms >= 0")
    return dict(slos)


ARRIVAL_BOUND_SHARE = 0.9
"""A paced run whose throughput reached this share of the offered rate was paced by its
arrivals, not by the engine."""


def compute_figures(
    run: LoadRun, percentiles: Sequence[float] = (99,),
    slos: dict[str, float] | None = None,
) -> dict[str, float | int]:
    """The figures of vllm bench serve's result JSON, same keys and formulas.

    With `slos` (ms; ttft, tpot, e2el), `request_goodput` is DistServe's goodput
    as vllm computes it: completed requests meeting every SLO (value <= SLO;
    TPOT counts 0 for one-token outputs) per second of the whole run.
    """
    limits = {k: v / 1000 for k, v in check_slos(slos or {}).items()}
    good = 0
    ttfts: list[float] = []
    tpots: list[float] = []
    itls: list[float] = []
    e2els: list[float] = []
    completed = 0
    total_input = 0
    total_output = 0
    for record in run.records:
        if not record.ok or record.ttft is None or record.latency is None:
            continue
        completed += 1
        output = _output_tokens(record)
        total_input += _input_tokens(record)
        total_output += output
        ttfts.append(record.ttft)
        e2els.append(record.latency)
        tpot = 0.0
        if output > 1:
            tpot = (record.latency - record.ttft) / (output - 1)
            tpots.append(tpot)
        if limits:
            seen = {"ttft": record.ttft, "tpot": tpot, "e2el": record.latency}
            good += all(seen[k] <= v for k, v in limits.items())
        times = record.chunk_times
        itls.extend(later - earlier for earlier, later in zip(times, times[1:], strict=False))

    duration = run.duration
    rate = (1.0 / duration) if duration > 0 else 0.0
    figures: dict[str, float | int] = {
        "completed": completed,
        "failed": len(run.records) - completed,
        "total_input_tokens": total_input,
        "total_output_tokens": total_output,
        "duration": duration,
        "request_throughput": completed * rate,
        "output_throughput": total_output * rate,
        "total_token_throughput": (total_input + total_output) * rate,
    }
    if limits:
        figures["request_goodput"] = good * rate
        figures["slo_attainment"] = good / len(run.records) if run.records else 0.0
    offered = run.arrivals.get("request_rate")
    if isinstance(offered, int | float) and "ramp_up" not in run.arrivals:
        # The engine kept the offered pace: throughput then measures the schedule, not the
        # engine (a 10% slower engine finishes the same schedule a few ms later).
        figures["arrival_bound"] = float(completed * rate >= ARRIVAL_BOUND_SHARE * offered)
    figures.update(_stats("ttft", ttfts, percentiles))
    figures.update(_stats("tpot", tpots, percentiles))
    figures.update(_stats("itl", itls, percentiles))
    figures.update(_stats("e2el", e2els, percentiles))
    return figures


def _mismatches(
    records: list[RequestRecord], what: str, got_of: str, target_of: str
) -> str | None:
    bad = [r for r in records if getattr(r, got_of) != getattr(r, target_of)]
    if not bad:
        return None
    first = bad[0]
    got, target = getattr(first, got_of), getattr(first, target_of)
    return (
        f"{len(bad)} of {len(records)} completed requests had {what} != target, "
        f"e.g. request {first.index}: {got} vs target {target}"
    )


def find_problems(run: LoadRun, exact_output: bool = True) -> list[str]:
    """Reasons the run is not a valid measurement; empty when it is.

    ``exact_output=False`` is for engines that stop at EOS whatever the request
    says (TGI): their outputs are shorter than asked, which is recorded as drift
    (``output_length_drift``), not a broken run; per-token figures use the real lengths.
    """
    total = len(run.records)
    if total == 0:
        return ["the run had no requests"]
    problems: list[str] = list(run.saturation)
    done = [r for r in run.records if r.ok]
    failed = [r for r in run.records if not r.ok]
    if not done:
        problems.append(f"no request completed (0 of {total})")
    if failed:
        shown = "; ".join(
            f"#{r.index}: {(r.error or 'no error text')[:300]}" for r in failed[:3]
        )
        problems.append(f"{len(failed)} of {total} requests failed; first errors: {shown}")
    with_usage = [
        r for r in done if r.prompt_tokens is not None and r.completion_tokens is not None
    ]
    no_usage = [r for r in done if r.prompt_tokens is None or r.completion_tokens is None]
    if no_usage:
        problems.append(
            f"{len(no_usage)} of {len(done)} completed requests had no server usage "
            f"(e.g. request {no_usage[0].index}); token counts cannot be trusted"
        )
    checks = [("prompt_tokens", "prompt_tokens", "prompt_len")]
    if exact_output:
        checks.append(("completion_tokens", "completion_tokens", "output_len"))
    for what, got, target in checks:
        reason = _mismatches(with_usage, what, got, target)
        if reason is not None:
            problems.append(reason)
    return problems


DRIFT_WARN_PCT = 10.0


def output_length_drift(run: LoadRun) -> dict[str, float]:
    """Real output lengths against the asked ones, over completed requests with usage."""
    pairs = [(r.completion_tokens, r.output_len) for r in run.records
             if r.ok and r.completion_tokens is not None and r.output_len]
    if not pairs:
        return {}
    real = sum(p[0] for p in pairs) / len(pairs)
    asked = sum(p[1] for p in pairs) / len(pairs)
    return {"mean_output_len_real": real, "mean_output_len_target": asked,
            "output_len_drift_pct": 100.0 * (real - asked) / asked}
