"""Items 4 and 14 of issue 27 (+ 26.7): docker builds and containers.

Item 4: an image is pulled at every resolution and identified by its digest: the nightly's
tag points at a new image every night, and a build known by its tag compared last night's
image with itself. ``docker:repo@sha256:...`` (how the night names tonight's build) is taken
as is. Item 14: containers share the host's network (no userland proxy relaying every
token; the server still listens on 127.0.0.1), keep the engines' compile and tuning caches
on a host folder per image, and the engine, not the docker client, runs at engine_nice,
recorded as such.

The `docker` command is the docker double (tests/doubles/docker.py): it pulls what its
"registry" ($DOCKER_DOUBLE_REMOTE) holds and runs containers as local processes.
"""

from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from pytest_mi300x.engines.base import LaunchSpec
from pytest_mi300x.engines.builds import plan_build, resolve_gpu_build
from pytest_mi300x.engines.docker import CONTAINER_CACHE, Dockerized, digest_reference
from pytest_mi300x.engines.flags import DEFAULT_FLAGS
from pytest_mi300x.engines.tgi import TGIEngine
from pytest_mi300x.engines.vllm import VLLMEngine
from pytest_mi300x.hosts.profile import DockerSettings
from pytest_mi300x.hosts.toml import select_host
from pytest_mi300x.results.stack import comparability, split_builds, stack_diff
from pytest_mi300x.servers.pool import ServerPool
from tests.doubles import install_command
from tests.test_pool import DoubleEngine, spec_for

ROOT = Path(__file__).parent.parent
MI300X = select_host("mi300x-01", ROOT / "hosts.toml")


@pytest.fixture
def docker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    install_command(tmp_path / "bin", "docker", "docker.py")
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("DOCKER_DOUBLE_STATE", str(tmp_path / "state"))
    # The image's executables answer a version (no engine is started in these tests).
    version = tmp_path / "image-version"
    version.write_text("#!/bin/sh\necho 0.11.1rc2.dev40+rocm700\n")
    version.chmod(0o755)
    monkeypatch.setenv("DOCKER_DOUBLE_ENTRYPOINTS", json.dumps(
        {"python3": str(version), "text-generation-launcher": str(version)}))
    return tmp_path / "state"


def docker_calls(state: Path) -> list[list[str]]:
    return [e["argv"] for e in map(json.loads, (state / "journal.jsonl").read_text()
                                                .splitlines()) if e["event"] == "call"]


def host_with_cache(tmp_path: Path) -> Any:
    return replace(MI300X, docker=replace(MI300X.docker, cache_dir=str(tmp_path / "caches")))


def test_a_moved_tag_is_pulled_again_and_known_by_its_new_digest(
        docker: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monday, tuesday = "a" * 64, "b" * 64
    monkeypatch.setenv("DOCKER_DOUBLE_REMOTE", json.dumps({"rocm/vllm-dev:nightly": monday}))
    first = resolve_gpu_build("vllm", "docker:rocm/vllm-dev:nightly", MI300X)
    monkeypatch.setenv("DOCKER_DOUBLE_REMOTE", json.dumps({"rocm/vllm-dev:nightly": tuesday}))
    second = resolve_gpu_build("vllm", "docker:rocm/vllm-dev:nightly", MI300X)
    # Before: pulled only when absent, so Tuesday ran Monday's image, both known by the tag.
    assert first.provenance["build"] == f"docker:rocm/vllm-dev@sha256:{monday}"
    assert second.provenance["build"] == f"docker:rocm/vllm-dev@sha256:{tuesday}"
    assert [c for c in docker_calls(docker) if c[0] == "pull"] == [
        ["pull", "rocm/vllm-dev:nightly"]] * 2
    # The containers run the digest, so a tag moving during the night changes nothing.
    assert isinstance(second.engine, Dockerized)
    assert second.engine.image == f"rocm/vllm-dev@sha256:{tuesday}"
    # Two nights of one tag are two builds to the gate, not one.
    fp = {"cpu_model": "x"}
    builds, _ = split_builds(stack_diff(comparability(fp, first.provenance),
                                        comparability(fp, second.provenance)))
    assert builds == [f"engine_build: docker:rocm/vllm-dev@sha256:{monday} -> "
                      f"docker:rocm/vllm-dev@sha256:{tuesday}"]


def test_the_nights_digest_reference_is_taken_as_is(docker: Path) -> None:
    ref = "rocm/vllm-ci@sha256:" + "c" * 64
    built = resolve_gpu_build("vllm", f"docker:{ref}", MI300X)
    assert built.provenance["build"] == f"docker:{ref}" and built.provenance["reference"] == ref
    assert plan_build("vllm", f"docker:{ref}", MI300X, None).provenance["image"] == ref
    assert digest_reference("registry:5000/team/vllm:tag",
                            ["other/x@sha256:1", "registry:5000/team/vllm@sha256:2"]) == \
        "registry:5000/team/vllm@sha256:2"


def spec(port: int = 8100, nice: int = 0) -> LaunchSpec:
    return LaunchSpec(model="/data/models/m", served_model_name="m", host="127.0.0.1",
                      port=port, api_key="k", flag_set=DEFAULT_FLAGS, gpus_needed=8,
                      gpus=tuple(range(8)), nice=nice)


def test_containers_share_the_hosts_network_and_bind_loopback(tmp_path: Path) -> None:
    host = Dockerized(VLLMEngine(Path("python3"), "b"), "img", "mi300x", MI300X.docker)
    argv = host.command(spec())
    assert "--network=host" in argv and "-p" not in argv
    assert argv[argv.index("--host") + 1] == "127.0.0.1"
    bridge = Dockerized(VLLMEngine(Path("python3"), "b"), "img", "mi300x",
                        DockerSettings(network="bridge"))
    argv = bridge.command(spec())
    assert argv[argv.index("-p") + 1] == "127.0.0.1:8100:8100"
    assert argv[argv.index("--host") + 1] == "0.0.0.0"


def test_engine_caches_live_on_a_host_folder_per_image(docker: Path, tmp_path: Path) -> None:
    host = host_with_cache(tmp_path)
    vllm = resolve_gpu_build("vllm", "docker:rocm/vllm:cache", host)
    argv = vllm.engine.command(spec())
    image = str(vllm.provenance["reference"])
    folder = tmp_path / "caches" / f"sha256-{image.rpartition(':')[2][:16]}"
    assert f"{folder}:{CONTAINER_CACHE}" in argv and folder.is_dir()
    env = vllm.engine.environment(spec())
    # Before: lost with --rm at every start (compiles and tunes again each time).
    assert {env[k] for k in ("TORCHINDUCTOR_CACHE_DIR", "VLLM_CACHE_ROOT", "TRITON_CACHE_DIR",
                             "AITER_JIT_DIR")} == {f"{CONTAINER_CACHE}/inductor",
                                                   f"{CONTAINER_CACHE}/vllm",
                                                   f"{CONTAINER_CACHE}/triton",
                                                   f"{CONTAINER_CACHE}/aiter"}
    tgi = resolve_gpu_build("tgi", "docker:ghcr.io/huggingface/text-generation-inference:3-rocm",
                            host)
    # TGI writes its TunableOp results under its hub cache (/data by default).
    assert tgi.engine.environment(spec())["HUGGINGFACE_HUB_CACHE"] == \
        f"{CONTAINER_CACHE}/tgi-hub"
    assert isinstance(TGIEngine("x"), TGIEngine) and "HUGGINGFACE_HUB_CACHE" not in \
        TGIEngine("x").environment(spec())  # a local TGI keeps its own
    other = resolve_gpu_build("vllm", "docker:rocm/vllm:other", host).engine.command(spec())
    assert f"{folder}:{CONTAINER_CACHE}" not in other  # another image, another folder


def test_the_engine_in_the_container_is_reniced_not_the_docker_client(
        docker: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    argv = Dockerized(VLLMEngine(Path("python3"), "b"), "img", "mi300x", MI300X.docker) \
        .command(spec(nice=10))
    assert argv[argv.index("--entrypoint") + 1:argv.index("--entrypoint") + 6] == \
        ["nice", "img", "-n", "10", "python3"]
    monkeypatch.setenv("DOCKER_DOUBLE_ENTRYPOINTS", "{}")
    engine = Dockerized(DoubleEngine(), "double/lifecycle:1", "mi300x", DockerSettings())
    with ServerPool(tmp_path / "logs", start_timeout=60, engine_nice=10) as pool:
        server = pool.acquire("a", engine, spec_for())
        client = server.process.pid
        assert client is not None and os.getpriority(os.PRIO_PROCESS, client) == \
            os.getpriority(os.PRIO_PROCESS, 0)  # before: the client was niced to 10
        # What ran in the "container" is the engine, under nice 10.
        run = [e for e in map(json.loads, (docker / "journal.jsonl").read_text().splitlines())
               if e["event"] == "run"][-1]
        assert run["argv"][:3] == ["nice", "-n", "10"]
        assert os.getpriority(os.PRIO_PROCESS, run["pid"]) == 10
        # Recorded as what it is.
        assert server.describe()["scheduling"] == {"nice_in_container": 10}
