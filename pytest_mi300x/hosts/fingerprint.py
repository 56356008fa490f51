"""Facts about the machine that decide whether two figures are comparable: CPU, memory,
OS, the GPUs' identity (model, count, gfx, driver, ROCm, firmware, power cap, partitions),
NUMA balancing, and which way of measuring the harness used."""

from __future__ import annotations

import os
import platform
from functools import cache
from pathlib import Path
from typing import Any

NUMA_BALANCING = Path("/proc/sys/kernel/numa_balancing")

MEASUREMENT_VERSION = 1
"""How the harness obtains a figure: the client, the figures' formulas, workload generation
and scaling. Bumped when a change alters what a figure means (then results before and after
are not comparable: a difference would be the harness's, and a build comparison across it
would blame the engine). Not the package version: a release that changes no measurement
(docs, a new command, a fix elsewhere) keeps every baseline, instead of teaching users to
refresh baselines blindly, which would absorb real regressions. The package version is
recorded with every figure all the same (``harness_info``)."""

VECTOR_FLAGS = ("avx2", "avx512f", "avx512bw", "avx512vl", "avx512_bf16", "avx512_vnni",
                "avx512_fp16", "amx_bf16", "amx_int8", "amx_tile")
"""CPU flags that decide what the CPU engine can run and how fast: vLLM's CPU backend
refuses fp8 KV cache without AVX-512 or AMX and serves several times slower on AVX2 alone,
so machines that differ here must never share a baseline."""


def _cpu_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def cpu_isa(flags: set[str] | None = None) -> str:
    """The vector extensions of this CPU that the engine can use, e.g. 'avx2,avx512f,...'."""
    have = _cpu_flags() if flags is None else flags
    return ",".join(f for f in VECTOR_FLAGS if f in have) or "none"


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _mem_gib() -> float | None:
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemTotal:"):
                    return round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return None


def numa_balancing(path: Path = NUMA_BALANCING) -> str | None:
    """The kernel's NUMA balancing setting ("0" is what MI300X guides ask for), or None."""
    try:
        return path.read_text().strip()
    except OSError:
        return None


def accelerators() -> dict[str, Any] | None:
    """The GPUs' identity (gpus/identity.py) where a GPU tool is installed, else None; a
    tool that fails gives its error, so such a result compares with no other."""
    from pytest_mi300x.gpus.discovery import run_tool, tool_timeout
    from pytest_mi300x.gpus.identity import read_identity, tool_present
    from pytest_mi300x.gpus.smi import GpuToolError

    vendor = tool_present()
    if vendor is None:
        return None
    try:
        return read_identity("cuda" if vendor == "cuda" else "mi300x", run_tool,
                             tool_timeout()).fingerprint()
    except GpuToolError as exc:
        return {"error": str(exc)[:200]}


@cache
def host_fingerprint() -> dict[str, Any]:
    """The local machine: CPU model and count, memory, OS, Python, its GPUs, NUMA
    balancing, and the harness's measurement version (read once per process)."""
    return {
        "hostname": platform.node(),
        "cpu_model": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpu_isa": cpu_isa(),
        "mem_gib": _mem_gib(),
        "os": f"{platform.system()} {platform.release()}",
        "machine": platform.machine(),
        "python": platform.python_version(),
        "accelerators": accelerators(),
        "numa_balancing": numa_balancing(),
        "harness_measurement": MEASUREMENT_VERSION,
    }


def harness_info() -> dict[str, Any]:
    """This harness, recorded with every figure."""
    from pytest_mi300x import __version__

    return {"name": "pytest-mi300x", "version": __version__,
            "measurement": MEASUREMENT_VERSION}
