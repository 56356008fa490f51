"""Facts about the machine that decide whether two figures are comparable."""

from __future__ import annotations

import os
import platform
from functools import cache
from typing import Any

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


@cache
def host_fingerprint() -> dict[str, Any]:
    """The local machine: CPU model and count, memory, OS, Python."""
    return {
        "hostname": platform.node(),
        "cpu_model": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpu_isa": cpu_isa(),
        "mem_gib": _mem_gib(),
        "os": f"{platform.system()} {platform.release()}",
        "machine": platform.machine(),
        "python": platform.python_version(),
    }


def harness_info() -> dict[str, Any]:
    """This harness, recorded with every figure."""
    from pytest_mi300x import __version__

    return {"name": "pytest-mi300x", "version": __version__}
