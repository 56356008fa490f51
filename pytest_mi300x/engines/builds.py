"""Engine builds on GPU hosts: ``docker:IMAGE`` (e.g. per-commit ``rocm/vllm-ci:<sha>``)
or an installed venv / launcher, resolved to a ready Engine and its provenance."""

from __future__ import annotations

from pathlib import Path

from pytest_mi300x.engines.base import BuiltEngine
from pytest_mi300x.engines.docker import DOCKER_PREFIX, Dockerized, Run, _docker, resolve_image
from pytest_mi300x.engines.provision import ProvisionError
from pytest_mi300x.engines.registry import UnknownEngine, kind
from pytest_mi300x.hosts.profile import HostConfigError, HostProfile

ResolvedBuild = BuiltEngine


def resolve_gpu_build(name: str, raw: str | None, host: HostProfile, *,
                      run: Run = _docker) -> BuiltEngine:
    """The engine ``name`` from its build spec, checked against the host's launcher."""
    try:
        engine_kind = kind(name)
    except UnknownEngine as exc:
        raise HostConfigError(str(exc)) from None

    def fail(why: str) -> HostConfigError:
        return HostConfigError(f"{engine_kind.build_option} {raw!r}: {why}; give "
                               f"{engine_kind.build_example} or the path of an installed "
                               "venv / launcher")

    if not raw:
        raise fail("no build given for this GPU host")
    if raw.startswith(DOCKER_PREFIX):
        image = raw.removeprefix(DOCKER_PREFIX).strip()
        if not image or " " in image:
            raise fail("the image name is empty or has spaces")
        resolved = resolve_image(image, engine_kind.version_argv, run=run)
        return BuiltEngine(Dockerized(engine_kind.in_image(raw), image, host.accelerator,
                                      host.docker), resolved.version, resolved.describe())
    if host.launcher == "docker":
        raise fail(f"host {host.name!r} launches in docker, which needs an image")
    path = Path(raw).expanduser()
    if not path.exists():
        raise fail("it is neither docker:IMAGE nor an existing path (a pip requirement is "
                   "installed for the cpu host only)")
    try:
        return engine_kind.from_path(raw, path)
    except (ProvisionError, ValueError) as exc:
        raise fail(str(exc)) from None
