"""Random dataset: exact prompt lengths, vllm's draw order, special ids avoided."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pytest

from pytest_mi300x.workload.datasets import PromptRequest, RandomDataset
from pytest_mi300x.workload.tokenizer import ServedTokenizer
from tests.doubles.stub_server import BOS_ID, UNK_ID, stub_server


class WordTokenizerDouble:
    """TEST DOUBLE: id N <-> word "wN"; optional BOS prepended on encode."""

    def __init__(self, vocab_size: int = 500, bos: bool = True) -> None:
        self._vocab_size = vocab_size
        self._bos = bos
        self.special_ids = frozenset({0}) if bos else frozenset()

    @property
    def vocab_size(self) -> int:
        return self._vocab_size

    def encode(self, text: str) -> list[int]:
        return ([0] if self._bos else []) + [int(w[1:]) for w in text.split()]

    def decode(self, ids: Sequence[int]) -> str:
        return " ".join(f"w{i}" for i in ids)


class MergingTokenizerDouble:
    """TEST DOUBLE: greedy longest match over letters and letter pairs, no separators.

    Decoding then re-encoding is not 1:1 here (ids for "a","b" decode to "ab",
    which re-encodes as one token), the case vllm's re-encode loop exists for.
    """

    LETTERS = "abcdefghij"

    def __init__(self) -> None:
        pieces = [*self.LETTERS, *(a + b for a in self.LETTERS for b in self.LETTERS)]
        self._pieces = ["<s>", *pieces]
        self._ids = {p: i for i, p in enumerate(self._pieces)}
        self.special_ids = frozenset({0})

    @property
    def vocab_size(self) -> int:
        return len(self._pieces)

    def encode(self, text: str) -> list[int]:
        ids = [0]
        i = 0
        while i < len(text):
            pair = text[i : i + 2]
            if len(pair) == 2 and pair in self._ids:
                ids.append(self._ids[pair])
                i += 2
            else:
                ids.append(self._ids[text[i]])
                i += 1
        return ids

    def decode(self, ids: Sequence[int]) -> str:
        return "".join(self._pieces[i] for i in ids)


class ConstantTokenizerDouble:
    """TEST DOUBLE: every text encodes to 3 tokens, so most targets are unreachable."""

    vocab_size = 50

    def encode(self, text: str) -> list[int]:
        return [0, 1, 2]

    def decode(self, ids: Sequence[int]) -> str:
        return "x" * len(ids)


def test_prompt_lengths_are_exact_including_bos() -> None:
    tokenizer = WordTokenizerDouble()
    prompts = RandomDataset(input_len=64, output_len=16, num_prompts=10, seed=1).build(tokenizer)
    assert len(prompts) == 10
    for p in prompts:
        assert p.prompt_len == 64
        assert p.output_len == 16
        assert len(tokenizer.encode(p.prompt)) == 64  # 63 words + BOS


def test_exact_lengths_when_decode_encode_is_not_one_to_one() -> None:
    tokenizer = MergingTokenizerDouble()
    prompts = RandomDataset(input_len=40, output_len=8, num_prompts=25, seed=5).build(tokenizer)
    for p in prompts:
        assert len(tokenizer.encode(p.prompt)) == p.prompt_len == 40


def test_special_ids_never_drawn() -> None:
    tokenizer = WordTokenizerDouble(vocab_size=40)
    tokenizer.special_ids = frozenset(range(0, 40, 2))  # every even id is "special"
    prompts = RandomDataset(input_len=30, output_len=4, num_prompts=8, seed=2).build(tokenizer)
    for p in prompts:
        body = tokenizer.encode(p.prompt)[1:]  # drop the BOS encode adds
        assert body and all(i % 2 == 1 for i in body)


def test_range_ratio_spreads_lengths_within_vllm_bounds() -> None:
    tokenizer = WordTokenizerDouble()
    ds = RandomDataset(input_len=50, output_len=20, num_prompts=60, range_ratio=0.3, seed=4)
    prompts = ds.build(tokenizer)
    ins = [p.prompt_len for p in prompts]
    outs = [p.output_len for p in prompts]
    assert min(ins) >= 35 and max(ins) <= 65 and len(set(ins)) > 5
    assert min(outs) >= 14 and max(outs) <= 26 and len(set(outs)) > 3
    for p in prompts:
        assert len(tokenizer.encode(p.prompt)) == p.prompt_len


def test_lengths_follow_vllm_draw_order() -> None:
    # vllm draws input lengths, then output lengths, then offsets from default_rng(seed).
    rng = np.random.default_rng(9)
    expected_in = rng.integers(math.floor(80 * 0.5), math.ceil(80 * 1.5) + 1, size=12)
    expected_out = rng.integers(math.floor(10 * 0.5), math.ceil(10 * 1.5) + 1, size=12)
    ds = RandomDataset(input_len=80, output_len=10, num_prompts=12, range_ratio=0.5, seed=9)
    prompts = ds.build(WordTokenizerDouble(bos=False))
    assert [p.prompt_len for p in prompts] == expected_in.tolist()
    assert [p.output_len for p in prompts] == expected_out.tolist()


def test_same_seed_same_prompts() -> None:
    tokenizer = WordTokenizerDouble()
    a = RandomDataset(32, 8, 5, seed=3).build(tokenizer)
    b = RandomDataset(32, 8, 5, seed=3).build(tokenizer)
    c = RandomDataset(32, 8, 5, seed=4).build(tokenizer)
    assert a == b
    assert [p.prompt for p in a] != [p.prompt for p in c]
    assert len({p.prompt for p in a}) == 5  # prompts differ, no accidental prefix reuse


def test_unreachable_length_raises_clear_error() -> None:
    with pytest.raises(ValueError, match="exactly 10 tokens"):
        RandomDataset(10, 4, 1).build(ConstantTokenizerDouble())


def test_target_below_special_token_count_raises() -> None:
    # One token of budget, but BOS alone uses it: no non-empty prompt fits.
    with pytest.raises(ValueError, match="exactly 1 tokens"):
        RandomDataset(1, 4, 1).build(WordTokenizerDouble())


@pytest.mark.parametrize(
    "kwargs",
    [
        {"input_len": 0, "output_len": 1, "num_prompts": 1},
        {"input_len": 1, "output_len": 0, "num_prompts": 1},
        {"input_len": 1, "output_len": 1, "num_prompts": 0},
        {"input_len": 1, "output_len": 1, "num_prompts": 1, "range_ratio": 1.0},
        {"input_len": 1, "output_len": 1, "num_prompts": 1, "range_ratio": -0.1},
    ],
)
def test_invalid_config_rejected(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError, match="RandomDataset"):
        RandomDataset(**kwargs)  # type: ignore[arg-type]


def test_describe() -> None:
    ds = RandomDataset(input_len=128, output_len=32, num_prompts=200, range_ratio=0.1, seed=7)
    assert ds.describe() == {
        "name": "random",
        "input_len": 128,
        "output_len": 32,
        "num_prompts": 200,
        "range_ratio": 0.1,
        "seed": 7,
    }


def test_served_tokenizer_speaks_vllm_tokenize_api() -> None:
    with stub_server() as server:
        tokenizer = ServedTokenizer(
            server.base_url, "key-123", "stub-model", vocab_size=300, special_ids=frozenset({0, 1})
        )
        with tokenizer:
            assert tokenizer.encode("w5 w9") == [BOS_ID, 5, 9]
            assert tokenizer.encode("hello") == [BOS_ID, UNK_ID]
            assert tokenizer.decode([7, 8]) == "w7 w8"
            prompts = RandomDataset(24, 4, 6, range_ratio=0.2, seed=1).build(tokenizer)
            # The server's own count is the one that must match.
            for p in prompts:
                assert len(tokenizer.encode(p.prompt)) == p.prompt_len
                assert "<s>" not in p.prompt
        assert server.stats.auth_headers
        assert set(server.stats.auth_headers) == {"Bearer key-123"}


def test_prompt_request_is_frozen() -> None:
    p = PromptRequest(prompt="w1", prompt_len=2, output_len=1)
    with pytest.raises(AttributeError):
        p.prompt = "other"  # type: ignore[misc]
