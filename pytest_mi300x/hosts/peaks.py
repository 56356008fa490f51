"""What one accelerator can do at most: dense compute and memory bandwidth, the roofline's two
roofs. Known accelerators have their data-sheet figures; a host profile may give its own
(``[hosts.NAME.roofline]`` in hosts.toml), e.g. for a power-capped or newer part."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pytest_mi300x.hosts.profile import HostConfigError


@dataclass(frozen=True)
class Peaks:
    """One accelerator's peaks (dense: no sparsity)."""

    bf16_tflops: float
    fp8_tflops: float
    hbm_tb_s: float
    hbm_gb: float
    source: str

    def describe(self) -> dict[str, Any]:
        return {"bf16_tflops": self.bf16_tflops, "fp8_tflops": self.fp8_tflops,
                "hbm_tb_s": self.hbm_tb_s, "hbm_gb": self.hbm_gb, "source": self.source}


KNOWN_PEAKS: dict[str, Peaks] = {
    # AMD's MI300X data sheet: 1307.4 TFLOP/s dense BF16, 2614.9 dense FP8, 192 GB HBM3 at
    # 5.3 TB/s (the team's nightly-practice notes give the same ~1.3 PFLOP/s and 5.3 TB/s).
    "mi300x": Peaks(1307.4, 2614.9, 5.3, 192.0,
                    "AMD Instinct MI300X data sheet (dense BF16/FP8, HBM3)"),
    # MI325X: the MI300X's compute with 256 GB of HBM3E at 6 TB/s (AMD's data sheet).
    "mi325x": Peaks(1307.4, 2614.9, 6.0, 256.0,
                    "AMD Instinct MI325X data sheet (dense BF16/FP8, HBM3E)"),
}
"""Accelerators whose peaks are built in; others need ``[hosts.NAME.roofline]``."""

FIELDS = ("bf16_tflops", "fp8_tflops", "hbm_tb_s", "hbm_gb")


def peaks_from_toml(path: Path, where: str, accelerator: str, raw: Any) -> Peaks | None:
    """The host's peaks: the ``roofline`` table's figures over the accelerator's known ones;
    None when neither says (a CPU host, an unknown accelerator): no roofline there."""
    known = KNOWN_PEAKS.get(accelerator)
    if raw is None:
        return known
    if not isinstance(raw, dict):
        raise HostConfigError(f"{path}: {where} roofline is {raw!r}; write a table with "
                              f"{', '.join(FIELDS)} (per accelerator)")
    unknown = sorted(set(raw) - set(FIELDS))
    if unknown:
        raise HostConfigError(f"{path}: {where} roofline.{unknown[0]} is not a known field; "
                              f"use one of {', '.join(FIELDS)}")
    values: dict[str, float] = {}
    for key in FIELDS:
        value = raw.get(key, getattr(known, key) if known else None)
        if (isinstance(value, bool) or not isinstance(value, int | float)
                or not math.isfinite(value) or value <= 0):
            raise HostConfigError(
                f"{path}: {where} roofline.{key} is {value!r}; give the accelerator's peak as "
                f"a number > 0 ({accelerator} has no built-in figure to fall back on)"
                if known is None else
                f"{path}: {where} roofline.{key} is {value!r}; give a number > 0")
        values[key] = float(value)
    return Peaks(**values, source=f"{path} [{where.strip('[]')}.roofline]")
