"""ShareGPT (file and synthetic), shared-prefix and JSONL datasets, built on tokenizer doubles."""

from __future__ import annotations

import json
import math
import random
import statistics
from pathlib import Path

import numpy as np
import pytest

from pytest_mi300x.hosts.profile import WorkloadScale
from pytest_mi300x.workload.jsonl import JsonlDataset
from pytest_mi300x.workload.prefix import SharedPrefixDataset
from pytest_mi300x.workload.sharegpt import (
    ShareGPTDataset,
    SyntheticShareGPT,
    is_valid_sequence,
    load_sharegpt,
)
from tests.test_datasets import MergingTokenizerDouble, WordTokenizerDouble

DATA = Path(__file__).parent / "data"
SAMPLE = DATA / "sharegpt-sample.json"
VALID_IDS = ["ok-1", "ok-2", "ok-3", "ok-4"]


def ids_of(requests: list, tokenizer: WordTokenizerDouble) -> list[str]:
    by_prompt = {e["conversations"][0]["value"]: e["id"]
                 for e in json.loads(SAMPLE.read_text()) if "conversations" in e}
    return [by_prompt[r.prompt] for r in requests]


def test_sharegpt_keeps_exactly_the_entries_vllm_keeps() -> None:
    tok = WordTokenizerDouble(vocab_size=3000)
    got = ShareGPTDataset(SAMPLE, num_prompts=4, seed=0).build(tok)
    assert sorted(ids_of(got, tok)) == VALID_IDS
    first = {r.prompt: r for r in got}
    entry = json.loads(SAMPLE.read_text())[0]
    r = first[entry["conversations"][0]["value"]]
    # 10 words + BOS in, 20 words + BOS out: turn 1's token count, as vLLM counts it.
    assert (r.prompt_len, r.output_len) == (11, 21)


def test_sharegpt_order_is_pythons_seeded_shuffle() -> None:
    tok = WordTokenizerDouble(vocab_size=3000)
    entries = load_sharegpt(SAMPLE)
    random.Random(7).shuffle(entries)
    expected = [e["id"] for e in entries if e["id"] in VALID_IDS]
    got = ShareGPTDataset(SAMPLE, num_prompts=4, seed=7).build(tok)
    assert ids_of(got, tok) == expected


def test_sharegpt_oversamples_and_fixed_output_len_skips_the_output_check() -> None:
    tok = WordTokenizerDouble(vocab_size=3000)
    got = ShareGPTDataset(SAMPLE, num_prompts=9, output_len=2).build(tok)
    assert len(got) == 9
    assert {r.output_len for r in got} == {2}
    # output-too-short passes once the output length is fixed, as in vLLM.
    assert "output-too-short" in ids_of(got, tok)


def test_vllm_filter_bounds() -> None:
    assert is_valid_sequence(4, 4) and is_valid_sequence(1024, 1024)
    assert not is_valid_sequence(3, 10) and not is_valid_sequence(10, 3)
    assert not is_valid_sequence(1025, 10) and not is_valid_sequence(1024, 1025)
    assert is_valid_sequence(10, 1, check_output=False)


@pytest.mark.parametrize(("content", "expected"), [
    (None, "does not exist"), ("{not json", "is not JSON"), ('{"a": 1}', "holds a dict"),
])
def test_sharegpt_bad_file_is_one_line_error(tmp_path: Path, content: str | None,
                                             expected: str) -> None:
    path = tmp_path / "sg.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(ValueError, match=expected) as info:
        ShareGPTDataset(path, 3).build(WordTokenizerDouble())
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_synthetic_sharegpt_lengths_follow_the_documented_distribution() -> None:
    pairs = SyntheticShareGPT(num_prompts=4000, seed=3).lengths()
    ins = [p for p, _ in pairs]
    outs = [q for _, q in pairs]
    assert all(is_valid_sequence(p, q) for p, q in pairs)
    # Log-normal medians as documented (the filter trims only the tails).
    assert statistics.median(ins) == pytest.approx(SyntheticShareGPT.INPUT_MEDIAN, rel=0.1)
    assert statistics.median(outs) == pytest.approx(SyntheticShareGPT.OUTPUT_MEDIAN, rel=0.1)
    sigma = float(np.std(np.log(ins)))
    assert sigma == pytest.approx(SyntheticShareGPT.SIGMA, rel=0.15)
    assert pairs == SyntheticShareGPT(num_prompts=4000, seed=3).lengths()
    assert pairs != SyntheticShareGPT(num_prompts=4000, seed=4).lengths()


def test_synthetic_sharegpt_prompts_are_exact_and_scale() -> None:
    tok = MergingTokenizerDouble()
    ds = SyntheticShareGPT(num_prompts=6, seed=1, length_scale=0.1)
    got = ds.build(tok)
    assert [(r.prompt_len, r.output_len) for r in got] == ds.lengths()
    assert all(len(tok.encode(r.prompt)) == r.prompt_len for r in got)
    small = ds.scaled(WorkloadScale(prompts=0.5, lengths=0.5))
    assert small.num_prompts == 3 and math.isclose(small.length_scale, 0.05)


def test_shared_prefix_grid_shares_prefixes_and_keeps_lengths_exact() -> None:
    tok = MergingTokenizerDouble()
    ds = SharedPrefixDataset.grid(3, 4, prefix_len=40, suffix_len=12, output_len=5, seed=2,
                                    separator="")
    got = ds.build(tok)
    prefixes = ds.prefixes(tok)
    assert len(got) == 12 and len(set(prefixes)) == 3
    for p in prefixes:
        assert len(tok.encode(p)) == 40
        assert sum(r.prompt.startswith(p) for r in got) == 4
    assert all(len(tok.encode(r.prompt)) == 52 == r.prompt_len for r in got)
    assert len({r.prompt for r in got}) == 12


def test_shared_prefix_seed_keeps_prefixes_across_repetitions() -> None:
    tok = WordTokenizerDouble(vocab_size=3000)
    a = SharedPrefixDataset(2, 4, 20, 5, 3, seed=1, prefix_seed=9)
    b = SharedPrefixDataset(2, 4, 20, 5, 3, seed=2, prefix_seed=9)
    assert a.prefixes(tok) == b.prefixes(tok)
    assert {r.prompt for r in a.build(tok)} != {r.prompt for r in b.build(tok)}
    with pytest.raises(ValueError, match="num_prefixes must be an int >= 1"):
        SharedPrefixDataset(0, 4, 20, 5, 3)


def test_jsonl_prompts_count_with_the_served_tokenizer(tmp_path: Path) -> None:
    path = tmp_path / "p.jsonl"
    path.write_text('{"prompt": "w5 w6 w7", "output_len": 9}\n\n{"prompt": "w8"}\n')
    got = JsonlDataset(path, output_len=4, shuffle=False).build(WordTokenizerDouble())
    assert [(r.prompt, r.prompt_len, r.output_len) for r in got] == [
        ("w5 w6 w7", 4, 9), ("w8", 2, 4)]
    assert len(JsonlDataset(path, num_prompts=5).build(WordTokenizerDouble())) == 5


@pytest.mark.parametrize(("text", "expected"), [
    ('{"prompt": "w1"}\nnot json\n', ":2 is not JSON"),
    ('{"text": "w1"}\n', ':1 has no non-empty "prompt" string'),
    ('{"prompt": "w1", "output_len": 0}\n', ":1: output_len 0 is not an int >= 1"),
    ("\n\n", "has no prompts"),
])
def test_jsonl_bad_lines_are_one_line_errors(tmp_path: Path, text: str, expected: str) -> None:
    path = tmp_path / "p.jsonl"
    path.write_text(text)
    with pytest.raises(ValueError, match=expected) as info:
        JsonlDataset(path).build(WordTokenizerDouble())
    assert "\n" not in str(info.value)


def test_shared_prefix_suffix_budget_is_what_the_prefix_leaves() -> None:
    # A long prefix and a short suffix: the suffix search starts from the tokens
    # left, not from the whole target (which overshot by the prefix's length).
    tok = MergingTokenizerDouble()
    ds = SharedPrefixDataset(1, 3, prefix_len=300, suffix_len=4, output_len=2, separator="")
    assert all(len(tok.encode(r.prompt)) == 304 for r in ds.build(tok))


def test_synthetic_sharegpt_with_a_length_seed_keeps_lengths_across_repetitions() -> None:
    from pytest_mi300x.workload.sharegpt import SyntheticShareGPT

    fixed = [SyntheticShareGPT(40, seed=s, length_seed=0).lengths() for s in (0, 1, 2)]
    assert fixed[0] == fixed[1] == fixed[2]
    assert SyntheticShareGPT(40, seed=1).lengths() != fixed[0]
