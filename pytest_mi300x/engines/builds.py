"""Engine builds on GPU hosts: ``docker:IMAGE`` (e.g. per-commit ``rocm/vllm-ci:<sha>``)
or an installed venv / launcher, resolved to a ready Engine and its provenance."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pytest_mi300x.engines.base import Engine
from pytest_mi300x.engines.docker import DOCKER_PREFIX, Dockerized, Run, _docker, resolve_image
from pytest_mi300x.engines.provision import EngineEnvironment, ProvisionError
from pytest_mi300x.engines.tgi import TGIEngine
from pytest_mi300x.engines.vllm import VLLMEngine
from pytest_mi300x.hosts.profile import HostConfigError, HostProfile

VERSION_ARGV = {
    "vllm": ("python3", "-c", "import vllm; print(vllm.__version__)"),
    "tgi": ("text-generation-launcher", "--version"),
}
OPTIONS = {"vllm": "--vllm-build", "tgi": "--tgi-build"}
EXAMPLES = {"vllm": "docker:rocm/vllm-ci:<commit>",
            "tgi": "docker:ghcr.io/huggingface/text-generation-inference:<version>-rocm"}


@dataclass(frozen=True)
class ResolvedBuild:
    """An engine ready to launch on a GPU host, with the version and provenance to record."""

    engine: Engine
    version: str
    provenance: dict[str, Any]


def _fail(name: str, raw: str | None, why: str) -> HostConfigError:
    return HostConfigError(f"{OPTIONS[name]} {raw!r}: {why}; give {EXAMPLES[name]} "
                           "or the path of an installed venv / launcher")


def resolve_gpu_build(name: str, raw: str | None, host: HostProfile, *,
                      run: Run = _docker) -> ResolvedBuild:
    """The engine ``name`` from its build spec, checked against the host's launcher."""
    if name not in OPTIONS:
        raise HostConfigError(f"serving_engine {name!r} is not known; use 'vllm' or 'tgi'")
    if not raw:
        raise _fail(name, raw, "no build given for this GPU host")
    if raw.startswith(DOCKER_PREFIX):
        image = raw.removeprefix(DOCKER_PREFIX).strip()
        if not image or " " in image:
            raise _fail(name, raw, "the image name is empty or has spaces")
        resolved = resolve_image(image, VERSION_ARGV[name], run=run)
        inner: Engine = (VLLMEngine(Path("python3"), raw) if name == "vllm"
                         else TGIEngine(raw))
        return ResolvedBuild(Dockerized(inner, image, host.accelerator, host.docker),
                             resolved.version, resolved.describe())
    if host.launcher == "docker":
        raise _fail(name, raw, f"host {host.name!r} launches in docker, which needs an image")
    path = Path(raw).expanduser()
    if not path.exists():
        raise _fail(name, raw, "it is neither docker:IMAGE nor an existing path (a pip "
                               "requirement is installed for the cpu host only)")
    if name == "vllm":
        try:
            install = EngineEnvironment(raw).__enter__()
        except ProvisionError as exc:
            raise HostConfigError(str(exc)) from None
        return ResolvedBuild(VLLMEngine(install.python, raw), install.version, install.describe())
    launcher = path / "bin" / "text-generation-launcher" if path.is_dir() else path
    proc = subprocess.run([str(launcher), "--version"], capture_output=True, text=True,
                          timeout=120, check=False)
    if proc.returncode != 0:
        raise _fail(name, raw, f"`{launcher} --version` exited {proc.returncode}")
    version = proc.stdout.strip().split()[-1] if proc.stdout.strip() else "unknown"
    return ResolvedBuild(TGIEngine(raw, str(launcher)), version,
                         {"build": raw, "launcher": str(launcher), "version": version})
