"""Engine builds on GPU hosts: ``docker:IMAGE`` (e.g. per-commit ``rocm/vllm-ci:<sha>``)
or an installed venv / launcher, resolved to a ready Engine and its provenance."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from pytest_mi300x.config import DEFAULT_VLLM_BUILD
from pytest_mi300x.engines.base import BuiltEngine, Engine, EngineKind
from pytest_mi300x.engines.buildspec import _looks_like_path
from pytest_mi300x.engines.docker import (
    CONTAINER_CACHE,
    DOCKER_PREFIX,
    Dockerized,
    Run,
    _docker,
    cache_folder,
    image_runner,
    resolve_image,
)
from pytest_mi300x.engines.provision import ProvisionError
from pytest_mi300x.engines.registry import UnknownEngine, kind
from pytest_mi300x.hosts.profile import HostConfigError, HostProfile

ResolvedBuild = BuiltEngine


NOT_RESOLVED = "version not resolved: the plan runs no docker, pip or engine"
"""The version of a build in a plan."""


def _kind(name: str) -> EngineKind:
    try:
        return kind(name)
    except UnknownEngine as exc:
        raise HostConfigError(str(exc)) from None


def _failure(engine_kind: EngineKind, raw: str | None) -> Callable[[str], HostConfigError]:
    def fail(why: str) -> HostConfigError:
        return HostConfigError(f"{engine_kind.build_option} {raw!r}: {why}; give "
                               f"{engine_kind.build_example} or the path of an installed "
                               "venv / launcher")
    return fail


def _image(engine_kind: EngineKind, raw: str | None, host: HostProfile) -> str | None:
    """The image of a ``docker:IMAGE`` build, None for an installed one; raises what
    cannot run on the host."""
    fail = _failure(engine_kind, raw)
    if not raw:
        raise fail("no build given for this GPU host")
    if raw == DEFAULT_VLLM_BUILD:
        # Never a silent fall back to the cpu host's engine on a GPU host.
        raise fail(f"that is the cpu host's default (no {engine_kind.build_option} was "
                   f"given), not a build host {host.name!r} can run")
    if raw.startswith(DOCKER_PREFIX):
        image = raw.removeprefix(DOCKER_PREFIX).strip()
        if not image or " " in image:
            raise fail("the image name is empty or has spaces")
        return image
    if host.launcher == "docker":
        raise fail(f"host {host.name!r} launches in docker, which needs an image")
    return None


def plan_build(name: str, raw: str | None, host: HostProfile,
               cache_dir: Path | None) -> BuiltEngine:
    """What ``resolve_gpu_build`` (GPU hosts) or provisioning (the cpu host) would give,
    from the build spec alone: no docker, pip or engine runs; the version is unknown."""
    engine_kind = _kind(name)
    provenance: dict[str, object] = {}
    if host.has_gpus and not (raw and (raw.startswith(DOCKER_PREFIX) or _looks_like_path(raw))):
        # No build given, or the cpu host's pip requirement (the option's default): the plan
        # shows the GPU path with the option's example, and says so.
        provenance["note"] = ((f"{engine_kind.build_option} {raw!r} is a cpu-host build"
                               if raw else f"no {engine_kind.build_option} given")
                              + f": planned with {engine_kind.build_example}")
        raw = engine_kind.build_example
    image = _image(engine_kind, raw, host) if host.has_gpus else None
    if image is not None:
        caches = CONTAINER_CACHE if host.docker.cache_dir else None
        engine: Engine = Dockerized(engine_kind.in_image(str(raw), cache_root=caches), image,
                                    host.accelerator, host.docker)
        return BuiltEngine(engine, NOT_RESOLVED, {"build": raw, "image": image, **provenance})
    return BuiltEngine(engine_kind.planned(raw or "", cache_dir), NOT_RESOLVED,
                       {"build": raw, **provenance})


def resolve_gpu_build(name: str, raw: str | None, host: HostProfile, *,
                      run: Run = _docker) -> BuiltEngine:
    """The engine ``name`` from its build spec, checked against the host's launcher."""
    engine_kind = _kind(name)
    fail = _failure(engine_kind, raw)
    image = _image(engine_kind, raw, host)
    raw = raw or ""  # _image refused an empty one
    if image is not None:
        resolved = resolve_image(image, engine_kind.version_argv, run=run)
        # Containers run what was pulled, by digest: a tag moving meanwhile changes nothing.
        target = resolved.reference or image
        folder = cache_folder(host.docker, target)
        if folder:
            Path(folder).mkdir(parents=True, exist_ok=True)
        inner = engine_kind.in_image(f"{DOCKER_PREFIX}{target}",
                                     image_runner(target, host.accelerator, run),
                                     CONTAINER_CACHE if folder else None)
        return BuiltEngine(Dockerized(inner, target, host.accelerator, host.docker),
                           resolved.version, resolved.describe())
    path = Path(raw).expanduser()
    if not path.exists():
        raise fail("it is neither docker:IMAGE nor an existing path (a pip requirement is "
                   "installed for the cpu host only)")
    try:
        return engine_kind.from_path(raw, path)
    except (ProvisionError, ValueError) as exc:
        raise fail(str(exc)) from None
