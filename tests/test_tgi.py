"""TGI under load: its tokenizer adapter, its stream, and a suite run against a TGI double.

The double (tests/doubles/tgi_server.py) speaks TGI's API; its model folder
(tests/data/tgi-double-model) holds a real byte-level BPE tokenizer.json made with
Hugging Face ``tokenizers``, so the harness decodes with the same file the double
counts with. What is under test is the harness, never TGI.
"""

from __future__ import annotations

import json
import shutil
import sys
import textwrap
from pathlib import Path

import pytest

from pytest_mi300x.engines.base import EngineUnsupported
from pytest_mi300x.engines.tgi import TGIEngine
from pytest_mi300x.load.figures import find_problems, output_length_drift
from pytest_mi300x.load.spread import run_load_sync
from pytest_mi300x.workload.arrivals import Arrivals
from pytest_mi300x.workload.datasets import RandomDataset
from pytest_mi300x.workload.tokenizer import TGIServedTokenizer
from pytest_mi300x.workload.vocab import UnsupportedTokenizer, VocabDecoder

sys.path.insert(0, str(Path(__file__).parent / "doubles"))
from tgi_server import Settings, TGIDouble  # noqa: E402

pytest_plugins = ["pytester"]

DOUBLES = Path(__file__).parent / "doubles"
MODEL = Path(__file__).parent / "data" / "tgi-double-model"


@pytest.fixture
def tgi() -> TGIDouble:
    with TGIDouble(Settings(model_id=str(MODEL), api_key="sk-tgi", ttft=0.005,
                            itl=0.001)) as server:
        yield server


def test_the_double_counts_as_hugging_face_tokenizers_does() -> None:
    from tgi_server import DoubleTokenizer

    double = DoubleTokenizer(MODEL)
    for ref in json.loads((MODEL / "reference-encodings.json").read_text()):
        assert [i for i, _, _ in double.encode(ref["text"])] == ref["ids"], ref["text"]


def test_vocab_decoder_inverts_byte_level_bpe() -> None:
    decoder = VocabDecoder.from_model_dir(MODEL)
    for ref in json.loads((MODEL / "reference-encodings.json").read_text()):
        assert decoder.decode(ref["ids"][1:]) == ref["text"]  # BOS dropped
    assert decoder.decode([0]) == "<s>"  # added tokens decode as their content
    assert decoder.describe()["decoder"] == "ByteLevel"


def test_vocab_decoder_runs_sentencepiece_style_decoders() -> None:
    vocab = {"<unk>": 0, "<s>": 1, **{f"<0x{b:02X}>": 2 + b for b in range(256)},
             "▁hello": 258, "▁world": 259, "▁▁": 260}
    llama2 = {"model": {"type": "BPE", "vocab": vocab, "merges": []},
              "decoder": {"type": "Sequence", "decoders": [
                  {"type": "Replace", "pattern": {"String": "▁"}, "content": " "},
                  {"type": "ByteFallback"}, {"type": "Fuse"},
                  {"type": "Strip", "content": " ", "start": 1, "stop": 0}]}}
    decoder = VocabDecoder(llama2)
    assert decoder.decode([258, 259]) == "hello world"
    assert decoder.decode([258, 2 + 0xC3, 2 + 0xA9]) == "hello\u00e9"  # bytes fused: é
    assert decoder.decode([258, 2 + 0xC3]) == "hello\ufffd"  # a cut sequence: one per byte
    meta = {"model": {"vocab": vocab}, "decoder": {"type": "Metaspace", "replacement": "▁",
                                                   "prepend_scheme": "always"}}
    assert VocabDecoder(meta).decode([260, 258]) == " hello"  # first token: every mark dropped
    with pytest.raises(UnsupportedTokenizer, match="decoder 'WordPiece'"):
        VocabDecoder({"model": {"vocab": vocab}, "decoder": {"type": "WordPiece"}})


def test_tgi_tokenizer_makes_prompts_of_exact_length_through_tokenize(tgi: TGIDouble) -> None:
    engine = TGIEngine("double")
    tokenizer = engine.tokenizer(tgi.base_url, "sk-tgi", str(MODEL), 640, frozenset({0, 1}),
                                 str(MODEL))
    assert isinstance(tokenizer, TGIServedTokenizer)
    requests = RandomDataset(input_len=96, output_len=8, num_prompts=20, seed=3).build(tokenizer)
    for request in requests:
        assert len(tgi.tokenizer.encode(request.prompt)) == request.prompt_len == 96
    assert tokenizer.count_chat("hello") > len(tokenizer.encode("hello"))
    assert tokenizer.describe()["exact"] is True


def test_tgi_tokenizer_is_unsupported_without_a_readable_tokenizer_json(
        tgi: TGIDouble, tmp_path: Path) -> None:
    with pytest.raises(EngineUnsupported, match="no /detokenize"):
        TGIEngine("double").tokenizer(tgi.base_url, "sk-tgi", "m", 10, frozenset(),
                                      str(tmp_path))
    with pytest.raises(EngineUnsupported, match="/tokenize does not count"):
        TGIEngine("double").tokenizer(tgi.base_url, "wrong-key", "m", 10, frozenset(),
                                      str(MODEL))


def test_client_reads_tgi_streams_usage_in_the_last_token_event(tgi: TGIDouble) -> None:
    tokenizer = TGIEngine("double").tokenizer(tgi.base_url, "sk-tgi", str(MODEL), 640,
                                              frozenset({0, 1}), str(MODEL))
    requests = RandomDataset(input_len=32, output_len=24, num_prompts=30).build(tokenizer)
    run = run_load_sync(base_url=tgi.base_url, api_key="sk-tgi", model=str(MODEL),
                        requests=requests, arrivals=Arrivals(), seed=0)
    assert all(r.ok for r in run.records), [r.error for r in run.records]
    assert all(r.prompt_tokens == r.prompt_len for r in run.records)
    # Every token event is counted, the usage-carrying last one included.
    assert all(len(r.chunk_times) == r.completion_tokens for r in run.records)
    short = [r for r in run.records if r.completion_tokens < r.output_len]
    assert 0 < len(short) < len(run.records)  # some met EOS: TGI ignores ignore_eos
    assert find_problems(run, exact_output=False) == []
    assert output_length_drift(run)["output_len_drift_pct"] < 0
    assert tgi.stats.bodies[0]["ignore_eos"] is True  # sent, and ignored


def test_over_max_concurrent_requests_tgi_answers_429(tmp_path: Path) -> None:
    settings = Settings(model_id=str(MODEL), max_concurrent_requests=4, ttft=0.2)
    with TGIDouble(settings) as server:
        tokenizer = TGIServedTokenizer(server.base_url, "", 640, frozenset({0, 1}),
                                       VocabDecoder.from_model_dir(MODEL))
        requests = RandomDataset(16, 4, 10).build(tokenizer)
        run = run_load_sync(base_url=server.base_url, api_key="", model="m",
                            requests=requests, arrivals=Arrivals(), seed=0)
    errors = [r.error for r in run.records if r.error]
    assert len(errors) == 6 and all("HTTP 429" in e and "overloaded" in e for e in errors)


# -- a suite run through pytest, TGI's launcher replaced by the double ------------------

SUITE = """
import pytest
from pytest_mi300x import Arrivals, FlagSet, RandomDataset, Workload, flag_sets

@pytest.fixture
def serving_engine():
    return "tgi"

@flag_sets(FlagSet.of("tgi-seed-default", max_concurrent_requests=1024))
def test_tgi_under_load(perf):
    result = perf.run(Workload(RandomDataset(input_len=256, output_len=128, num_prompts=400),
                               Arrivals(request_rate=50.0)))
    assert result.valid
"""


def tgi_checkout(pytester: pytest.Pytester, scale: str = "prompts = 0.25") -> Path:
    """hosts.toml with a CPU host serving the double's model folder, a launcher script
    that starts the double; returns the launcher."""
    model = pytester.path / "model"
    shutil.copytree(MODEL, model)
    pytester.makefile(".toml", hosts=textwrap.dedent(f"""
        [hosts.tgi-here]
        accelerator = "cpu"
        launcher = "local"
        start_timeout_s = 60
        engine_nice = 0
        scale = {{ {scale} }}
        [hosts.tgi-here.models]
        "*" = "{model}"
        """))
    launcher = pytester.path / "text-generation-launcher"
    launcher.write_text(f"#!/bin/sh\nexec {sys.executable} {DOUBLES / 'tgi_server.py'} \"$@\"\n")
    launcher.chmod(0o755)
    return launcher


def test_a_suite_drives_tgi_and_records_its_figures(pytester: pytest.Pytester,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    launcher = tgi_checkout(pytester)
    journal = pytester.path / "journal.jsonl"
    monkeypatch.setenv("TGI_DOUBLE_JOURNAL", str(journal))
    pytester.makepyfile(test_tgi_suite=SUITE)
    result = pytester.runpytest_subprocess(
        "--gpu-host", "tgi-here", "--hosts-file", "hosts.toml", "--tgi-build", str(launcher),
        "--repeats", "2", "--results-dir", "results", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
    [started] = [json.loads(line) for line in journal.read_text().splitlines()]
    argv = started["argv"]
    assert argv[argv.index("--max-concurrent-requests") + 1] == "1024"
    assert argv[argv.index("--num-shard") + 1] == "1"
    [path] = (pytester.path / "results").rglob("*test_tgi_under_load*.json")
    doc = json.loads(path.read_text())
    assert doc["valid"] and doc["server"]["engine"] == "tgi"
    assert doc["server"]["version"].startswith("3.3.6-dev0+db931fcf0c1a")
    assert doc["tokenizer"]["decodes"]["decoder"] == "ByteLevel"
    assert len(doc["runs"]) == 2
    for run in doc["runs"]:
        figures = run["figures"]
        assert figures["completed"] == 100 and figures["request_throughput"] > 0
        assert figures["median_ttft_ms"] > 0
        # TGI stops at EOS: outputs fall short of the target and that is recorded.
        assert figures["output_len_drift_pct"] < -5
        assert figures["mean_output_len_target"] == 128
        records = run["records"]
        assert all(r["prompt_tokens"] == r["prompt_len"] == 256 for r in records)
        server = run["server"]
        assert server["series"]["queue_time_sum"] == "tgi_request_queue_duration_sum"
        assert server["figures"]["server_generation_tokens"] == figures["total_output_tokens"]
        assert "server_mean_queue_time_ms" in server["figures"]
        assert not server["errors"]


def test_tgi_skips_where_the_host_serves_random_weights(pytester: pytest.Pytester) -> None:
    launcher = tgi_checkout(pytester)
    pytester.makepyfile(test_tgi_suite=SUITE)
    result = pytester.runpytest_subprocess("--tgi-build", str(launcher), "-rs",
                                           "-p", "no:cacheprovider")
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(["*tgi cannot serve random weights, and host 'cpu' serves "
                                 "'llama-3.1-70b' with random ones (the tiny model)*"])


INSTANCES = """
import pytest
from pytest_mi300x import Arrivals, FlagSet, RandomDataset, Workload, flag_sets

@pytest.fixture
def serving_engine():
    return "tgi"

@pytest.mark.parametrize("server_instances", [2])
@flag_sets(FlagSet.of("two", max_concurrent_requests=1024))
def test_two_instances(perf, llm_servers):
    assert len(llm_servers) == 2
    result = perf.run(Workload(RandomDataset(input_len=64, output_len=32, num_prompts=200),
                               Arrivals(request_rate=100.0)))
    assert result.valid
"""


def test_one_workload_spread_across_two_server_instances(
        pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    launcher = tgi_checkout(pytester)
    journal = pytester.path / "journal.jsonl"
    monkeypatch.setenv("TGI_DOUBLE_JOURNAL", str(journal))
    pytester.makepyfile(test_instances=INSTANCES)
    result = pytester.runpytest_subprocess(
        "--gpu-host", "tgi-here", "--hosts-file", "hosts.toml", "--tgi-build", str(launcher),
        "--repeats", "1", "--results-dir", "results", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
    starts = [json.loads(line) for line in journal.read_text().splitlines()]
    ports = {s["argv"][s["argv"].index("--port") + 1] for s in starts}
    assert len(starts) == 2 and len(ports) == 2  # two servers, one flag set
    for start in starts:  # both stopped at the end of the session
        with pytest.raises(ProcessLookupError):
            os.kill(start["pid"], 0)
    [path] = (pytester.path / "results").rglob("*test_two_instances*.json")
    doc = json.loads(path.read_text())
    assert [s["flag_set"]["name"] for s in doc["servers"]] == ["two", "two"]
    assert len({s["log"] for s in doc["servers"]}) == 2
    [run] = doc["runs"]
    assert run["figures"]["completed"] == 50
    assert [r["server"] for r in run["records"][:4]] == [0, 1, 0, 1]  # round robin by index
    instances = run["server"]["instances"]
    assert len(instances) == 2 and all(i["figures"] for i in instances)
    per = [i["figures"]["server_generation_tokens"] for i in instances]
    assert all(p > 0 for p in per)
    assert run["server"]["figures"]["server_generation_tokens"] == sum(per) \
        == run["figures"]["total_output_tokens"]


ACCURACY = """
import pytest
from pytest_mi300x import AccuracyCheck, Arrivals, FlagSet, RandomDataset, Workload, flag_sets

WORKLOAD = Workload(RandomDataset(input_len=64, output_len=16, num_prompts=200),
                    Arrivals(request_rate=100.0), accuracy=AccuracyCheck())

@pytest.fixture
def serving_engine():
    return "tgi"

@flag_sets(FlagSet.of("acc", max_concurrent_requests=1024))
def test_answers(perf):
    perf.run(WORKLOAD)

@flag_sets(FlagSet.of("acc", max_concurrent_requests=1024))
def test_random_weights(perf):
    perf.model["dummy_weights"] = True  # as the cpu host's tiny model is described
    perf.run(WORKLOAD)
"""


def test_faster_but_answering_worse_is_a_regression(pytester: pytest.Pytester,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    from pytest_mi300x.accuracy.check import SHIPPED
    from pytest_mi300x.results.model import Result, Status

    launcher = tgi_checkout(pytester)
    pytester.makepyfile(test_accuracy=ACCURACY)
    args = ("--gpu-host", "tgi-here", "--hosts-file", "hosts.toml", "--tgi-build",
            str(launcher), "--repeats", "2", "-p", "no:cacheprovider", "-W",
            "ignore::pytest_mi300x.load.measurer.OutputLengthDrift")
    monkeypatch.setenv("TGI_DOUBLE_ANSWER_KEY", str(SHIPPED))
    monkeypatch.setenv("TGI_DOUBLE_ANSWERS", "right")
    monkeypatch.setenv("TGI_DOUBLE_TTFT", "0.04")
    first = pytester.runpytest_subprocess(*args, "--update-baselines", "--results-dir", "base")
    first.assert_outcomes(passed=2)
    first.stdout.fnmatch_lines(["accuracy not checked in 1 test: llama-3.1-70b is "
                                "served with random weights on host 'tgi-here'*"])
    [base] = (pytester.path / "base").rglob("*test_answers*.json")
    doc = json.loads(base.read_text())
    assert [r["figures"]["accuracy_right"] for r in doc["runs"]] == [40.0, 40.0]
    assert doc["accuracy"][0]["passes"][0]["wrong"] == []
    [skipped] = (pytester.path / "base").rglob("*test_random_weights*.json")
    assert "random weights" in json.loads(skipped.read_text())["accuracy"][0]["skipped"]

    monkeypatch.setenv("TGI_DOUBLE_ANSWERS", "wrong")
    monkeypatch.setenv("TGI_DOUBLE_TTFT", "0.005")  # a faster build...
    second = pytester.runpytest_subprocess(*args, "--results-dir", "cand",
                                           "-k", "test_answers")
    second.assert_outcomes(failed=1)  # ...that answers worse fails
    second.stdout.fnmatch_lines(["*performance regression in 1 gated metric(s)*",
                                 "*accuracy: REGRESSION (gated, higher is better)*"])
    second.stdout.fnmatch_lines(["*test_answers*FAILED (regression): PerfRegression*"])
    [cand] = (pytester.path / "cand").rglob("*test_answers*.json")
    result = Result.load(cand)
    assert result.status is Status.REGRESSION
    # Accuracy alone failed it; whether the double's shorter TTFT (40 -> 5 ms) reads as
    # faster on this machine is a speed figure this test does not assert.
    assert [v["metric"] for v in result.verdicts
            if v["kind"] == "regression" and v["gated"]] == ["accuracy"]
    wrong = result.doc["accuracy"][0]["passes"][0]["wrong"]
    assert len(wrong) == 40 and wrong[0]["answer"] == " I do not know"
