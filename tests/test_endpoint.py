"""``--endpoint``: a suite's workloads against a server the session did not start, here the
stub server (TEST DOUBLE) speaking vLLM's API: /v1/models, /version, /tokenize, token-id
prompts refused past the vocabulary."""

from __future__ import annotations

import json

import pytest

from pytest_mi300x.servers.endpoint import EndpointError, connect, endpoint_label
from tests.doubles.stub_server import STUB_MODEL, STUB_VERSION, StubBehavior, stub_server

pytest_plugins = ["pytester"]

SUITE = """
from pytest_mi300x import DEFAULT_FLAGS, FlagSet, RandomDataset, Workload, flag_sets

@flag_sets(DEFAULT_FLAGS, FlagSet.of("seqs-8", max_num_seqs=8))
def test_rate(perf):
    perf.run(Workload(RandomDataset(input_len=40, output_len=8, num_prompts=80),
                      warmup_requests=0))
"""


def test_connect_finds_the_model_engine_version_and_vocabulary() -> None:
    with stub_server(StubBehavior(ttft=0.0, itl=0.0, vocab_size=777)) as server:
        ep = connect(server.base_url + "/v1", "")
    assert (ep.model, ep.engine.name, ep.version) == (STUB_MODEL, "vllm", STUB_VERSION)
    assert ep.vocab_size == 777 and ep.special_ids == frozenset({0})
    assert ep.url == server.base_url and ep.label == f"endpoint-127.0.0.1-{server.port}"
    assert ep.describe()["endpoint"] == server.base_url
    # A path is kept, as a slug (with a digest where characters had to change).
    assert endpoint_label("https://llm.staging.example:8443/v2").startswith(
        "endpoint-llm.staging.example-8443_v2")


def test_an_endpoint_that_is_not_there_says_so() -> None:
    with pytest.raises(EndpointError, match="does not answer GET /v1/models"):
        connect("http://127.0.0.1:9", "")
    with stub_server() as server, pytest.raises(EndpointError,
                                                match=r"serves \['stub-model'\], not 'x'"):
        connect(server.base_url, "", model="x")


def test_a_suite_runs_against_the_endpoint_and_records_it(
        pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    pytester.makepyfile(test_endpoint_suite=SUITE)
    monkeypatch.setenv("STUB_KEY", "sk-endpoint-secret")
    with stub_server(StubBehavior(ttft=0.01, itl=0.002)) as server:
        result = pytester.runpytest_subprocess(
            "-p", "no:cacheprovider", "-rs", "--endpoint", server.base_url,
            "--endpoint-key-env", "STUB_KEY", "--repeats", "1", "--results-dir", "res",
            "--baselines-dir", "bl", "--update-baselines", timeout=300)
        auth = set(server.stats.auth_headers)
    result.assert_outcomes(passed=1, skipped=1)
    result.stdout.fnmatch_lines([
        f"*measuring the endpoint {server.base_url}*",
        "*flag set 'seqs-8' needs a server of its own (--max-num-seqs 8); --endpoint "
        f"measures {server.base_url} as it runs*"])
    assert auth == {"Bearer sk-endpoint-secret"}
    doc = json.loads(next((pytester.path / "res").glob("*default*.json")).read_text())
    assert doc["server"]["endpoint"] == server.base_url
    assert doc["server"]["version"] == STUB_VERSION
    assert doc["engine"]["build"] == f"endpoint {server.base_url}"
    assert doc["model"]["logical"] == STUB_MODEL
    # Baselines of an endpoint are its own, and the key never lands in a file.
    label = f"endpoint-127.0.0.1-{server.port}"
    stored = list((pytester.path / "bl" / label / "vllm" / STUB_MODEL).glob("*.json"))
    assert len(stored) == 1
    for path in [*(pytester.path / "res").rglob("*.json"), *stored]:
        assert "sk-endpoint-secret" not in path.read_text()


def test_an_unreachable_endpoint_stops_the_session_in_one_line(
        pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_endpoint_suite=SUITE)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider",
                                           "--endpoint", "http://127.0.0.1:9", timeout=120)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*endpoint http://127.0.0.1:9 does not answer GET /v1/models*"])
    bad = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--endpoint", "localhost",
                                        timeout=120)
    bad.stderr.fnmatch_lines(["*--endpoint 'localhost' is not an http(s) URL*"])
