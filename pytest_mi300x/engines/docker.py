"""The docker launcher: any engine's command line, run inside a container on a GPU host.

ROCm containers need the kernel driver devices (/dev/kfd, /dev/dri), the video
group, host IPC and an unconfined seccomp profile (ROCm's documented docker
flags); the server binds 0.0.0.0 inside and is published on 127.0.0.1 only.
Env reaches the container as ``-e NAME`` (value taken from the docker client's
env), so secrets such as the API key never appear on a command line.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from pytest_mi300x.engines.base import Engine, LaunchSpec
from pytest_mi300x.engines.flags import FlagSet
from pytest_mi300x.gpus.discovery import vendor
from pytest_mi300x.hosts.profile import DockerSettings
from pytest_mi300x.results.model import FailureKind

if TYPE_CHECKING:
    from pytest_mi300x.workload.datasets import Tokenizer

ROCM_DEVICE_ARGS = ("--device", "/dev/kfd", "--device", "/dev/dri", "--group-add", "video",
                    "--ipc=host", "--security-opt", "seccomp=unconfined",
                    "--cap-add", "SYS_PTRACE")
DOCKER_PREFIX = "docker:"


class DockerError(Exception):
    """A docker image that cannot be used; one line."""

    failure_kind = FailureKind.INFRA


def container_name(spec: LaunchSpec) -> str:
    return f"pytest-mi300x-{spec.port}"


def docker_run_argv(image: str, inner: Sequence[str], *, spec: LaunchSpec, env_names: Sequence[str],
                    accelerator: str, settings: DockerSettings) -> list[str]:
    """``docker run`` for ``inner`` (whose argv[0] becomes the entrypoint)."""
    argv = ["docker", "run", "--rm", "--init", "--name", container_name(spec)]
    if vendor(accelerator) == "cuda":
        # Inside, the leased GPUs renumber from 0 (CUDA_VISIBLE_DEVICES is set to match).
        argv += ["--gpus", f"\"device={','.join(str(g) for g in spec.gpus)}\""]
    else:
        argv += list(ROCM_DEVICE_ARGS)
    argv += ["--shm-size", settings.shm_size]
    if settings.model_cache:
        argv += ["-v", f"{settings.model_cache}:{settings.model_cache}:ro"]
    argv += ["-p", f"127.0.0.1:{spec.port}:{spec.port}"]
    for name in sorted(env_names):
        argv += ["-e", name]
    return [*argv, *settings.extra_args, "--entrypoint", inner[0], image, *inner[1:]]


@dataclass(frozen=True)
class Dockerized:
    """An Engine whose server runs in ``image``: the inner engine's command, in a container."""

    inner: Engine
    image: str
    accelerator: str
    settings: DockerSettings = field(default_factory=DockerSettings)

    @property
    def name(self) -> str:
        return self.inner.name

    def command(self, spec: LaunchSpec) -> list[str]:
        inside = replace(spec, host="0.0.0.0")
        return docker_run_argv(self.image, self.inner.command(inside), spec=spec,
                               env_names=list(self.environment(spec)),
                               accelerator=self.accelerator,
                               settings=self.settings)

    def environment(self, spec: LaunchSpec) -> dict[str, str]:
        env = self.inner.environment(spec)
        if vendor(self.accelerator) == "cuda" and spec.gpus:
            # --gpus hands the container only the leased GPUs, numbered from 0.
            env["CUDA_VISIBLE_DEVICES"] = ",".join(str(i) for i in range(len(spec.gpus)))
        return env

    @property
    def exact_output_lengths(self) -> bool:
        return self.inner.exact_output_lengths

    @property
    def health_path(self) -> str:
        return self.inner.health_path

    def version(self, base_url: str, api_key: str) -> str:
        return self.inner.version(base_url, api_key)

    def skip_reason(self, flag_set: FlagSet, version: str) -> str | None:
        return self.inner.skip_reason(flag_set, version)

    @property
    def auth_probe(self) -> tuple[str, str]:
        return self.inner.auth_probe

    def refusal(self, log_tail: str) -> str | None:
        return self.inner.refusal(log_tail)

    def cleanup_argv(self, spec: LaunchSpec) -> list[str] | None:
        # Killing the `docker run` client leaves the container (and its GPUs) running.
        return ["docker", "rm", "-f", container_name(spec)]

    @property
    def metric_series(self) -> Mapping[str, str]:
        return self.inner.metric_series

    def served_model_name(self, logical: str, model_path: str) -> str:
        return self.inner.served_model_name(logical, model_path)

    def tokenizer(self, base_url: str, api_key: str, served_name: str, vocab_size: int,
                  special_ids: frozenset[int], model_path: str) -> Tokenizer:
        return self.inner.tokenizer(base_url, api_key, served_name, vocab_size, special_ids,
                                    model_path)


Run = Callable[[Sequence[str]], str]


def _docker(argv: Sequence[str]) -> str:
    proc = subprocess.run(list(argv), capture_output=True, text=True, timeout=3600, check=False)
    if proc.returncode != 0:
        lines = (proc.stderr or proc.stdout).strip().splitlines()
        last = lines[-1] if lines else "no output"
        raise DockerError(f"`{' '.join(argv[:3])} ...` failed: {last}")
    return proc.stdout


@dataclass(frozen=True)
class DockerImage:
    """A pulled image and what identifies it: repo digest and image id."""

    image: str
    image_id: str
    digests: tuple[str, ...]
    version: str

    def describe(self) -> dict[str, Any]:
        return {"build": f"{DOCKER_PREFIX}{self.image}", "image": self.image,
                "image_id": self.image_id, "digests": list(self.digests),
                "version": self.version}


def resolve_image(image: str, version_argv: Sequence[str], *, run: Run = _docker) -> DockerImage:
    """Pull ``image`` if absent, then record its id, digests and the engine's version."""
    try:
        raw = run(["docker", "image", "inspect", image])
    except DockerError:
        run(["docker", "pull", image])
        raw = run(["docker", "image", "inspect", image])
    [info] = json.loads(raw)
    version = run(["docker", "run", "--rm", "--entrypoint", version_argv[0], image,
                   *version_argv[1:]]).strip().splitlines()
    return DockerImage(image, str(info.get("Id", "")), tuple(info.get("RepoDigests") or ()),
                       version[-1] if version else "unknown")
