"""Each failure's kind: only a gated regression (PerfRegression) is a slowdown; an assert
inside the harness is the harness's, a full disk is the machine's (infra); and the end of a
session survives a history it cannot write and says which history lines it skipped.

Sessions here measure the stub server (TEST DOUBLE) through ``--endpoint``: what is under
test is the harness's bookkeeping, not an engine."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from pytest_mi300x.judge.gate import MissingBaseline, PerfRegression
from pytest_mi300x.reporting.outcomes import describe
from pytest_mi300x.results.files import WriteError, write_json_atomic
from pytest_mi300x.results.model import FailureKind
from pytest_mi300x.servers.process import ServerProcess
from tests.doubles.stub_server import StubBehavior, stub_server

pytest_plugins = ["pytester"]


def harness_assert() -> AssertionError:
    """An AssertionError raised by an ``assert`` inside the pytest_mi300x package."""
    process = ServerProcess(["true"], env={}, log_path=Path("unused.log"),
                            ready_url="http://127.0.0.1:9/health")
    with pytest.raises(AssertionError) as exc:
        process._wait_ready(0.0)  # asserts it has a process: it has none
    return exc.value


def test_an_assert_inside_the_harness_is_a_harness_failure_not_a_regression() -> None:
    assert describe(harness_assert())[0] is FailureKind.HARNESS


def test_a_tests_own_assert_is_its_own_kind_and_only_the_gate_says_regression() -> None:
    try:
        assert 2500 < 2000, "median TTFT over the test's own bar"  # noqa: PLR2004
    except AssertionError as exc:
        own = exc
    assert describe(own)[0] is FailureKind.ASSERTION
    assert describe(PerfRegression("performance regression in 1 gated metric(s)"))[0] \
        is FailureKind.REGRESSION
    assert describe(MissingBaseline("no baseline"))[0] is FailureKind.HARNESS
    # Raised bare by anyone but a test's own code (no traceback to tell): the harness's.
    assert describe(AssertionError("raised, never thrown"))[0] is FailureKind.HARNESS


@pytest.mark.parametrize(("code", "kind"), [(errno.ENOSPC, FailureKind.INFRA),
                                            (errno.EDQUOT, FailureKind.INFRA),
                                            (errno.EACCES, FailureKind.HARNESS)])
def test_a_full_disk_is_infra_and_an_unwritable_folder_is_bad_input(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, code: int, kind: FailureKind) -> None:
    def failing(*args: object) -> None:
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(os, "replace", failing)
    with pytest.raises(WriteError) as exc:
        write_json_atomic(tmp_path / "r.json", {"a": 1})
    assert describe(exc.value)[0] is kind


SUITE = """
from pytest_mi300x import RandomDataset, Workload

def test_rate(perf):
    perf.run(Workload(RandomDataset(input_len=40, output_len=8, num_prompts=40),
                      warmup_requests=0))
"""

HARNESS_ASSERT = """
from pytest_mi300x.servers.process import ServerProcess

def test_rate(perf):
    ServerProcess(["true"], env={}, log_path="x.log", ready_url="u")._wait_ready(0.0)
"""


def session(pytester: pytest.Pytester, url: str, *args: str) -> pytest.RunResult:
    return pytester.runpytest_subprocess("-p", "no:cacheprovider", "--endpoint", url,
                                         "--repeats", "1", "--results-dir=res",
                                         "--baselines-dir=bl", *args, timeout=600)


def test_an_assert_inside_the_harness_shows_as_harness_in_the_session_table(
        pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_assert=HARNESS_ASSERT)
    with stub_server(StubBehavior(ttft=0.001, itl=0.001)) as server:
        result = session(pytester, server.base_url)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*test_rate*FAILED (harness): AssertionError*",
                                 "failures by kind: 1 harness*"])
    assert "FAILED (regression)" not in result.stdout.str()


def test_a_history_that_cannot_be_written_is_said_not_an_internal_error(
        pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_hist=SUITE)
    (pytester.path / "not-a-folder").write_text("a file where the history's folder goes")
    with stub_server(StubBehavior(ttft=0.001, itl=0.001)) as server:
        result = session(pytester, server.base_url,
                         "--history-file=not-a-folder/history.jsonl")
    assert result.ret == pytest.ExitCode.OK, result.stdout.str()[-2000:]
    assert "INTERNALERROR" not in result.stdout.str() + result.stderr.str()
    result.stdout.fnmatch_lines(["*history not appended: cannot write *not-a-folder*"])
    # The reports are still written.
    assert (pytester.path / "res" / "report.md").is_file()


def test_skipped_history_lines_are_reported_at_the_end_of_the_session(
        pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_hist=SUITE)
    history = pytester.path / "history.jsonl"
    history.write_text('{"schema": "pytest-mi300x/history/1", "test": "t::x", "va\n')
    with stub_server(StubBehavior(ttft=0.001, itl=0.001)) as server:
        result = session(pytester, server.base_url, f"--history-file={history}")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines([f"*history: 1 line skipped: {history}:1: skipped (not a "
                                 "JSON line*"])
    assert len(history.read_text().splitlines()) == 2  # the new line, apart from the cut one
