"""The served model's tokenizer: vLLM's /tokenize and /detokenize, or TGI's /tokenize with
text decoded from the model folder's tokenizer.json (TGI has no /detokenize)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from pytest_mi300x.net import post_json
from pytest_mi300x.workload.datasets import PromptRequest
from pytest_mi300x.workload.vocab import VocabDecoder


class _HttpTokenizer:
    """What both served tokenizers share: the vocabulary facts and POSTs to the server."""

    def __init__(self, base_url: str, api_key: str, vocab_size: int,
                 special_ids: frozenset[int], timeout: float) -> None:
        if vocab_size < 1:
            raise ValueError(f"{type(self).__name__}: vocab_size must be >= 1, got {vocab_size}")
        self._base_url = base_url.rstrip("/")
        self._api_key = api_key
        self._vocab_size = vocab_size
        self._special_ids = frozenset(special_ids)
        self._timeout = timeout

    @property
    def vocab_size(self) -> int:
        return self._vocab_size

    @property
    def special_ids(self) -> frozenset[int]:
        """Ids random prompts must not contain (BOS, EOS, pad, ...)."""
        return self._special_ids

    def _post(self, path: str, payload: dict[str, object]) -> Any:
        status, raw = post_json(f"{self._base_url}{path}", payload, self._api_key,
                                self._timeout)
        if status != 200:
            # The body carries the server's error message; our request headers (the API
            # key) are not echoed in it.
            text = raw[:500].decode(errors="replace")
            raise RuntimeError(f"POST {path} failed with HTTP {status}: {text}")
        return json.loads(raw)

    def _post_object(self, path: str, payload: dict[str, object]) -> dict[str, object]:
        body = self._post(path, payload)
        if not isinstance(body, dict):
            raise RuntimeError(f"POST {path} returned {type(body).__name__}, expected an object")
        return body

    def close(self) -> None:
        """Nothing to release: each call is its own connection."""

    def __enter__(self) -> _HttpTokenizer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class ServedTokenizer(_HttpTokenizer):
    """Tokenizer protocol over HTTP, so prompt lengths are counted by the server itself.

    /tokenize adds special tokens (BOS) exactly as a /v1/completions prompt does,
    so `len(encode(p))` equals the server's `usage.prompt_tokens` for prompt `p`.
    """

    def __init__(self, base_url: str, api_key: str, model: str, vocab_size: int,
                 special_ids: frozenset[int] = frozenset(), timeout: float = 60.0) -> None:
        super().__init__(base_url, api_key, vocab_size, special_ids, timeout)
        self._model = model

    def encode(self, text: str) -> list[int]:
        body = self._post_object(
            "/tokenize", {"model": self._model, "prompt": text, "add_special_tokens": True})
        tokens = body.get("tokens")
        if not isinstance(tokens, list):
            raise RuntimeError(f"/tokenize answered without a 'tokens' list: keys {sorted(body)}")
        return [int(t) for t in tokens]

    def count_chat(self, prompt: str) -> int:
        """Prompt tokens of `prompt` sent as one user message to /v1/chat/completions
        (the chat template's tokens included), as the server's usage counts them."""
        body = self._post_object("/tokenize", {
            "model": self._model, "add_generation_prompt": True,
            "messages": [{"role": "user", "content": prompt}]})
        count = body.get("count")
        if not isinstance(count, int):
            raise RuntimeError(f"/tokenize (messages) answered without a 'count': keys "
                               f"{sorted(body)}")
        return count

    def decode(self, ids: Sequence[int]) -> str:
        body = self._post_object("/detokenize",
                                 {"model": self._model, "tokens": [int(i) for i in ids]})
        prompt = body.get("prompt")
        if not isinstance(prompt, str):
            raise RuntimeError(
                f"/detokenize answered without a 'prompt' string: keys {sorted(body)}")
        return prompt

    def describe(self) -> dict[str, object]:
        """How prompt lengths were counted and text made: recorded with each result."""
        return {"counts": "the server's POST /tokenize (special tokens as a prompt gets them)",
                "decodes": "the server's POST /detokenize", "exact": True}


class TGIServedTokenizer(_HttpTokenizer):
    """Tokenizer protocol for TGI: the server counts, the model folder decodes.

    TGI's POST /tokenize answers a list of ``{id, text, start, stop}`` (byte offsets into
    the input) and always adds special tokens, as /v1/completions does with a prompt:
    ``len(encode(p))`` is the server's ``usage.prompt_tokens`` for ``p``. It has no
    /detokenize, so ids become text through the served folder's own tokenizer.json
    (``VocabDecoder``). Lengths stay exact whatever the decoder does: every prompt is
    re-encoded by the server until its count is the target.
    """

    def __init__(self, base_url: str, api_key: str, vocab_size: int,
                 special_ids: frozenset[int], decoder: VocabDecoder,
                 timeout: float = 60.0) -> None:
        super().__init__(base_url, api_key, vocab_size, special_ids, timeout)
        self._decoder = decoder

    def encode(self, text: str) -> list[int]:
        tokens = self._post("/tokenize", {"inputs": text})
        if not isinstance(tokens, list):
            raise RuntimeError(f"TGI /tokenize answered {type(tokens).__name__}, expected a "
                               "list of tokens")
        return [int(t["id"]) for t in tokens]

    def count_chat(self, prompt: str) -> int:
        """Prompt tokens of ``prompt`` as one user message (chat template included), as
        TGI's /chat_tokenize counts the request /v1/chat/completions would run."""
        body = self._post("/chat_tokenize", {"model": "tgi", "messages": [
            {"role": "user", "content": prompt}]})
        tokens = body.get("tokenize_response") if isinstance(body, dict) else None
        if not isinstance(tokens, list):
            raise RuntimeError("TGI /chat_tokenize answered without a 'tokenize_response' list")
        return len(tokens)

    def decode(self, ids: Sequence[int]) -> str:
        return self._decoder.decode(ids)

    def describe(self) -> dict[str, object]:
        return {"counts": "TGI's POST /tokenize (special tokens added, as for a prompt)",
                "decodes": {"method": "the served model folder's tokenizer.json, read by the "
                                      "harness (TGI has no /detokenize)",
                            **self._decoder.describe()},
                "exact": True}


def for_chat(requests: Sequence[PromptRequest], tokenizer: object) -> list[PromptRequest]:
    """The same requests with prompt_len counted as chat messages (template included),
    so the server's usage still checks them; needs a tokenizer with `count_chat`."""
    count = getattr(tokenizer, "count_chat", None)
    if count is None:
        raise ValueError(f"endpoint 'chat' needs a tokenizer that counts chat prompts "
                         f"(count_chat); {type(tokenizer).__name__} has none")
    return [replace(r, prompt_len=count(r.prompt)) for r in requests]
