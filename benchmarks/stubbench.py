"""Shared parts of the benchmarks that measure the client against the stub (TEST DOUBLE).

The stub runs in its own process with known delays; `vllm bench serve` runs from
the engine venv (found as tests/conftest.py's engine_python fixture finds it)
against the same stub, with the tiny model's tokenizer.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pytest_mi300x.config import DEFAULT_VLLM_BUILD
from pytest_mi300x.engines.provision import EngineEnvironment
from pytest_mi300x.engines.tiny_model import ensure_tiny_model
from pytest_mi300x.workload.datasets import PromptRequest

ROOT = Path(__file__).resolve().parent.parent
SERVED = "stub-model"
STUB_PID = [0]

# Runs under the engine's python: vllm bench serve's own entry points.
VLLM_BENCH = """
import argparse, sys
from vllm.benchmarks.serve import add_cli_args, main
parser = argparse.ArgumentParser()
add_cli_args(parser)
main(parser.parse_args(sys.argv[1:]))
"""


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@contextlib.contextmanager
def stub_process(ttft: float, itl: float) -> Iterator[str]:
    """The stub server in a child process; yields its base URL (its pid in STUB_PID)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.doubles.stub_server", "--ttft", str(ttft),
         "--itl", str(itl)], cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        port = int(proc.stdout.readline())
        STUB_PID[0] = proc.pid
        yield f"http://127.0.0.1:{port}"
    finally:
        assert proc.stdin is not None
        proc.stdin.close()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def engine_python_and_tokenizer() -> tuple[Path, Path]:
    """The engine venv's python ($PYTEST_MI300X_ENGINE_PYTHON or the provisioned default
    build) and the tiny model folder whose tokenizer vllm bench serve loads."""
    with EngineEnvironment(DEFAULT_VLLM_BUILD) as install:
        model = ensure_tiny_model(install)
        python = Path(os.environ.get("PYTEST_MI300X_ENGINE_PYTHON") or install.python)
        return python, model.path


def stub_requests(n: int, input_words: int, output_len: int) -> list[PromptRequest]:
    """Prompts for the stub: k words are k + 1 stub tokens (BOS)."""
    return [PromptRequest(" ".join(f"w{2 + (i + j) % 900}" for j in range(input_words)),
                          input_words + 1, output_len) for i in range(n)]


def vllm_bench(python: Path, tokenizer: Path, base_url: str, *, num_prompts: int,
               input_len: int, output_len: int, rate: float = float("inf"),
               max_concurrency: int | None = None, seed: int = 0) -> dict[str, Any]:
    """One `vllm bench serve` run; its result JSON, with its detailed per-request lists."""
    with tempfile.TemporaryDirectory(prefix="stubbench-") as tmp:
        cmd = [str(python), "-c", VLLM_BENCH, "--backend", "vllm", "--base-url", base_url,
               "--endpoint", "/v1/completions", "--model", SERVED, "--tokenizer", str(tokenizer),
               "--dataset-name", "random", "--random-input-len", str(input_len),
               "--random-output-len", str(output_len), "--num-prompts", str(num_prompts),
               "--request-rate", str(rate), "--seed", str(seed), "--ignore-eos",
               "--temperature", "0", "--disable-tqdm", "--save-result", "--save-detailed",
               "--result-dir", tmp, "--result-filename", "r.json"]
        if max_concurrency is not None:
            cmd += ["--max-concurrency", str(max_concurrency)]
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "OPENAI_API_KEY": "stub"}
        subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
        return json.loads((Path(tmp) / "r.json").read_text())
