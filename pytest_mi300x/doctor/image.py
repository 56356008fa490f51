"""The engine build's check: its vLLM version, and which of the seed's flags and env
variables it still reads, asked of the build itself (its image, or its venv's python):
the cases whose flag or variable it dropped will skip tonight, and the line says which."""

from __future__ import annotations

from pathlib import Path

from pytest_mi300x.doctor.base import Check, Tools, fail, ok, skip
from pytest_mi300x.engines.base import Engine
from pytest_mi300x.engines.builds import resolve_gpu_build
from pytest_mi300x.engines.docker import Dockerized
from pytest_mi300x.engines.probe import EnvTable, ProbeError, run_local
from pytest_mi300x.engines.registry import kind
from pytest_mi300x.engines.vllm import REMOVED_FLAGS, RESOLVED_DEFAULTS, V0_ONLY_ENV, VLLMEngine
from pytest_mi300x.hosts.profile import HostConfigError, HostProfile

WATCHED_FLAGS = (*REMOVED_FLAGS, *RESOLVED_DEFAULTS, "max-num-seqs", "tensor-parallel-size")
"""The seed guide's flags, as its cases give them."""
WATCHED_ENV = (*sorted(V0_ONLY_ENV), "VLLM_ROCM_USE_AITER")
"""The seed's attention switch and its V1 successor on ROCm (case 5)."""
IMAGE_ENV = ("HIP_FORCE_DEV_KERNARG", "NCCL_MIN_NCHANNELS", "TORCH_BLAS_PREFER_HIPBLASLT",
             "VLLM_ROCM_USE_AITER")
"""Case 5's variables: an image that sets one itself gives it to every arm."""


def _engine(host: HostProfile, build: str, tools: Tools) -> tuple[VLLMEngine, str, str]:
    """(the build's vLLM, its version, where it is); raises HostConfigError or ProbeError."""
    vllm = kind("vllm")
    if host.has_gpus:
        built = resolve_gpu_build("vllm", build, host, run=tools.docker_pull_run)
        engine: Engine = built.engine
        where = str(built.provenance.get("reference") or built.provenance.get("build"))
        notes = {k: v for k, v in dict(built.provenance.get("image_env") or {}).items()
                 if k in IMAGE_ENV}
        inner = engine.inner if isinstance(engine, Dockerized) else engine
        if not isinstance(inner, VLLMEngine):
            raise HostConfigError(f"{build}: not a vLLM build")
        setting = "; the image sets " + ", ".join(f"{k}={v}" for k, v in sorted(notes.items())) \
            if notes else ""
        return inner, built.version, where + setting
    planned = vllm.planned(build, tools.cache_dir)
    if not isinstance(planned, VLLMEngine) or not Path(planned.python).exists():
        raise ProbeError(f"{build} is not installed here (run `pytest-mi300x provision`)")
    version = run_local([str(planned.python), "-c", "import vllm; print(vllm.__version__)"])
    return planned, version.strip().splitlines()[-1], str(planned.python)


def check_image(host: HostProfile, build: str | None, tools: Tools) -> Check:
    if not build:
        return skip("image", "no --vllm-build given: the build's flags and env are not "
                             "checked")
    try:
        engine, version, where = _engine(host, build, tools)
    except (HostConfigError, ProbeError) as exc:
        return fail("image", f"cannot ask {build}: {exc}",
                    "give a build that runs here: docker:IMAGE on a docker host, a venv "
                    "path, or `pytest-mi300x provision` on the cpu host")
    flags, table = engine.flags(), engine.env_table()
    if isinstance(flags, ProbeError) or isinstance(table, ProbeError):
        problem = flags if isinstance(flags, ProbeError) else table
        return fail("image", f"vLLM {version} ({where}): its --help or env table did not "
                             f"answer ({problem})",
                    "run the build's server --help by hand to see why it fails")
    assert isinstance(table, EnvTable)
    gone = [f"--{f}" for f in WATCHED_FLAGS if f not in flags]
    unread = [v for v in WATCHED_ENV if v not in table.names
              or (v in V0_ONLY_ENV and table.runs_v1)]
    read = [v for v in WATCHED_ENV if v not in unread]
    parts = [f"vLLM {version} ({where})", f"{'V1' if table.runs_v1 else 'V0'} engine",
             f"reads {', '.join(read) or 'none of ' + ', '.join(WATCHED_ENV)}"]
    if unread:
        parts.append(f"ignores {', '.join(unread)}")
    if gone:
        parts.append(f"has no {', '.join(gone)} (their cases skip)")
    return ok("image", "; ".join(parts))

