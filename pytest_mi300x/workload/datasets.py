"""Prompt sets with exact token lengths, built against the served tokenizer."""

from __future__ import annotations

import functools
import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Protocol

import numpy as np

# Decode/re-encode rounds per draw, as vllm's gen_prompt_decode_to_target_len.
_ADJUST_ROUNDS = 10
# Fresh draws before giving up on one prompt.
_DRAWS = 3


def file_digest(path: Path) -> str:
    """sha256 of a dataset file: what identifies it across machines, where paths differ."""
    try:
        stat = path.stat()
    except OSError:
        return "missing"
    return _digest(str(path), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=16)
def _digest(path: str, size: int, mtime_ns: int) -> str:
    # size and mtime are in the key so an edited file is hashed again.
    sha = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            sha.update(block)
    return f"sha256:{sha.hexdigest()}"


class WorkloadError(ValueError):
    """A workload that cannot be built from what it was given (a dataset file, a setting);
    one line naming the file or field and the fix, shown without a traceback."""

    one_line = True


class Tokenizer(Protocol):
    """The served model's tokenizer; `encode` counts exactly what the server counts.

    An implementation may also expose `special_ids: frozenset[int]`, ids that
    random prompts must never contain.
    """

    @property
    def vocab_size(self) -> int: ...

    def encode(self, text: str) -> list[int]: ...

    def decode(self, ids: Sequence[int]) -> str: ...


class Dataset(Protocol):
    """A prompt set: built against the served tokenizer, scaled by a host, described.

    Implementations are frozen dataclasses, so `dataclasses.replace` can set
    `num_prompts` and `seed` (warm-up and per-repetition seeds).
    """

    @property
    def num_prompts(self) -> int | None: ...

    @property
    def seed(self) -> int: ...

    def build(self, tokenizer: Tokenizer) -> list[PromptRequest]: ...

    def scaled(self, scale: Scale) -> Dataset: ...

    def describe(self) -> dict[str, object]: ...


class Scale(Protocol):
    """How a host shrinks a full-size workload (hosts.WorkloadScale)."""

    def num_prompts(self, n: int) -> int: ...

    def length(self, n: int) -> int: ...


@dataclass(frozen=True)
class PromptRequest:
    """One request: prompt text and its exact token counts, and, for traces and
    conversations, when it is sent."""

    prompt: str
    prompt_len: int  # exact, in tokens of the served tokenizer (special tokens included)
    output_len: int  # forced with ignore_eos
    at: float | None = None
    """A trace's own send time (seconds from the trace's first row); used by
    ``Arrivals(timestamps=True)``, ignored by rate-based arrivals."""
    after: int | None = None
    """Index of the request that must complete before this one is sent (the previous
    turn of a conversation); the arrival schedule then does not apply to it."""
    think_s: float = 0.0
    """With ``after``: the pause between that request's completion and this one's send."""


def _special_ids(tokenizer: Tokenizer) -> frozenset[int]:
    # Optional on the protocol so plain tokenizers still fit it.
    return frozenset(int(i) for i in getattr(tokenizer, "special_ids", frozenset()))


def _length_bounds(mean: int, ratio: float) -> tuple[int, int]:
    """Integer-uniform sampling interval around `mean`, as vllm's get_sampling_params."""
    low = max(math.floor(mean * (1.0 - ratio)), 1)
    high = max(math.ceil(mean * (1.0 + ratio)), 1)
    return low, high


@dataclass(frozen=True)
class RandomDataset:
    """vllm bench serve's random dataset, with prompt lengths verified exact."""

    input_len: int
    output_len: int
    num_prompts: int
    range_ratio: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("input_len", "output_len", "num_prompts"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise WorkloadError(f"RandomDataset.{name} must be an int >= 1, got {value!r}")
        if not 0.0 <= self.range_ratio < 1.0:
            raise WorkloadError(
                f"RandomDataset.range_ratio must be in [0, 1), got {self.range_ratio!r}; "
                "0 gives every prompt exactly input_len tokens"
            )

    def build(self, tokenizer: Tokenizer) -> list[PromptRequest]:
        """Draw the prompts; each prompt re-encodes to exactly its `prompt_len` tokens.

        Draw order and the length/offset rules follow vllm's RandomDataset.sample, so
        the same seed gives the same lengths. Raises ValueError when a prompt cannot
        be made exact.
        """
        rng = np.random.default_rng(self.seed)
        vocab_size = tokenizer.vocab_size
        allowed = allowed_ids(tokenizer)
        in_low, in_high = _length_bounds(self.input_len, self.range_ratio)
        out_low, out_high = _length_bounds(self.output_len, self.range_ratio)
        input_lens = rng.integers(in_low, in_high + 1, size=self.num_prompts)
        output_lens = rng.integers(out_low, out_high + 1, size=self.num_prompts)
        offsets = rng.integers(0, vocab_size, size=self.num_prompts)
        return [
            PromptRequest(
                prompt=exact_prompt(
                    tokenizer, rng, allowed, int(input_lens[i]), int(offsets[i]), i
                ),
                prompt_len=int(input_lens[i]),
                output_len=int(output_lens[i]),
            )
            for i in range(self.num_prompts)
        ]

    def scaled(self, scale: Scale) -> RandomDataset:
        """This dataset at a host's size: fewer prompts, shorter lengths."""
        return replace(self, num_prompts=scale.num_prompts(self.num_prompts),
                       input_len=scale.length(self.input_len),
                       output_len=scale.length(self.output_len))

    def describe(self) -> dict[str, object]:
        """Provenance record for results."""
        return {
            "name": "random",
            "input_len": self.input_len,
            "output_len": self.output_len,
            "num_prompts": self.num_prompts,
            "range_ratio": self.range_ratio,
            "seed": self.seed,
        }


def allowed_ids(tokenizer: Tokenizer) -> np.ndarray:
    """Ids a random prompt may contain: the vocabulary minus special ids."""
    specials = _special_ids(tokenizer)
    allowed = np.setdiff1d(
        np.arange(tokenizer.vocab_size),
        np.fromiter(specials, dtype=np.int64, count=len(specials)),
    )
    if allowed.size == 0:
        raise WorkloadError(
            f"tokenizer has no usable ids: vocab_size={tokenizer.vocab_size}, "
            f"{len(specials)} special ids excluded"
        )
    return allowed


def exact_prompt(
    tokenizer: Tokenizer,
    rng: np.random.Generator,
    allowed: np.ndarray,
    target: int,
    offset: int,
    index: int,
    head: str = "",
) -> str:
    """A prompt whose encoding has exactly `target` tokens, or ValueError.

    With `head`, the prompt is `head` followed by random text, and `target`
    counts the whole prompt (shared-prefix prompts keep their prefix verbatim).
"""
    seen: list[int] = []
    # With a head, only the rest of the budget is drawn: starting from `target`
    # random ids after a long head overshoots by the head's length.
    size = max(target - len(tokenizer.encode(head)), 1) if head else target
    for draw in range(_DRAWS):
        if draw == 0:
            # vllm's sequence: consecutive allowed ids from a per-request offset.
            picks = (offset + index + np.arange(size)) % allowed.size
        else:
            picks = rng.integers(0, allowed.size, size=size)
        ids: list[int] = allowed[picks].tolist()
        for _ in range(_ADJUST_ROUNDS):
            prompt = head + tokenizer.decode(ids)
            got = len(tokenizer.encode(prompt))
            seen.append(got)
            if got == target and prompt[len(head):]:
                return prompt
            # Adjust our own ids rather than the re-encoding, so special
            # tokens the tokenizer adds (BOS) never end up in the text.
            if got > target:
                ids = ids[: len(ids) - (got - target)]
                if not ids:
                    break
            else:
                extra = rng.integers(0, allowed.size, size=max(target - got, 1))
                ids.extend(allowed[extra].tolist())
    raise WorkloadError(
        f"dataset: could not build prompt {index} with exactly {target} tokens "
        f"after {_DRAWS} draws x {_ADJUST_ROUNDS} decode/encode rounds "
        f"(re-encoded lengths seen: {seen[-6:]}); the tokenizer may add more special "
        "tokens than the target allows or not round-trip decoded text. Raise input_len "
        "or check the tokenizer's special_ids."
    )
