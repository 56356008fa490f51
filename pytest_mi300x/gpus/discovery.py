"""GPU discovery: what GPUs a host has, what they are doing, and who holds them.

Reads ``amd-smi`` (both JSON shapes: the older top-level list and the newer
``{"gpu_data": [...]}``), falls back to ``rocm-smi --json`` on older ROCm
stacks, and reads ``nvidia-smi`` CSV on CUDA hosts. Every call runs under a
timeout, because a wedged driver can hang these tools indefinitely.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from pytest_mi300x.gpus.numbering import Numbering, numbering, read_kfd_topology
from pytest_mi300x.gpus.smi import (
    AMD_METRIC,
    AMD_PROCESS,
    BUSY_VRAM_MIB,
    DEFAULT_TIMEOUT_S,
    NVIDIA_APPS,
    NVIDIA_METRIC,
    ROCM_METRIC,
    ROCM_PIDS,
    TIMEOUT_ENV,
    GpuProcess,
    GpuSample,
    GpuToolError,
    _json_payload,
    _nvidia_uuids,
    amd_smi_records,
    mib,
    number,
    parse_amd_smi_metric,
    parse_amd_smi_process,
    parse_nvidia_apps,
    parse_nvidia_query,
    parse_rocm_smi,
    parse_rocm_smi_pids,
)
from pytest_mi300x.gpus.smi_text import records

__all__ = ["GpuProcess", "GpuSample", "GpuToolError", "GpuUnreachable", "Inventory",
           "amd_smi_records", "discover", "mib", "number", "parse_amd_smi_metric",
           "parse_amd_smi_process", "parse_nvidia_apps", "parse_nvidia_query",
           "parse_rocm_smi", "parse_rocm_smi_pids", "run_tool", "sample", "vendor"]

class GpuUnreachable(Exception):
    """No GPU tool answered on this machine; the message is one line."""


@dataclass(frozen=True)
class Inventory:
    """The GPUs one tool reported, and the processes on them."""

    tool: str
    gpus: tuple[GpuSample, ...]
    processes: tuple[GpuProcess, ...] = ()
    numbering: Numbering | None = None
    """What ROCm must be told for each of the tool's indices (gpus/numbering.py); None on
    CUDA hosts, whose tool numbers GPUs in the PCI order CUDA is told to use."""

    @property
    def indices(self) -> tuple[int, ...]:
        return tuple(sorted(g.index for g in self.gpus))

    def holder(self, index: int, busy_vram_mib: float = BUSY_VRAM_MIB) -> str | None:
        """Who holds GPU ``index`` (a sentence fragment), or None if it looks free."""
        on_it = [p for p in self.processes if p.gpu == index]
        if on_it:
            return ", ".join(str(p) for p in on_it)
        gpu = next((g for g in self.gpus if g.index == index), None)
        used = gpu.vram_used_mib if gpu is not None else None
        if used is not None and used > busy_vram_mib:
            unplaced = [p for p in self.processes if p.gpu is None]
            who = (f"; processes on this host's GPUs: {', '.join(map(str, unplaced))}"
                   if unplaced else f" by a process {self.tool} cannot name "
                                    "(another container or user)")
            return f"{used / 1024:.1f} GiB VRAM in use{who}"
        return None


Runner = Callable[[Sequence[str], float], str]


def run_tool(argv: Sequence[str], timeout: float) -> str:
    """stdout of ``argv``; GpuToolError (one line) when missing, failing or hung."""
    try:
        proc = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL, check=False)
    except FileNotFoundError:
        raise GpuToolError(f"{argv[0]} not found on PATH") from None
    except subprocess.TimeoutExpired:
        raise GpuToolError(f"`{' '.join(argv)}` did not answer within {timeout:.0f} s "
                           "(driver hung?)") from None
    if proc.returncode != 0:
        err = (proc.stderr or proc.stdout).strip().splitlines()
        raise GpuToolError(f"`{' '.join(argv)}` exited {proc.returncode}: "
                           f"{err[-1] if err else 'no output'}")
    return proc.stdout


def tool_timeout() -> float:
    raw = os.environ.get(TIMEOUT_ENV, "")
    try:
        return float(raw) if raw else DEFAULT_TIMEOUT_S
    except ValueError:
        return DEFAULT_TIMEOUT_S


AMD_LIST = ("amd-smi", "list", "-e", "--json")
AMD_LIST_OLD = ("amd-smi", "list", "--json")
ROCM_BUS = ("rocm-smi", "--showbus", "--json")

def _listed(run: Runner, timeout: float, *commands: Sequence[str]) -> list[dict[str, object]]:
    """The first of ``commands`` that lists GPUs with their PCI address (and, on amd-smi
    6.4+, HIP id and UUID); [] when none answers (numbering then falls back)."""
    for argv in commands:
        try:
            text = run(argv, timeout)
        except GpuToolError:
            continue
        if argv[0] == "rocm-smi":
            data = _json_payload(text, "rocm-smi")
            return [{"gpu": int(k[4:]), "bdf": v.get("PCI Bus")} for k, v in data.items()
                    if k.startswith("card") and k[4:].isdigit() and isinstance(v, dict)]
        return list(records(text))
    return []


def _amd_smi(run: Runner, timeout: float) -> Inventory:
    gpus = parse_amd_smi_metric(run(AMD_METRIC, timeout))
    if not gpus:
        raise GpuToolError("amd-smi listed no GPU")
    processes = tuple(parse_amd_smi_process(run(AMD_PROCESS, timeout)))
    listed = _listed(run, timeout, AMD_LIST, AMD_LIST_OLD) or [{"gpu": g.index} for g in gpus]
    return Inventory("amd-smi", tuple(gpus), processes,
                     numbering(listed, read_kfd_topology()))


def _rocm_smi(run: Runner, timeout: float) -> Inventory:
    gpus = parse_rocm_smi(run(ROCM_METRIC, timeout))
    if not gpus:
        raise GpuToolError("rocm-smi listed no GPU")
    try:
        pids = parse_rocm_smi_pids(run(ROCM_PIDS, timeout))
    except GpuToolError:
        pids = []
    listed = _listed(run, timeout, ROCM_BUS) or [{"gpu": g.index} for g in gpus]
    return Inventory("rocm-smi", tuple(gpus), tuple(pids), numbering(listed, read_kfd_topology()))


def _nvidia_smi(run: Runner, timeout: float) -> Inventory:
    query = run(NVIDIA_METRIC, timeout)
    gpus = parse_nvidia_query(query)
    if not gpus:
        raise GpuToolError("nvidia-smi listed no GPU")
    apps = parse_nvidia_apps(run(NVIDIA_APPS, timeout), _nvidia_uuids(
        run(("nvidia-smi", "--query-gpu=index,uuid", "--format=csv"), timeout)))
    return Inventory("nvidia-smi", tuple(gpus), tuple(apps))


PROBES: dict[str, tuple[Callable[[Runner, float], Inventory], ...]] = {
    "amd": (_amd_smi, _rocm_smi),
    "cuda": (_nvidia_smi,),
}


def vendor(accelerator: str) -> str:
    return "cuda" if accelerator == "cuda" else "amd"


def discover(accelerator: str, *, run: Runner = run_tool,
             timeout: float | None = None) -> Inventory:
    """The host's GPUs from the first tool that answers; GpuUnreachable names every failure."""
    limit = tool_timeout() if timeout is None else timeout
    failures = []
    for probe in PROBES[vendor(accelerator)]:
        try:
            return probe(run, limit)
        except GpuToolError as exc:
            failures.append(str(exc))
    raise GpuUnreachable("; ".join(failures))


def sample(accelerator: str, indices: Iterable[int], *, run: Runner = run_tool,
           timeout: float | None = None) -> list[GpuSample]:
    """Telemetry of the given GPUs now (metrics only, no process list)."""
    wanted = set(indices)
    limit = tool_timeout() if timeout is None else timeout
    if vendor(accelerator) == "cuda":
        readings = parse_nvidia_query(run(NVIDIA_METRIC, limit))
    else:
        try:
            readings = parse_amd_smi_metric(run(AMD_METRIC, limit))
        except GpuToolError:
            readings = parse_rocm_smi(run(ROCM_METRIC, limit))
    return [g for g in readings if g.index in wanted]
