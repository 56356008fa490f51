from __future__ import annotations

import pytest

from pytest_mi300x.engines.flags import FlagSet, flag_sets
from pytest_mi300x.engines.vllm import REMOVED_FLAGS, VLLMEngine
from pytest_mi300x.plugin.options import parse_engine_env


def test_mapping_becomes_command_line() -> None:
    fs = FlagSet.of("tuned", enable_chunked_prefill=False, enable_prefix_caching=True,
                    max_num_seqs=512, kv_cache_dtype="fp8", cudagraph_capture_sizes=[1, 2, 4])
    assert fs.to_argv() == [
        "--no-enable-chunked-prefill", "--enable-prefix-caching", "--max-num-seqs", "512",
        "--kv-cache-dtype", "fp8", "--cudagraph-capture-sizes", "1", "2", "4",
    ]


def test_digest_changes_with_what_is_launched_not_only_the_name() -> None:
    a = FlagSet.of("x", max_num_seqs=8)
    assert a.digest == FlagSet.of("x", max_num_seqs=8).digest
    assert a.digest != FlagSet.of("x", max_num_seqs=16).digest
    assert a.digest != FlagSet.of("x", env={"A": "1"}, max_num_seqs=8).digest


@pytest.mark.parametrize("name", ["has space", "", "-leading"])
def test_unreadable_names_are_refused(name: str) -> None:
    with pytest.raises(ValueError, match="readable test id"):
        FlagSet(name)


def test_flag_with_dashes_is_refused_with_the_fix() -> None:
    with pytest.raises(ValueError, match="max_num_seqs"):
        FlagSet("x", (("--max-num-seqs", 8),))


def test_flag_sets_uses_names_as_ids_and_refuses_duplicates() -> None:
    mark = flag_sets(FlagSet("a"), FlagSet("b"))
    assert mark.kwargs["ids"] == ["a", "b"]
    with pytest.raises(ValueError, match="unique"):
        flag_sets(FlagSet("a"), FlagSet("a"))


@pytest.mark.parametrize(("flag", "version", "skipped"), [
    ("num_scheduler_steps", "0.32.0", True),
    ("num_scheduler_steps", "0.6.2", False),
    ("max_seq_len_to_capture", "0.11.0", True),
    ("max_seq_len_to_capture", "0.10.2+rocm", False),
    ("max_num_seqs", "0.32.0", False),
])
def test_removed_seed_flags_skip_with_the_successor(flag: str, version: str,
                                                    skipped: bool) -> None:
    engine = VLLMEngine(python=__import__("pathlib").Path("/x/python"), build="test")
    reason = engine.skip_reason(FlagSet.of("case", **{flag: 10}), version)
    assert (reason is not None) is skipped
    if reason:
        removed = REMOVED_FLAGS[flag.replace("_", "-")]
        assert removed.replacement in reason and version in reason


def test_engine_env_needs_key_equals_value() -> None:
    assert parse_engine_env("A_B=1=2") == ("A_B", "1=2")
    with pytest.raises(pytest.UsageError, match="--engine-env 'nokey'"):
        parse_engine_env("nokey")


@pytest.mark.engine
def test_env_vars_the_running_vllm_does_not_read_skip_with_the_successor(engine_python) -> None:
    engine = VLLMEngine(python=engine_python, build="test")
    gone = FlagSet.of("ck", env={"VLLM_USE_TRITON_FLASH_ATTN": "0"})
    reason = engine.skip_reason(gone, "0.32.0")
    assert reason is not None and "VLLM_USE_TRITON_FLASH_ATTN" in reason
    assert "--attention-backend" in reason
    # Env vars it does read, and non-vLLM env (ROCm's, NCCL's), are left to the engine.
    kept = FlagSet.of("ok", env={"VLLM_CPU_KVCACHE_SPACE": "1", "NCCL_MIN_NCHANNELS": "112"})
    assert engine.skip_reason(kept, "0.32.0") is None
