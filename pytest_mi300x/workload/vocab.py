"""Token ids to text from a model folder's own ``tokenizer.json``, without ``tokenizers``.

For engines that count tokens over HTTP but cannot turn ids back into text (TGI has
``/tokenize`` and no ``/detokenize``). The harness reads the file as JSON and runs the
decoder it declares, as the Hugging Face ``tokenizers`` library does:

- ``ByteLevel`` (GPT-2, Llama 3, Qwen: byte-level BPE): each token's characters map
  back to bytes through GPT-2's byte-to-unicode table; the bytes of all tokens are
  decoded together as UTF-8, invalid sequences replaced (U+FFFD).
- ``Sequence`` of ``Replace`` / ``ByteFallback`` / ``Fuse`` / ``Strip`` (Llama 2,
  Mistral: sentencepiece-style BPE), and ``Metaspace``.

Prompt lengths never depend on this: the server's own tokenizer counts every prompt
(``datasets.exact_prompt`` re-encodes until the count is exact). Decoding only decides
which text the random ids become, as vLLM's ``/detokenize`` would; the engine tests
compare it with that on the real tiny model.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

TOKENIZER_FILE = "tokenizer.json"


class UnsupportedTokenizer(ValueError):
    """A tokenizer.json whose model or decoder this module cannot run; one line."""


@lru_cache(maxsize=1)
def byte_decoder() -> dict[str, int]:
    """GPT-2's unicode-to-byte map: printable bytes stand for themselves, the rest are
    shifted past 255 so every byte has a visible character."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1),
            *range(ord("®"), ord("ÿ") + 1)]
    chars = list(keep)
    shift = 0
    for byte in range(256):
        if byte not in keep:
            keep.append(byte)
            chars.append(256 + shift)
            shift += 1
    return {chr(c): b for b, c in zip(keep, chars, strict=True)}


Step = Callable[[list[str]], list[str]]
_BYTE_TOKEN = re.compile(r"^<0x([0-9A-Fa-f]{2})>$")


def _byte_level(tokens: list[str]) -> list[str]:
    table = byte_decoder()
    data = bytearray()
    for token in tokens:
        try:
            data.extend(table[c] for c in token)
        except KeyError:  # a token outside the byte alphabet (an added token) stays as is
            data.extend(token.encode("utf-8"))
    return [data.decode("utf-8", errors="replace")]


def _byte_fallback(tokens: list[str]) -> list[str]:
    out: list[str] = []
    pending = bytearray()

    def flush() -> None:
        if pending:
            try:
                out.append(pending.decode("utf-8"))
            except UnicodeDecodeError:
                out.extend("\ufffd" for _ in pending)  # as tokenizers: one per byte
            pending.clear()

    for token in tokens:
        match = _BYTE_TOKEN.match(token)
        if match:
            pending.append(int(match.group(1), 16))
        else:
            flush()
            out.append(token)
    flush()
    return out


def _replace(spec: dict[str, Any]) -> Step:
    pattern = spec.get("pattern") or {}
    if "String" not in pattern:
        raise UnsupportedTokenizer(f"Replace decoder with pattern {pattern!r} (only String)")
    old, new = str(pattern["String"]), str(spec.get("content", ""))
    return lambda tokens: [t.replace(old, new) for t in tokens]


def _strip(spec: dict[str, Any]) -> Step:
    char, start, stop = str(spec.get("content", " ")), int(spec.get("start", 0)), \
        int(spec.get("stop", 0))

    def strip(tokens: list[str]) -> list[str]:
        out = []
        for token in tokens:
            head = 0
            while head < start and token[head:head + 1] == char:
                head += 1
            tail = len(token)
            while len(token) - tail < stop and tail > head and token[tail - 1] == char:
                tail -= 1
            out.append(token[head:tail])
        return out
    return strip


def _metaspace(spec: dict[str, Any]) -> Step:
    mark = str(spec.get("replacement", "▁"))
    scheme = spec.get("prepend_scheme", "always" if spec.get("add_prefix_space", True)
                      else "never")

    def metaspace(tokens: list[str]) -> list[str]:
        # As tokenizers does: every mark of the first token is dropped, not only one.
        return [t.replace(mark, "" if i == 0 and scheme != "never" else " ")
                for i, t in enumerate(tokens)]
    return metaspace


def _step(spec: dict[str, Any]) -> list[Step]:
    kind = spec.get("type")
    if kind == "ByteLevel":
        return [_byte_level]
    if kind == "Sequence":
        return [s for inner in spec.get("decoders") or [] for s in _step(inner)]
    if kind == "Replace":
        return [_replace(spec)]
    if kind == "ByteFallback":
        return [_byte_fallback]
    if kind == "Fuse":
        return [lambda tokens: ["".join(tokens)]]
    if kind == "Strip":
        return [_strip(spec)]
    if kind == "Metaspace":
        return [_metaspace(spec)]
    raise UnsupportedTokenizer(f"decoder {kind!r} is not one this harness runs "
                               "(ByteLevel, Metaspace, Replace, ByteFallback, Fuse, Strip)")


class VocabDecoder:
    """``decode(ids)`` as the model's Hugging Face tokenizer decodes (special tokens kept,
    no clean-up of spaces), read from ``tokenizer.json`` alone."""

    def __init__(self, data: dict[str, Any], source: str = TOKENIZER_FILE) -> None:
        model = data.get("model") or {}
        if model.get("type") not in (None, "BPE") or not isinstance(model.get("vocab"), dict):
            raise UnsupportedTokenizer(f"{source}: model {model.get('type')!r} is not a BPE "
                                       "vocabulary this harness can read")
        self.source = source
        self._tokens: dict[int, str] = {int(i): str(t) for t, i in model["vocab"].items()}
        for added in data.get("added_tokens") or []:
            self._tokens[int(added["id"])] = str(added["content"])
        decoder = data.get("decoder")
        if not isinstance(decoder, dict):
            raise UnsupportedTokenizer(f"{source}: no decoder: ids cannot become text")
        self.decoder_type = str(decoder.get("type"))
        self._steps = _step(decoder)

    @classmethod
    def from_model_dir(cls, model_dir: Path | str) -> VocabDecoder:
        path = Path(model_dir) / TOKENIZER_FILE
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise UnsupportedTokenizer(f"{path}: cannot read it ({exc})") from None
        return cls(data, str(path))

    def token(self, token_id: int) -> str:
        try:
            return self._tokens[token_id]
        except KeyError:
            raise ValueError(f"{self.source}: token id {token_id} is not in the vocabulary "
                             f"({len(self._tokens)} tokens)") from None

    def decode(self, ids: Sequence[int]) -> str:
        tokens = [self.token(int(i)) for i in ids]
        for step in self._steps:
            tokens = step(tokens)
        return "".join(tokens)

    def describe(self) -> dict[str, object]:
        return {"source": self.source, "decoder": self.decoder_type,
                "tokens": len(self._tokens)}
