"""A user's prompts from a JSONL file, one {"prompt": ..., "output_len": ...} per line."""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, replace
from pathlib import Path

from pytest_mi300x.workload.datasets import (
    PromptRequest,
    Scale,
    Tokenizer,
    WorkloadError,
    file_digest,
)


def read_prompts(path: Path, default_output_len: int) -> list[tuple[str, int]]:
    """(prompt, output_len) per line; blank lines skipped; one-line errors name file:line."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise WorkloadError(f"prompts file {path} does not exist; give a JSONL file with one "
                         '{"prompt": "...", "output_len": 128} object per line') from None
    except (IsADirectoryError, UnicodeDecodeError, PermissionError) as exc:
        raise WorkloadError(f"prompts file {path} cannot be read as UTF-8 text "
                         f"({type(exc).__name__}); give a JSONL file") from None
    out: list[tuple[str, int]] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"prompts file {path}:{number}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise WorkloadError(f"{where} is not JSON ({exc.msg}); write one object per line, "
                             'e.g. {"prompt": "Hello", "output_len": 64}') from None
        prompt = row.get("prompt") if isinstance(row, dict) else None
        if not isinstance(prompt, str) or not prompt:
            raise WorkloadError(f"{where} has no non-empty \"prompt\" string; "
                             'write e.g. {"prompt": "Hello", "output_len": 64}')
        output_len = row.get("output_len", default_output_len)
        if isinstance(output_len, bool) or not isinstance(output_len, int) or output_len < 1:
            raise WorkloadError(f"{where}: output_len {output_len!r} is not an int >= 1; "
                             "write e.g. \"output_len\": 64")
        out.append((prompt, output_len))
    if not out:
        raise WorkloadError(f"prompts file {path} has no prompts; add one JSON object per line")
    return out


@dataclass(frozen=True)
class JsonlDataset:
    """Prompts from a user's JSONL file; lengths are counted by the served tokenizer.

    `num_prompts` None takes every line; otherwise lines are cycled to reach it.
    With `shuffle`, `seed` orders them (warm-up draws its own order, but from
    the same lines: a small file warms the prefix cache for the measured run).
    """

    path: Path
    num_prompts: int | None = None
    output_len: int = 128  # for lines without their own output_len
    seed: int = 0
    shuffle: bool = True

    def build(self, tokenizer: Tokenizer) -> list[PromptRequest]:
        rows = read_prompts(Path(self.path), self.output_len)
        if self.shuffle:
            random.Random(self.seed).shuffle(rows)
        n = len(rows) if self.num_prompts is None else self.num_prompts
        chosen = [rows[i % len(rows)] for i in range(n)]
        return [PromptRequest(p, len(tokenizer.encode(p)), q) for p, q in chosen]

    def scaled(self, scale: Scale) -> JsonlDataset:
        if self.num_prompts is None:
            return self
        return replace(self, num_prompts=scale.num_prompts(self.num_prompts))

    def describe(self) -> dict[str, object]:
        return {"name": "jsonl", "path": str(self.path), "digest": file_digest(self.path),
                "num_prompts": self.num_prompts,
                "output_len": self.output_len, "seed": self.seed,
                "shuffle": self.shuffle}
