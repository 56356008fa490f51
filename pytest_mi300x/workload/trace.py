"""Replay of a timestamped request trace (Mooncake's JSONL), shared prefix blocks included.

A Mooncake trace (kvcache-ai/Mooncake, FAST25-release) has one request per line:
``timestamp`` (ms after the trace's start), ``input_length`` and ``output_length``
(tokens) and ``hash_ids``, one id per 512-token block of the prompt, where equal ids
mean an equal prefix (the KV the engine can reuse). Here every hash id becomes a block
of random text of about ``block_size`` tokens, made once per build, so two rows that
share ids share that text; each prompt is then topped up to exactly ``input_length``
tokens of the served tokenizer. Send times come from ``timestamp``
(``Arrivals.replay(speedup)``).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from pytest_mi300x.workload.datasets import (
    PromptRequest,
    Scale,
    Tokenizer,
    allowed_ids,
    exact_prompt,
    file_digest,
)

MOONCAKE_BLOCK = 512
"""Tokens per hash id in Mooncake's traces."""


@dataclass(frozen=True)
class TraceRow:
    """One request of a trace, as read."""

    timestamp_s: float
    input_length: int
    output_length: int
    hash_ids: tuple[int, ...]


def read_trace(path: Path, time_unit_s: float = 0.001) -> list[TraceRow]:
    """The rows of a Mooncake-style JSONL trace; one-line errors name file:line."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise ValueError(f"trace file {path} does not exist; give a JSONL file with one "
                         '{"timestamp": 0, "input_length": 600, "output_length": 40, '
                         '"hash_ids": [0, 1]} object per line') from None
    rows = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"trace file {path}:{number}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{where} is not JSON ({exc.msg})") from None
        if not isinstance(row, dict):
            raise ValueError(f"{where} is not a JSON object")
        for key in ("input_length", "output_length"):
            value = row.get(key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{where}: {key} {value!r} is not an int >= 1")
        stamp = row.get("timestamp", 0)
        if isinstance(stamp, bool) or not isinstance(stamp, int | float) \
                or not math.isfinite(stamp) or stamp < 0:
            raise ValueError(f"{where}: timestamp {stamp!r} is not a number >= 0 (ms)")
        hashes = row.get("hash_ids", [])
        if not isinstance(hashes, list) or not all(
                isinstance(h, int) and not isinstance(h, bool) for h in hashes):
            raise ValueError(f"{where}: hash_ids must be a list of ints")
        rows.append(TraceRow(float(stamp) * time_unit_s, row["input_length"],
                             row["output_length"], tuple(hashes)))
    if not rows:
        raise ValueError(f"trace file {path} has no rows")
    return rows


@dataclass(frozen=True)
class TraceDataset:
    """A timestamped trace's requests, prompts rebuilt with their shared prefix blocks.

    ``num_prompts`` None takes every row; otherwise the first rows. ``length_scale``
    (set by a host's scale) shrinks every length and the block together, so blocks
    stay shared. ``seed`` draws the block texts: another seed (a warm-up, the next
    repetition) gives other text on the same shape, so nothing is cached from before.
    Send with ``Arrivals.replay()`` to keep the trace's own times.
    """

    path: Path
    num_prompts: int | None = None
    block_size: int = MOONCAKE_BLOCK
    time_unit_s: float = 0.001  # Mooncake's timestamps are milliseconds
    seed: int = 0
    length_scale: float = 1.0

    def __post_init__(self) -> None:
        if self.num_prompts is not None and (isinstance(self.num_prompts, bool)
                                             or self.num_prompts < 1):
            raise ValueError(f"TraceDataset.num_prompts must be None or >= 1, "
                             f"got {self.num_prompts!r}")
        if self.block_size < 1 or not 0 < self.length_scale <= 1 or self.time_unit_s <= 0:
            raise ValueError("TraceDataset: block_size >= 1, 0 < length_scale <= 1 and "
                             "time_unit_s > 0 are required")

    def rows(self) -> list[TraceRow]:
        rows = read_trace(Path(self.path), self.time_unit_s)
        return rows if self.num_prompts is None else rows[:self.num_prompts]

    def _len(self, n: int) -> int:
        return max(1, round(n * self.length_scale))

    def build(self, tokenizer: Tokenizer) -> list[PromptRequest]:
        rows = self.rows()
        allowed = allowed_ids(tokenizer)
        block = self._len(self.block_size)
        texts: dict[tuple[int, bool], str] = {}

        def block_text(h: int, first: bool) -> str:
            # The first block counts the BOS the engine adds; a later one is `block` tokens
            # of its own (as encoded alone, BOS aside), so the blocks of a prompt line up
            # with the trace's block boundaries.
            if (h, first) not in texts:
                rng = np.random.default_rng([self.seed, 3, h])
                texts[h, first] = exact_prompt(tokenizer, rng, allowed,
                                               block if first else block + 1,
                                               int(rng.integers(0, allowed.size)), h)
            return texts[h, first]

        out = []
        for i, row in enumerate(rows):
            target = self._len(row.input_length)
            # Full blocks only (the trace's last id covers a partial block), and never the
            # whole prompt: the top-up needs at least one token of its own.
            full = min(len(row.hash_ids), (target - 1) // block)
            rng = np.random.default_rng([self.seed, 4, i])
            while True:
                head = " ".join(block_text(h, k == 0)
                                for k, h in enumerate(row.hash_ids[:full]))
                head = head + " " if head else ""
                if not head or len(tokenizer.encode(head)) < target:
                    break
                full -= 1  # the blocks' texts came out longer together than apart
            prompt = exact_prompt(tokenizer, rng, allowed, target,
                                  int(rng.integers(0, allowed.size)), i, head=head)
            out.append(PromptRequest(prompt, target, self._len(row.output_length),
                                     at=row.timestamp_s))
        return out

    def scaled(self, scale: Scale) -> TraceDataset:
        length_scale = scale.length(1_000_000) / 1_000_000
        num = None if self.num_prompts is None else scale.num_prompts(self.num_prompts)
        return replace(self, num_prompts=num, length_scale=self.length_scale * length_scale)

    def describe(self) -> dict[str, object]:
        return {"name": "trace", "path": str(self.path), "digest": file_digest(Path(self.path)),
                "num_prompts": self.num_prompts, "block_size": self.block_size,
                "time_unit_s": self.time_unit_s, "seed": self.seed,
                "length_scale": self.length_scale}
