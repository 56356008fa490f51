"""The tiny Llama-shaped model the CPU engine serves, made on the spot with no download.

This file has two lives. Run as a script under the *engine's* interpreter
(``engine_python tiny_model.py OUTDIR``) it trains a byte-level BPE tokenizer
and writes the model folder; that half may import only the stdlib and
``tokenizers``, which lives in the engine venv, not the harness's. Imported by
the harness, it runs that script and caches the result.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import random
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

# Shape of the model: small enough that 2 CPU cores serve it at useful rates,
# real enough (GQA, RMSNorm, SwiGLU, RoPE) to exercise vLLM's Llama path.
HIDDEN_SIZE = 256
INTERMEDIATE_SIZE = 688
NUM_LAYERS = 4
NUM_HEADS = 4
NUM_KV_HEADS = 2
VOCAB_SIZE = 4096
MAX_POSITIONS = 4096

BOS = "<s>"
EOS = "</s>"
SPECIAL_TOKENS = (BOS, EOS)
CORPUS_SEED = 20240601

CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "<|{{ message['role'] }}|>\n{{ message['content'] }}{{ eos_token }}\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)

MARKER = "tiny-model.json"


# --------------------------------------------------------------------------
# Engine side: stdlib + tokenizers only.
# --------------------------------------------------------------------------


def _corpus(seed: int = CORPUS_SEED, lines: int = 40_000) -> Iterator[str]:
    """Deterministic pseudo-language text, varied enough to fill a 4096 vocab."""
    rng = random.Random(seed)
    onsets = [
        "", "b", "c", "d", "f", "g", "h", "j", "k", "l", "m", "n", "p", "r", "s", "t",
        "v", "w", "z", "br", "ch", "cl", "dr", "fl", "gr", "kr", "pl", "qu", "sh", "st",
        "th", "tr",
    ]
    nuclei = ["a", "e", "i", "o", "u", "ai", "ea", "ee", "ie", "oo", "ou", "y"]
    codas = ["", "", "n", "r", "s", "t", "l", "m", "nd", "ng", "rk", "st", "x"]

    def word() -> str:
        return "".join(
            rng.choice(onsets) + rng.choice(nuclei) + rng.choice(codas)
            for _ in range(rng.choice((1, 1, 2, 2, 2, 3, 3, 4)))
        )

    # A Zipf-like lexicon, so frequent words earn whole-word merges and rare
    # ones are split into sub-words, as in natural text.
    lexicon = [word() for _ in range(30_000)]
    # Cumulative weights once: random.choices would otherwise re-sum 30k weights per line.
    cum_weights = list(itertools.accumulate(1.0 / (rank + 1) for rank in range(len(lexicon))))
    punct = [".", ".", ".", ",", "!", "?", ";", ":"]
    for _ in range(lines):
        words = rng.choices(lexicon, cum_weights=cum_weights, k=rng.randint(4, 24))
        if rng.random() < 0.15:
            words.insert(rng.randrange(len(words)), str(rng.randint(0, 99_999)))
        words[0] = words[0].capitalize()
        yield " ".join(words) + rng.choice(punct)


def _write_json(path: Path, value: object) -> None:
    path.write_text(json.dumps(value, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def generate(outdir: Path) -> dict[str, object]:
    """Train the tokenizer and write every file of the model folder; return a summary."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    outdir.mkdir(parents=True, exist_ok=True)
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        min_frequency=2,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(_corpus(), trainer=trainer)
    bos_id = tokenizer.token_to_id(BOS)
    eos_id = tokenizer.token_to_id(EOS)
    # Llama prepends BOS; doing it in the post-processor makes HF and vLLM agree.
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B", special_tokens=[(BOS, bos_id)]
    )
    tokenizer.save(str(outdir / "tokenizer.json"))
    vocab = tokenizer.get_vocab_size(with_added_tokens=True)
    if vocab > VOCAB_SIZE:
        raise SystemExit(f"trained vocab {vocab} exceeds the model's {VOCAB_SIZE}")

    _write_json(
        outdir / "config.json",
        {
            "architectures": ["LlamaForCausalLM"],
            "model_type": "llama",
            "hidden_size": HIDDEN_SIZE,
            "intermediate_size": INTERMEDIATE_SIZE,
            "num_hidden_layers": NUM_LAYERS,
            "num_attention_heads": NUM_HEADS,
            "num_key_value_heads": NUM_KV_HEADS,
            "head_dim": HIDDEN_SIZE // NUM_HEADS,
            "hidden_act": "silu",
            "max_position_embeddings": MAX_POSITIONS,
            "rms_norm_eps": 1e-5,
            "rope_theta": 10000.0,
            "attention_bias": False,
            "mlp_bias": False,
            "tie_word_embeddings": False,
            "vocab_size": VOCAB_SIZE,
            "bos_token_id": bos_id,
            "eos_token_id": eos_id,
            # Both spellings: transformers 5 reads "dtype", older ones "torch_dtype".
            "dtype": "bfloat16",
            "torch_dtype": "bfloat16",
            "initializer_range": 0.02,
            "use_cache": True,
        },
    )
    _write_json(
        outdir / "tokenizer_config.json",
        {
            "tokenizer_class": "PreTrainedTokenizerFast",
            "bos_token": BOS,
            "eos_token": EOS,
            "pad_token": EOS,
            "add_bos_token": True,
            "add_eos_token": False,
            "clean_up_tokenization_spaces": False,
            "model_max_length": MAX_POSITIONS,
            "chat_template": CHAT_TEMPLATE,
        },
    )
    _write_json(outdir / "special_tokens_map.json", {"bos_token": BOS, "eos_token": EOS})
    _write_json(
        outdir / "generation_config.json",
        {"bos_token_id": bos_id, "eos_token_id": eos_id, "do_sample": False},
    )
    return {"vocab_size": vocab, "special_ids": sorted({bos_id, eos_id})}


def _main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(f"usage: {argv[0]} OUTDIR", file=sys.stderr)
        return 2
    summary = generate(Path(argv[1]))
    print(json.dumps(summary))
    return 0


# --------------------------------------------------------------------------
# Harness side.
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class TinyModel:
    """A generated model folder and the facts a load generator needs about it."""

    path: Path
    vocab_size: int  # ids 0..vocab_size-1 all decode
    special_ids: frozenset[int]

    def describe(self) -> dict[str, object]:
        return {
            "path": str(self.path),
            "vocab_size": self.vocab_size,
            "special_ids": sorted(self.special_ids),
            "generator": generator_hash(),
        }


def generator_hash() -> str:
    """Short hash of this file: a change to the generator makes a new model folder."""
    return hashlib.sha256(Path(__file__).read_bytes()).hexdigest()[:12]


def read_local_vocab(model_dir: Path) -> tuple[int, frozenset[int]]:
    """(vocab size, special token ids) from ``tokenizer.json``: model vocab + added tokens."""
    data = json.loads((Path(model_dir) / "tokenizer.json").read_text(encoding="utf-8"))
    ids = set(data["model"]["vocab"].values())
    added = data.get("added_tokens", [])
    ids.update(tok["id"] for tok in added)
    special = frozenset(tok["id"] for tok in added if tok.get("special"))
    return max(ids) + 1, special


def ensure_tiny_model(
    python: Path,
    cache_dir: Path | None = None,
    progress: Callable[[str], None] | None = None,
) -> TinyModel:
    """The tiny model folder, generated with the engine's python (it has ``tokenizers``)
    on first use."""
    from filelock import FileLock

    from pytest_mi300x.engines.cache import default_cache_dir

    root = (cache_dir or default_cache_dir()) / "models"
    root.mkdir(parents=True, exist_ok=True)
    path = root / f"tiny-llama-{generator_hash()}"
    marker = path / MARKER
    lock = FileLock(str(path) + ".lock")
    with lock:
        if not marker.is_file():
            _generate(python, path, progress or (lambda line: None))
    vocab, special = read_local_vocab(path)
    return TinyModel(path=path, vocab_size=vocab, special_ids=special)


def _generate(python: Path, path: Path, progress: Callable[[str], None]) -> None:
    import shutil

    if path.exists():  # a half-written folder from a crashed run
        shutil.rmtree(path)
    tmp = path.with_name(path.name + f".tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    progress(f"tiny model: training tokenizer into {path}")
    start = time.monotonic()
    proc = subprocess.run(
        [str(python), str(Path(__file__).resolve()), str(tmp)],
        capture_output=True,
        text=True,
        # A stray tokenizers thread pool is wasted on 2 cores and warns on fork.
        env={**os.environ, "TOKENIZERS_PARALLELISM": "false"},
    )
    if proc.returncode != 0:
        shutil.rmtree(tmp, ignore_errors=True)
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
        raise RuntimeError(
            f"tiny model generation failed under {python} (exit {proc.returncode}): "
            + " | ".join(tail)
        )
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    _write_json(
        tmp / MARKER,
        {"generator": generator_hash(), "python": str(python), **summary},
    )
    # Rename last, so a folder under the final name is always complete.
    tmp.rename(path)
    elapsed = time.monotonic() - start
    progress(f"tiny model: ready in {elapsed:.1f}s (vocab {summary['vocab_size']})")


if __name__ == "__main__":
    raise SystemExit(_main(sys.argv))
