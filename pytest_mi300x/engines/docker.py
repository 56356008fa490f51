"""The docker launcher: any engine's command line, run inside a container on a GPU host.

ROCm containers need the kernel driver devices (/dev/kfd, /dev/dri), the video
group, host IPC and an unconfined seccomp profile (ROCm's documented docker
flags). They share the host's network (``--network=host``, as the seed, TGI's and ROCm's
guides run them: docker's userland proxy would otherwise relay every streamed token) and
the server still binds 127.0.0.1; a profile with ``network = "bridge"`` binds 0.0.0.0
inside and publishes on 127.0.0.1 only. Env reaches the container as ``-e NAME`` (value
taken from the docker client's env), so secrets such as the API key never appear on a
command line. The engine's compile and kernel caches (vLLM's, Triton's, AITER's, TGI's
TunableOp results) live on a host folder per image (``cache_dir``), so a ``--rm``
container does not tune and compile again at every start; the engine, not the docker
client, runs at the host's ``engine_nice`` (``nice -n N`` inside the container).

An image is pulled at every resolution (a tag moves: the nightly image of a name is new
every night) and identified by its digest (``repo@sha256:...``), which is what results
record as the build and what containers run; ``docker:repo@sha256:...`` is accepted as is.

Each container is named after its server start (``pytest-mi300x-<session tag>-<server
key>-<start>``) and labelled with the session process that owns it and the machine: it is
stopped by name, and a container whose session has ended is found by its labels
(``reap_orphans``) even when its server record is lost.
"""

from __future__ import annotations

import json
import re
import socket
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
CONTAINER_CACHE = "/pytest-mi300x-cache"
"""Where a container sees its image's cache folder of the host."""
OWNER_LABEL = "pytest-mi300x.owner"
"""``PID:STARTTIME`` of the session process that started the container."""
HOST_LABEL = "pytest-mi300x.host"
"""The machine that session ran on: pids mean something only there."""
_NOT_IN_NAME = re.compile(r"[^A-Za-z0-9_.-]+")


class DockerError(Exception):
    """A docker image that cannot be used; one line."""

    failure_kind = FailureKind.INFRA


def container_name(spec: LaunchSpec) -> str:
    """The container of this server start (docker allows ``[A-Za-z0-9][A-Za-z0-9_.-]*``)."""
    return "pytest-mi300x-" + _NOT_IN_NAME.sub("_", spec.server_id or str(spec.port))


def labels(spec: LaunchSpec) -> dict[str, str]:
    """What a reaper finds our containers by (``docker ps --filter label=...``)."""
    return {OWNER_LABEL: spec.owner or "unknown", HOST_LABEL: socket.gethostname()}


def image_key(image: str) -> str:
    """A folder name for an image: its digest where the reference has one."""
    digest = image.rpartition("@sha256:")[2] if "@sha256:" in image else ""
    return f"sha256-{digest[:16]}" if digest else _NOT_IN_NAME.sub("_", image)[-80:]


def cache_folder(settings: DockerSettings, image: str) -> str | None:
    """The host folder of this image's engine caches, None when the profile keeps none."""
    return f"{settings.cache_dir.rstrip('/')}/{image_key(image)}" if settings.cache_dir else None


def docker_run_argv(image: str, inner: Sequence[str], *, spec: LaunchSpec, env_names: Sequence[str],
                    accelerator: str, settings: DockerSettings) -> list[str]:
    """``docker run`` for ``inner`` (whose argv[0] becomes the entrypoint; run under
    ``nice -n N`` when the spec asks the engine to yield)."""
    argv = ["docker", "run", "--rm", "--init", "--name", container_name(spec)]
    if vendor(accelerator) == "cuda":
        # Inside, the leased GPUs renumber from 0 (CUDA_VISIBLE_DEVICES is set to match).
        argv += ["--gpus", f"\"device={','.join(str(g) for g in spec.gpus)}\""]
    else:
        argv += list(ROCM_DEVICE_ARGS)
    argv += ["--shm-size", settings.shm_size]
    if settings.model_cache:
        argv += ["-v", f"{settings.model_cache}:{settings.model_cache}:ro"]
    caches = cache_folder(settings, image)
    if caches:
        argv += ["-v", f"{caches}:{CONTAINER_CACHE}"]
    if settings.network == "host":
        argv += ["--network=host"]
    else:
        argv += ["-p", f"127.0.0.1:{spec.port}:{spec.port}"]
    for key, value in sorted(labels(spec).items()):
        argv += ["--label", f"{key}={value}"]
    for name in sorted(env_names):
        argv += ["-e", name]
    if spec.nice > 0:
        inner = ["nice", "-n", str(spec.nice), *inner]
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

    applies_nice: bool = True
    """The engine is reniced inside its container (LaunchSpec.nice), not the docker
    client, whose niceness the engine would never see."""

    def command(self, spec: LaunchSpec) -> list[str]:
        # Host networking: the server binds where the spec says (loopback); a bridge
        # network reaches it only through its published port.
        inside = spec if self.settings.network == "host" else replace(spec, host="0.0.0.0")
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
    def cache_salt_field(self) -> str | None:
        return self.inner.cache_salt_field

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
        # Killing the `docker run` client leaves the container (and its GPUs) running:
        # it is removed by name (the pool after each stop, the reapers after a crash).
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


def _quick(argv: Sequence[str]) -> str:
    """A docker call that must not hang a session or ``clean`` (a wedged daemon)."""
    return _docker(argv, timeout=60.0)


def _docker(argv: Sequence[str], timeout: float = 3600.0) -> str:
    try:
        proc = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout,
                              check=False)
    except FileNotFoundError:
        raise DockerError("docker not found on PATH") from None
    except subprocess.TimeoutExpired:
        raise DockerError(f"`{' '.join(argv[:3])} ...` did not answer within "
                          f"{timeout:.0f} s") from None
    if proc.returncode != 0:
        lines = (proc.stderr or proc.stdout).strip().splitlines()
        last = lines[-1] if lines else "no output"
        raise DockerError(f"`{' '.join(argv[:3])} ...` failed: {last}")
    return proc.stdout


@dataclass(frozen=True)
class DockerImage:
    """A pulled image and what identifies it: the digest reference, image id, repo digests,
    the engine's version inside, and the image's own env (what a server gets unless told
    otherwise: ROCm images set HIP_FORCE_DEV_KERNARG=1 themselves)."""

    image: str
    image_id: str
    digests: tuple[str, ...]
    version: str
    reference: str = ""
    """``repo@sha256:...``: what containers run and results record as the build."""
    env: tuple[tuple[str, str], ...] = ()

    def describe(self) -> dict[str, Any]:
        return {"build": f"{DOCKER_PREFIX}{self.reference or self.image}",
                "image": self.image, "reference": self.reference,
                "image_id": self.image_id, "digests": list(self.digests),
                "version": self.version, "image_env": dict(self.env)}


def _repo(image: str) -> str:
    """The repository of a reference: without its digest, and its tag (a ':' after the
    last '/'; one before it is a registry's port)."""
    name = image.split("@", 1)[0]
    head, _, tail = name.rpartition("/")
    return f"{head}/{tail.split(':', 1)[0]}" if head else tail.split(":", 1)[0]


def digest_reference(image: str, digests: Sequence[str]) -> str:
    """``repo@sha256:...`` of ``image`` among an inspect's RepoDigests ("" if none: an
    image built here and never pushed has no digest)."""
    if "@sha256:" in image:
        return image
    repo = _repo(image)
    ours = [d for d in digests if _repo(d) == repo or _repo(d).endswith(f"/{repo}")]
    return (ours or list(digests) or [""])[0]


def resolve_image(image: str, version_argv: Sequence[str], *, run: Run = _docker) -> DockerImage:
    """Pull ``image`` (always: a tag moves; by digest, a pull of what is present is quick),
    then record its digest, id, env and the engine's version inside."""
    run(["docker", "pull", image])
    [info] = json.loads(run(["docker", "image", "inspect", image]))
    digests = tuple(info.get("RepoDigests") or ())
    reference = digest_reference(image, digests)
    target = reference or image
    version = run(["docker", "run", "--rm", "--entrypoint", version_argv[0], target,
                   *version_argv[1:]]).strip().splitlines()
    env = tuple(tuple(item.split("=", 1)) for item in (info.get("Config") or {}).get("Env") or ()
                if "=" in item)
    return DockerImage(image, str(info.get("Id", "")), digests,
                       version[-1] if version else "unknown", reference,
                       tuple((k, v) for k, v in env))


def image_runner(image: str, accelerator: str,
                 run: Run = _docker) -> Callable[[Sequence[str]], str]:
    """Runs a command in ``image`` (``argv[0]`` as the entrypoint): how a build's own
    ``--help`` and env table are asked. ROCm's devices are passed so that the engine detects
    the platform it will serve on; no GPU is used."""
    devices = [] if vendor(accelerator) == "cuda" else list(ROCM_DEVICE_ARGS)

    def in_image(argv: Sequence[str]) -> str:
        from pytest_mi300x.engines.probe import ProbeError

        try:
            return run(["docker", "run", "--rm", *devices, "--entrypoint", argv[0], image,
                        *argv[1:]])
        except DockerError as exc:
            raise ProbeError(str(exc)) from None
    return in_image


@dataclass(frozen=True)
class Container:
    """One of our containers as ``docker ps`` lists it."""

    name: str
    owner: str
    host: str
    state: str

    @property
    def owner_pid(self) -> tuple[int, int | None] | None:
        """(pid, start time) of the owning session, None when the label is unreadable."""
        pid, _, started = self.owner.partition(":")
        if not pid.isdigit():
            return None
        return int(pid), int(started) if started.isdigit() else None


def our_containers(*, run: Run = _quick) -> list[Container]:
    """Every container any pytest-mi300x session started (running or not)."""
    out = run(["docker", "ps", "-a", "--filter", f"label={OWNER_LABEL}",
               "--format", "{{json .}}"])
    found = []
    for line in out.splitlines():
        try:
            doc = json.loads(line)
        except ValueError:
            continue
        tags = dict(item.partition("=")[::2] for item in str(doc.get("Labels", "")).split(",")
                    if "=" in item)
        found.append(Container(str(doc.get("Names", "")), tags.get(OWNER_LABEL, ""),
                               tags.get(HOST_LABEL, ""), str(doc.get("State", ""))))
    return found


def reap_orphans(alive: Callable[[int, int | None], bool], *, run: Run = _quick) -> list[str]:
    """Remove our containers whose session has ended on this machine (found by label, so
    also those whose server record is gone); returns what was done, a line each.

    A container of another machine (a shared docker daemon) or whose owner still runs is
    left alone. Raises DockerError when docker cannot list containers.
    """
    here = socket.gethostname()
    done = []
    for container in our_containers(run=run):
        owner = container.owner_pid
        if container.host != here or owner is None or alive(*owner):
            continue
        try:
            run(["docker", "rm", "-f", container.name])
        except DockerError as exc:
            done.append(f"could not remove container {container.name}: {exc}")
            continue
        done.append(f"removed container {container.name} ({container.state}), left by "
                    f"session {owner[0]}")
    return done
