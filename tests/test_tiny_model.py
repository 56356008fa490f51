"""The tiny model folder: vocab reading and the generator, run for real under an engine python.

The generator needs ``tokenizers``, which lives in the engine venv: those tests
use the ``engine_python`` fixture (the real engine, provisioned on first use).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from pytest_mi300x.cli import main as cli_main
from pytest_mi300x.engines import tiny_model
from pytest_mi300x.engines.tiny_model import (
    MARKER,
    VOCAB_SIZE,
    TinyModel,
    ensure_tiny_model,
    generator_hash,
    read_local_vocab,
)

needs_engine = pytest.mark.engine


def test_read_local_vocab_counts_model_and_added_tokens(tmp_path: Path) -> None:
    tokenizer = {
        "model": {"type": "BPE", "vocab": {"<s>": 0, "</s>": 1, "a": 2, "b": 3}},
        "added_tokens": [
            {"id": 0, "content": "<s>", "special": True},
            {"id": 1, "content": "</s>", "special": True},
            {"id": 4, "content": "<extra>", "special": False},
        ],
    }
    (tmp_path / "tokenizer.json").write_text(json.dumps(tokenizer))
    assert read_local_vocab(tmp_path) == (5, frozenset({0, 1}))


def test_generator_hash_is_stable_and_short() -> None:
    assert generator_hash() == generator_hash()
    assert len(generator_hash()) == 12
    int(generator_hash(), 16)


def test_corpus_is_deterministic_and_varied() -> None:
    first = list(tiny_model._corpus(lines=200))
    assert first == list(tiny_model._corpus(lines=200))
    assert first != list(tiny_model._corpus(seed=1, lines=200))
    assert len({word for line in first for word in line.split()}) > 500


def test_module_imports_without_tokenizers() -> None:
    # The harness venv has no tokenizers; importing the module must not need it.
    code = "import sys; sys.modules['tokenizers'] = None; import pytest_mi300x.engines.tiny_model"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_tiny_model_describe() -> None:
    model = TinyModel(path=Path("/m"), vocab_size=10, special_ids=frozenset({1, 0}))
    assert model.describe() == {
        "path": "/m", "vocab_size": 10, "special_ids": [0, 1], "generator": generator_hash(),
    }


# -- with a real engine python ------------------------------------------------


@pytest.fixture(scope="module")
def model(engine_python: Path, tmp_path_factory: pytest.TempPathFactory) -> TinyModel:
    return ensure_tiny_model(engine_python, tmp_path_factory.mktemp("cache"), progress=print)


@needs_engine
def test_generated_folder_is_complete(model: TinyModel) -> None:
    assert model.path.name == f"tiny-llama-{generator_hash()}"
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json",
                 "generation_config.json", MARKER):
        assert (model.path / name).is_file(), name
    config = json.loads((model.path / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"]
    assert (config["hidden_size"], config["intermediate_size"]) == (256, 688)
    assert (config["num_hidden_layers"], config["num_attention_heads"]) == (4, 4)
    assert config["num_key_value_heads"] == 2
    assert config["max_position_embeddings"] >= 2048
    assert config["vocab_size"] == VOCAB_SIZE >= model.vocab_size
    # The trainer reaches the full size on the generated corpus.
    assert model.vocab_size == VOCAB_SIZE
    assert model.special_ids == frozenset({config["bos_token_id"], config["eos_token_id"]})
    tok_config = json.loads((model.path / "tokenizer_config.json").read_text())
    assert tok_config["tokenizer_class"] == "PreTrainedTokenizerFast"
    assert "chat_template" in tok_config


@needs_engine
def test_second_call_reuses_the_folder(engine_python: Path, model: TinyModel) -> None:
    marker = model.path / MARKER
    before = marker.stat().st_mtime_ns
    lines: list[str] = []
    again = ensure_tiny_model(engine_python, model.path.parent.parent, progress=lines.append)
    assert again == model
    assert marker.stat().st_mtime_ns == before
    assert lines == []


@needs_engine
def test_generation_is_deterministic(engine_python: Path, tmp_path: Path,
                                     model: TinyModel) -> None:
    other = ensure_tiny_model(engine_python, tmp_path, progress=lambda _: None)
    for name in ("tokenizer.json", "config.json", "tokenizer_config.json"):
        assert (other.path / name).read_bytes() == (model.path / name).read_bytes(), name


@needs_engine
def test_transformers_loads_it_like_vllm_will(model: TinyModel,
                                              engine_python: Path) -> None:
    # vLLM loads the tokenizer through transformers in the engine venv.
    code = textwrap.dedent(
        """
        import json, sys
        from transformers import AutoTokenizer
        tok = AutoTokenizer.from_pretrained(sys.argv[1])
        ids = tok("Hello there, 42 tiny models.")["input_ids"]
        chat = tok.apply_chat_template(
            [{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True)
        every = all(isinstance(tok.decode([i]), str) for i in range(len(tok)))
        print(json.dumps({"len": len(tok), "bos": tok.bos_token_id, "eos": tok.eos_token_id,
                          "first": ids[0], "text": tok.decode(ids, skip_special_tokens=True),
                          "chat": chat, "every": every}))
        """
    )
    out = subprocess.run(
        [str(engine_python), "-c", code, str(model.path)],
        capture_output=True, text=True, check=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"},
    ).stdout
    got = json.loads(out.strip().splitlines()[-1])
    assert got["len"] == model.vocab_size
    assert {got["bos"], got["eos"]} == set(model.special_ids)
    assert got["first"] == got["bos"]  # BOS prepended, as Llama does
    assert got["text"] == "Hello there, 42 tiny models."
    assert got["chat"].startswith("<s><|user|>\nhi</s>") and got["chat"].endswith("<|assistant|>\n")
    assert got["every"]


@needs_engine
def test_provision_command_with_an_engine_python(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], engine_python: Path
) -> None:
    assert cli_main(["provision", "--vllm-build", str(engine_python),
                     "--engine-cache", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert f"python: {engine_python}" in out
    assert f"model: {tmp_path / 'models' / f'tiny-llama-{generator_hash()}'}" in out


def test_provision_command_reports_a_bad_build(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli_main(["provision", "--vllm-build", "vllm cpu", "--engine-cache",
                     str(tmp_path)]) == 1
    assert "--vllm-build" in capsys.readouterr().err
