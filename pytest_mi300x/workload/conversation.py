"""Multi-turn conversations: every turn carries the conversation so far.

Turn t+1's prompt is turn t's prompt, a stand-in for the answer to it (random text of
the answer's length) and the next user message. Stand-in rather than the engine's own
answer, so every prompt's length is exact and known before the run (and checked against
the server's usage); the engine's prefix cache still finds the earlier turns, as it
would in a chat. A turn is sent once the turn before it completed, after ``think_s``;
the arrival schedule sets when conversations start.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

from pytest_mi300x.workload.datasets import (
    PromptRequest,
    Scale,
    Tokenizer,
    allowed_ids,
    exact_prompt,
)


@dataclass(frozen=True)
class MultiTurnDataset:
    """``num_prompts`` requests in conversations of ``turns`` turns.

    Conversation c's first message is ``first_len`` tokens; each later turn adds the
    previous answer (``output_len`` tokens) and a user message of ``user_len`` tokens.
    Requests are ordered turn by turn: the first turns of all conversations, then the
    second turns, and so on (request i's previous turn is request i - conversations).
    """

    num_prompts: int
    turns: int = 4
    first_len: int = 256
    user_len: int = 64
    output_len: int = 64
    think_s: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("num_prompts", "turns", "first_len", "user_len", "output_len"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"MultiTurnDataset.{name} must be an int >= 1, got {value!r}")
        if not math.isfinite(self.think_s) or self.think_s < 0:
            raise ValueError(f"MultiTurnDataset.think_s must be >= 0 s, got {self.think_s!r}")

    @property
    def conversations(self) -> int:
        return max(1, math.ceil(self.num_prompts / self.turns))

    def build(self, tokenizer: Tokenizer) -> list[PromptRequest]:
        allowed = allowed_ids(tokenizer)
        count = self.conversations
        rng = np.random.default_rng([self.seed, 5])
        out: list[PromptRequest] = []
        history: list[str] = []
        for turn in range(self.turns):
            for c in range(count):
                i = len(out)
                if i >= self.num_prompts:
                    break
                offset = int(rng.integers(0, allowed.size))
                if turn == 0:
                    prompt = exact_prompt(tokenizer, rng, allowed, self.first_len, offset, i)
                    history.append(prompt)
                    out.append(PromptRequest(prompt, self.first_len, self.output_len))
                    continue
                answer = tokenizer.decode(
                    allowed[rng.integers(0, allowed.size, size=self.output_len)].tolist())
                head = f"{history[c]} {answer} "
                target = len(tokenizer.encode(head)) + self.user_len
                prompt = exact_prompt(tokenizer, rng, allowed, target, offset, i, head=head)
                history[c] = prompt
                out.append(PromptRequest(prompt, target, self.output_len, after=i - count,
                                         think_s=self.think_s))
        return out

    def scaled(self, scale: Scale) -> MultiTurnDataset:
        # Whole conversations: at least one of every turn.
        return replace(self, num_prompts=max(scale.num_prompts(self.num_prompts), self.turns),
                       first_len=scale.length(self.first_len),
                       user_len=scale.length(self.user_len),
                       output_len=scale.length(self.output_len))

    def describe(self) -> dict[str, object]:
        return {"name": "multi-turn", "num_prompts": self.num_prompts, "turns": self.turns,
                "first_len": self.first_len, "user_len": self.user_len,
                "output_len": self.output_len, "think_s": self.think_s, "seed": self.seed}
