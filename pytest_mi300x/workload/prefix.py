"""Shared-prefix prompts: N prefixes times M suffixes, for prefix-caching cases."""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from pytest_mi300x.workload.datasets import (
    PromptRequest,
    Scale,
    Tokenizer,
    WorkloadError,
    allowed_ids,
    exact_prompt,
)


@dataclass(frozen=True)
class SharedPrefixDataset:
    """`num_prompts` prompts over `num_prefixes` shared prefixes, in seeded order.

    Prompt i carries prefix i % num_prefixes (exactly `prefix_len` tokens, BOS
    included) and its own random suffix; the whole prompt is exactly
    `prefix_len + suffix_len` tokens. Prefixes come from `prefix_seed` when it
    is set, so repetitions with fresh seeds (new suffixes) still share them: the
    guide's "fresh run vs 2nd run" is the same prefix_seed run twice.
    `SharedPrefixDataset.grid(n, m, ...)` is n prefixes times m suffixes.
    """

    num_prefixes: int
    num_prompts: int
    prefix_len: int
    suffix_len: int
    output_len: int
    seed: int = 0
    prefix_seed: int | None = None
    separator: str = " "  # between prefix and suffix text ("" for tokenizers without spaces)

    def __post_init__(self) -> None:
        for name in ("num_prefixes", "num_prompts", "prefix_len", "suffix_len", "output_len"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise WorkloadError(
                    f"SharedPrefixDataset.{name} must be an int >= 1, got {value!r}")

    @classmethod
    def grid(cls, num_prefixes: int, suffixes_per_prefix: int, *, prefix_len: int,
             suffix_len: int, output_len: int, seed: int = 0,
             prefix_seed: int | None = None, separator: str = " ") -> SharedPrefixDataset:
        return cls(num_prefixes, num_prefixes * suffixes_per_prefix, prefix_len, suffix_len,
                   output_len, seed, prefix_seed, separator)

    def prefixes(self, tokenizer: Tokenizer) -> list[str]:
        seed = self.seed if self.prefix_seed is None else self.prefix_seed
        rng = np.random.default_rng([seed, 1])
        allowed = allowed_ids(tokenizer)
        offsets = rng.integers(0, tokenizer.vocab_size, size=self.num_prefixes)
        return [exact_prompt(tokenizer, rng, allowed, self.prefix_len, int(offsets[i]), i)
                for i in range(self.num_prefixes)]

    def build(self, tokenizer: Tokenizer) -> list[PromptRequest]:
        prefixes = self.prefixes(tokenizer)
        rng = np.random.default_rng([self.seed, 2])
        allowed = allowed_ids(tokenizer)
        target = self.prefix_len + self.suffix_len
        order = rng.permutation(self.num_prompts)
        offsets = rng.integers(0, tokenizer.vocab_size, size=self.num_prompts)
        return [
            PromptRequest(
                exact_prompt(tokenizer, rng, allowed, target, int(offsets[i]), int(i),
                             head=prefixes[int(i) % self.num_prefixes] + self.separator),
                target, self.output_len)
            for i in order
        ]

    def scaled(self, scale: Scale) -> SharedPrefixDataset:
        # At least two prompts per prefix, or a small host would share nothing.
        return replace(self, num_prompts=max(scale.num_prompts(self.num_prompts),
                                             2 * self.num_prefixes),
                       prefix_len=scale.length(self.prefix_len),
                       suffix_len=scale.length(self.suffix_len),
                       output_len=scale.length(self.output_len))

    def describe(self) -> dict[str, object]:
        return {"name": "shared-prefix", "num_prefixes": self.num_prefixes,
                "num_prompts": self.num_prompts, "prefix_len": self.prefix_len,
                "suffix_len": self.suffix_len, "output_len": self.output_len,
                "seed": self.seed, "prefix_seed": self.prefix_seed}
