"""The served model's tokenizer, reached through vLLM's /tokenize and /detokenize."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import replace

from pytest_mi300x.net import post_json
from pytest_mi300x.workload.datasets import PromptRequest


class ServedTokenizer:
    """Tokenizer protocol over HTTP, so prompt lengths are counted by the server itself.

    /tokenize adds special tokens (BOS) exactly as a /v1/completions prompt does,
    so `len(encode(p))` equals the server's `usage.prompt_tokens` for prompt `p`.
    """

    def __init__(
        self,
        base_url: str,
        api_key: str,
        model: str,
        vocab_size: int,
        special_ids: frozenset[int] = frozenset(),
        timeout: float = 60.0,
    ) -> None:
        if vocab_size < 1:
            raise ValueError(f"ServedTokenizer: vocab_size must be >= 1, got {vocab_size}")
        self._model = model
        self._vocab_size = vocab_size
        self._special_ids = frozenset(special_ids)
        self._base_url = base_url.rstrip("/")
        self._api_key = api_key
        self._timeout = timeout

    @property
    def vocab_size(self) -> int:
        return self._vocab_size

    @property
    def special_ids(self) -> frozenset[int]:
        """Ids random prompts must not contain (BOS, EOS, pad, ...)."""
        return self._special_ids

    def encode(self, text: str) -> list[int]:
        body = self._post(
            "/tokenize", {"model": self._model, "prompt": text, "add_special_tokens": True}
        )
        tokens = body.get("tokens")
        if not isinstance(tokens, list):
            raise RuntimeError(f"/tokenize answered without a 'tokens' list: keys {sorted(body)}")
        return [int(t) for t in tokens]

    def count_chat(self, prompt: str) -> int:
        """Prompt tokens of `prompt` sent as one user message to /v1/chat/completions
        (the chat template's tokens included), as the server's usage counts them."""
        body = self._post("/tokenize", {"model": self._model, "add_generation_prompt": True,
                                        "messages": [{"role": "user", "content": prompt}]})
        count = body.get("count")
        if not isinstance(count, int):
            raise RuntimeError(f"/tokenize (messages) answered without a 'count': keys "
                               f"{sorted(body)}")
        return count

    def decode(self, ids: Sequence[int]) -> str:
        body = self._post("/detokenize", {"model": self._model, "tokens": [int(i) for i in ids]})
        prompt = body.get("prompt")
        if not isinstance(prompt, str):
            raise RuntimeError(
                f"/detokenize answered without a 'prompt' string: keys {sorted(body)}"
            )
        return prompt

    def _post(self, path: str, payload: dict[str, object]) -> dict[str, object]:
        status, raw = post_json(f"{self._base_url}{path}", payload, self._api_key,
                                self._timeout)
        if status != 200:
            # The body carries vLLM's error message; the request headers (API key) are not echoed.
            text = raw[:500].decode(errors="replace")
            raise RuntimeError(f"POST {path} failed with HTTP {status}: {text}")
        body = json.loads(raw)
        if not isinstance(body, dict):
            raise RuntimeError(f"POST {path} returned {type(body).__name__}, expected an object")
        return body

    def close(self) -> None:
        """Nothing to release: each call is its own connection."""

    def __enter__(self) -> ServedTokenizer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def for_chat(requests: Sequence[PromptRequest], tokenizer: object) -> list[PromptRequest]:
    """The same requests with prompt_len counted as chat messages (template included),
    so the server's usage still checks them; needs a tokenizer with `count_chat`."""
    count = getattr(tokenizer, "count_chat", None)
    if count is None:
        raise ValueError(f"endpoint 'chat' needs a tokenizer that counts chat prompts "
                         f"(count_chat); {type(tokenizer).__name__} has none")
    return [replace(r, prompt_len=count(r.prompt)) for r in requests]
