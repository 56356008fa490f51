"""The MI300X profile on a machine without GPUs: the matrix collects, a run stops in one line."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

ROOT = Path(__file__).parent.parent


@pytest.fixture
def suite_checkout(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    """The repository's hosts.toml and suites/, on a PATH without any GPU tool."""
    shutil.copy(ROOT / "hosts.toml", pytester.path / "hosts.toml")
    shutil.copytree(ROOT / "suites", pytester.path / "suites")
    bin_dir = pytester.path / "empty-bin"
    bin_dir.mkdir()
    monkeypatch.setenv("PATH", str(bin_dir))
    return pytester


def test_collect_only_lists_the_full_matrix(suite_checkout: pytest.Pytester) -> None:
    here = suite_checkout.runpytest_subprocess("suites/", "--collect-only", "-q")
    gpu = suite_checkout.runpytest_subprocess("suites/", "--gpu-host", "mi300x-01",
                                              "--collect-only", "-q")
    assert gpu.ret == 0
    ids = [line for line in gpu.stdout.lines if "::" in line]
    # The same tests; their order follows the servers they share, which differ by host (on
    # a GPU host case 7's tp-4 shares the TP-4 server of the default flags).
    assert sorted(ids) == sorted(line for line in here.stdout.lines if "::" in line)
    # The full matrix: the headline's engines x rates and every case of the guide.
    assert any("tgi-seed-default-qps-1000" in i for i in ids)
    assert any("test_case7_tensor_parallelism[tp-8]" in i for i in ids)
    header = suite_checkout.runpytest_subprocess("suites/", "--gpu-host", "mi300x-01",
                                                 "--collect-only")
    header.stdout.fnmatch_lines([
        "pytest-mi300x: host mi300x-01 (8 x mi300x gfx942, *hosts.toml); workloads at full size",
        f"*{len(ids)} tests collected*"])


def test_running_without_reachable_gpus_says_so_in_one_line(
        suite_checkout: pytest.Pytester) -> None:
    result = suite_checkout.runpytest_subprocess("suites/", "--gpu-host", "mi300x-01")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    errors = [line for line in result.stderr.lines if line.startswith("ERROR:")]
    assert errors == [
        "ERROR: host 'mi300x-01' (8 x mi300x, " + str(suite_checkout.path / "hosts.toml")
        + "): its GPUs are not reachable from this machine (amd-smi not found on PATH; "
        "rocm-smi not found on PATH); run on that host, or use --gpu-host cpu here"]
    assert "Traceback" not in result.stderr.str()
