"""Facts about the machine that decide whether two figures are comparable."""

from __future__ import annotations

import os
import platform
from functools import cache
from typing import Any

import pytest_mi300x


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
        "mem_gib": _mem_gib(),
        "os": f"{platform.system()} {platform.release()}",
        "machine": platform.machine(),
        "python": platform.python_version(),
    }


def harness() -> dict[str, Any]:
    return {"name": "pytest-mi300x", "version": pytest_mi300x.__version__}
