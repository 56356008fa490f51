"""ShareGPT prompts: from the JSON file with vLLM's filtering, or a seeded look-alike."""

from __future__ import annotations

import json
import math
import random
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from pytest_mi300x.workload.datasets import (
    PromptRequest,
    Scale,
    Tokenizer,
    WorkloadError,
    allowed_ids,
    exact_prompt,
    file_digest,
)

# vllm.benchmarks.datasets.is_valid_sequence defaults (from benchmark_serving.py).
MIN_LEN = 4
MAX_PROMPT_LEN = 1024
MAX_TOTAL_LEN = 2048


def is_valid_sequence(prompt_len: int, output_len: int, *, check_output: bool = True) -> bool:
    """vLLM's ShareGPT filter: prompt >= 4, output >= 4 (unless fixed), prompt <= 1024,
    prompt + output <= 2048 tokens."""
    return not (
        prompt_len < MIN_LEN
        or (check_output and output_len < MIN_LEN)
        or prompt_len > MAX_PROMPT_LEN
        or prompt_len + output_len > MAX_TOTAL_LEN
    )


def load_sharegpt(path: Path) -> list[dict[str, Any]]:
    """Entries of a ShareGPT JSON file with at least two turns; one-line errors on bad input."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise WorkloadError(
            f"ShareGPT file {path} does not exist; give the path of "
            "ShareGPT_V3_unfiltered_cleaned_split.json (or use SyntheticShareGPT)") from None
    except (IsADirectoryError, UnicodeDecodeError, PermissionError) as exc:
        raise WorkloadError(f"ShareGPT file {path} cannot be read as UTF-8 JSON "
                         f"({type(exc).__name__}); give the ShareGPT JSON file") from None
    except json.JSONDecodeError as exc:
        raise WorkloadError(f"ShareGPT file {path} is not JSON ({exc}); give the ShareGPT "
                         "JSON list of {\"conversations\": [...]} entries") from None
    if not isinstance(data, list):
        raise WorkloadError(f"ShareGPT file {path} holds a {type(data).__name__}, expected a "
                         "list of {\"conversations\": [...]} entries")
    entries = [e for e in data if isinstance(e, dict)
               and isinstance(e.get("conversations"), list) and len(e["conversations"]) >= 2]
    for n, e in enumerate(entries):
        bad = next((turn for turn in e["conversations"][:2] if not isinstance(turn, dict)), None)
        if bad is not None:
            raise WorkloadError(
                f"ShareGPT file {path}: entry {n} has a turn {str(bad)[:40]!r} that is not an "
                "object; each turn is {\"from\": ..., \"value\": ...}")
    return entries


@dataclass(frozen=True)
class ShareGPTDataset:
    """vllm bench serve's ShareGPT sampling: same filter, shuffle and oversampling.

    Turn 0 is the prompt; turn 1's token count is the output length unless
    `output_len` fixes it. Entries are shuffled with Python's `random` seeded by
    `seed` (vLLM seeds the global generator the same way), then taken in order
    while they pass `is_valid_sequence`; a short file is topped up by
    `random.choices` as vLLM oversamples.
    """

    path: Path
    num_prompts: int
    output_len: int | None = None
    seed: int = 0

    def build(self, tokenizer: Tokenizer) -> list[PromptRequest]:
        entries = load_sharegpt(Path(self.path))
        rng = random.Random(self.seed)
        rng.shuffle(entries)
        out: list[PromptRequest] = []
        for entry in entries:
            if len(out) >= self.num_prompts:
                break
            turns = entry["conversations"]
            prompt, completion = str(turns[0].get("value", "")), str(turns[1].get("value", ""))
            prompt_len = len(tokenizer.encode(prompt))
            output_len = (len(tokenizer.encode(completion)) if self.output_len is None
                          else self.output_len)
            if is_valid_sequence(prompt_len, output_len,
                                 check_output=self.output_len is None):
                out.append(PromptRequest(prompt, prompt_len, output_len))
        if not out:
            raise WorkloadError(f"ShareGPT file {self.path}: no conversation passed vLLM's "
                             "length filter (prompt 4-1024 tokens, total <= 2048)")
        if len(out) < self.num_prompts:
            out.extend(rng.choices(out, k=self.num_prompts - len(out)))
        return out

    def scaled(self, scale: Scale) -> ShareGPTDataset:
        # Lengths are the file's own; only the count shrinks.
        return replace(self, num_prompts=scale.num_prompts(self.num_prompts))

    def describe(self) -> dict[str, object]:
        return {"name": "sharegpt", "path": str(self.path), "digest": file_digest(self.path),
                "num_prompts": self.num_prompts,
                "output_len": self.output_len, "seed": self.seed,
                "filter": f"prompt {MIN_LEN}-{MAX_PROMPT_LEN}, total <= {MAX_TOTAL_LEN} "
                          "tokens (vllm is_valid_sequence)"}


@dataclass(frozen=True)
class SyntheticShareGPT:
    """A seeded stand-in with ShareGPT's shape, for machines without the file.

    Lengths (tokens, BOS included) are log-normal: input median 130 with
    sigma 1.0 (mean about 215 before filtering), output median 120 with sigma
    1.0 (mean about 198), the means `vllm bench serve` reports on the real
    file (about 215 input and 198 output tokens per prompt). Draws failing
    vLLM's ShareGPT filter are dropped and redrawn, as the file's are. Prompts
    are random token text of exactly that length; the shape is ShareGPT's, the
    content is not (no prefix sharing, no natural language). `length_scale`
    shrinks both for small hosts before the filter.
    """

    num_prompts: int
    seed: int = 0
    length_scale: float = 1.0
    length_seed: int | None = None
    """Seed of the lengths alone; when set, repetitions (which change ``seed``) keep the
    same lengths and new prompt text, so totals and throughputs compare run to run."""

    INPUT_MEDIAN = 130.0
    OUTPUT_MEDIAN = 120.0
    SIGMA = 1.0

    def lengths(self) -> list[tuple[int, int]]:
        """(prompt_len, output_len) pairs, seeded, all passing vLLM's filter."""
        rng = np.random.default_rng(self.seed if self.length_seed is None else self.length_seed)
        pairs: list[tuple[int, int]] = []
        while len(pairs) < self.num_prompts:
            n = self.num_prompts - len(pairs)
            ins = rng.lognormal(math.log(self.INPUT_MEDIAN), self.SIGMA, size=n)
            outs = rng.lognormal(math.log(self.OUTPUT_MEDIAN), self.SIGMA, size=n)
            for i, o in zip(ins, outs, strict=True):
                p, q = round(i * self.length_scale), round(o * self.length_scale)
                if is_valid_sequence(p, q):
                    pairs.append((p, q))
        return pairs

    def build(self, tokenizer: Tokenizer) -> list[PromptRequest]:
        rng = np.random.default_rng(self.seed + 1)
        allowed = allowed_ids(tokenizer)
        offsets = rng.integers(0, tokenizer.vocab_size, size=self.num_prompts)
        return [PromptRequest(exact_prompt(tokenizer, rng, allowed, p, int(offsets[i]), i), p, q)
                for i, (p, q) in enumerate(self.lengths())]

    def scaled(self, scale: Scale) -> SyntheticShareGPT:
        return replace(self, num_prompts=scale.num_prompts(self.num_prompts),
                       length_scale=self.length_scale * scale.length(1000) / 1000)

    def describe(self) -> dict[str, object]:
        return {"name": "sharegpt-synthetic", "num_prompts": self.num_prompts,
                "seed": self.seed, "length_scale": self.length_scale,
                "length_seed": self.length_seed,
                "lengths": f"lognormal input median {self.INPUT_MEDIAN:g}, output median "
                           f"{self.OUTPUT_MEDIAN:g}, sigma {self.SIGMA:g}; vLLM ShareGPT filter"}
