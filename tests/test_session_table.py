"""The end of a session: the project's own table says what a user needs once; other
plugins' output only when asked. Sessions measure the stub server (TEST DOUBLE) through
``--endpoint``: what is under test is the terminal output, not an engine."""

from __future__ import annotations

import pytest

from tests.doubles.stub_server import StubBehavior, stub_server

pytest_plugins = ["pytester"]

SUITE = """
import pytest
from pytest_mi300x import AccuracyCheck, RandomDataset, Workload

@pytest.mark.parametrize("n", [40, 80])
def test_rate(perf, n):
    perf.model["dummy_weights"] = True  # as the cpu host's tiny model is described
    perf.run(Workload(RandomDataset(input_len=40, output_len=8, num_prompts=n),
                      warmup_requests=0, accuracy=AccuracyCheck()))
"""


def session(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    pytester.makepyfile(test_table=SUITE)
    with stub_server(StubBehavior(ttft=0.001, itl=0.001)) as server:
        return pytester.runpytest_subprocess(
            "-p", "no:cacheprovider", "--endpoint", server.base_url, "--repeats", "2",
            "--results-dir=res", "--baselines-dir=bl", *args, timeout=600)


def test_pytest_benchmarks_table_shows_only_when_a_benchmark_option_asks(
        pytester: pytest.Pytester) -> None:
    plain = session(pytester)
    plain.assert_outcomes(passed=2)
    assert "Name (time in" not in plain.stdout.str()
    asked = session(pytester, "--benchmark-json=bench.json")
    asked.assert_outcomes(passed=2)
    asked.stdout.fnmatch_lines(["*benchmark: 2 tests*", "Name (time in *"])
    assert (pytester.path / "bench.json").is_file()


def test_the_accuracy_skip_is_said_once_in_the_table_not_as_warnings(
        pytester: pytest.Pytester) -> None:
    result = session(pytester)
    result.assert_outcomes(passed=2)
    out = result.stdout.str()
    assert "AccuracySkipped" not in out and "warnings summary" not in out
    result.stdout.fnmatch_lines(["accuracy not checked in 2 tests: stub-model is served "
                                 "with random weights on host 'cpu'*"])
    assert out.count("is served with random weights") == 1
