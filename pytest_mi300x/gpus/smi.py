"""Parsers of the GPU tools' outputs: amd-smi (both JSON shapes: the older top-level list
and the newer ``{"gpu_data": [...]}``), rocm-smi --json, and nvidia-smi CSV. Pure text in,
typed samples out; tested on real outputs (tests/data/smi/)."""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

DEFAULT_TIMEOUT_S = 20.0
TIMEOUT_ENV = "PYTEST_MI300X_SMI_TIMEOUT"
BUSY_VRAM_MIB = 1024.0
"""VRAM in use above which a GPU counts as held even when no process is listed
(AMD's CI uses the same test: another container's processes are invisible)."""

AMD_METRIC = ("amd-smi", "metric", "-p", "-t", "-c", "-u", "-m", "-e", "--json")
HOT_C = 95.0
"""A GPU this hot before any load is cooling badly: not a place to measure."""
AMD_PROCESS = ("amd-smi", "process", "--json")
ROCM_METRIC = ("rocm-smi", "--showproductname", "--showuse", "--showmeminfo", "vram",
               "--showpower", "--showtemp", "--json")
ROCM_PIDS = ("rocm-smi", "--showpids", "--json")
NVIDIA_FIELDS = ("index", "name", "uuid", "memory.total", "memory.used", "utilization.gpu",
                 "power.draw", "temperature.gpu", "clocks.sm", "clocks.max.sm",
                 "clocks_throttle_reasons.active")
NVIDIA_METRIC = ("nvidia-smi", f"--query-gpu={','.join(NVIDIA_FIELDS)}", "--format=csv")
NVIDIA_APPS = ("nvidia-smi", "--query-compute-apps=pid,process_name,gpu_uuid,used_memory",
               "--format=csv")

# NVML clock-event reasons that mean the GPU is held below its clocks (not idle,
# not an application clock setting): SW power cap, HW slowdown, SW/HW thermal,
# HW power brake.
_NVIDIA_THROTTLE_BITS = 0x4 | 0x8 | 0x40 | 0x80 | 0x100
_UNIT_MIB = {"b": 1 / 2**20, "kb": 1 / 2**10, "kib": 1 / 2**10, "mb": 1.0, "mib": 1.0,
             "gb": 2**10, "gib": 2**10}


class GpuToolError(Exception):
    """A GPU tool that is missing, failed, hung or printed something unreadable."""


@dataclass(frozen=True)
class GpuSample:
    """One GPU at one moment. Fields a tool does not report are None."""

    index: int
    name: str | None = None
    power_w: float | None = None
    temp_c: float | None = None
    gfx_clock_mhz: float | None = None
    max_gfx_clock_mhz: float | None = None
    util_pct: float | None = None
    vram_used_mib: float | None = None
    vram_total_mib: float | None = None
    throttled: bool | None = None
    ecc_uncorrectable: int | None = None
    """Uncorrectable (and deferred) ECC errors since boot; None where not reported."""
    thermal_violation_pct: float | None = None
    """Share of the last interval a thermal limiter held the clocks (amd-smi monitor's
    TVIOL and kin, MI300-class); None where not reported."""
    power_violation_pct: float | None = None
    """Share of the last interval spent at the power cap (PVIOL)."""

    def problems(self, hot: bool | None = None) -> list[str]:
        """Why this GPU should not serve a measurement now (checked before a server start);
        what a tool does not report ("N/A") is unknown, not a problem. ``hot``: only the
        heat (True, which passes) or only the rest (False, which lasts); both by default."""
        out = []
        if self.ecc_uncorrectable and hot is not True:
            out.append(f"{self.ecc_uncorrectable} uncorrectable ECC error(s) since boot "
                       "(RAS); check `amd-smi metric -e` and reset or drain the GPU")
        if self.temp_c is not None and self.temp_c >= HOT_C and hot is not False:
            out.append(f"at {self.temp_c:.0f} C before any load (limit {HOT_C:.0f} C)")
        return out

    def describe(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if v is not None}


@dataclass(frozen=True)
class GpuProcess:
    """A process a GPU tool lists; ``gpu`` is None when the tool does not say which GPU."""

    pid: int | None
    name: str
    gpu: int | None
    vram_mib: float | None = None

    def __str__(self) -> str:
        vram = f", {self.vram_mib / 1024:.1f} GiB VRAM" if self.vram_mib else ""
        return f"pid {self.pid} ({self.name}{vram})"


def number(value: Any) -> float | None:
    """A figure from amd-smi/rocm-smi leaves: ``{"value": 42, "unit": "%"}``, ``42``,
    ``"42.0"``, ``"(1090Mhz)"``; None for ``"N/A"`` and other non-numbers."""
    if isinstance(value, dict):
        value = value.get("value")
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        match = re.search(r"-?\d+(\.\d+)?", value)
        return float(match.group()) if match else None
    return None


def mib(value: Any, default_unit: str = "MB") -> float | None:
    """Memory in MiB from a leaf with a unit (amd-smi's ``MB`` are MiB)."""
    amount = number(value)
    if amount is None:
        return None
    unit = value.get("unit", default_unit) if isinstance(value, dict) else default_unit
    return amount * _UNIT_MIB.get(str(unit).strip().lower(), 1.0)


def _json_payload(text: str, tool: str) -> Any:
    # amd-smi prints warnings (missing groups, low-power state) before its JSON.
    starts = [i for i in (text.find("["), text.find("{")) if i >= 0]
    if not starts:
        raise GpuToolError(f"{tool} printed no JSON: {text.strip()[:120]!r}")
    try:
        return json.loads(text[min(starts):])
    except json.JSONDecodeError as exc:
        raise GpuToolError(f"{tool} printed unreadable JSON ({exc})") from None


def amd_smi_records(text: str) -> list[dict[str, Any]]:
    """The per-GPU records of any amd-smi ``--json`` output, in either shape."""
    data = _json_payload(text, "amd-smi")
    if isinstance(data, dict):
        data = data.get("gpu_data", [])
    if not isinstance(data, list):
        raise GpuToolError(f"amd-smi JSON is neither a list nor {{'gpu_data': [...]}}: "
                           f"{type(data).__name__}")
    return [r for r in data if isinstance(r, dict)]


def _first(table: Any, *keys: str) -> Any:
    if not isinstance(table, dict):
        return None
    for key in keys:
        if number(table.get(key)) is not None:
            return table[key]
    return None


# --- amd-smi -------------------------------------------------------------------------

def parse_amd_smi_metric(text: str) -> list[GpuSample]:
    """``amd-smi metric [-p -t -c -u -m] --json``: one sample per GPU."""
    samples = []
    for rec in amd_smi_records(text):
        index = number(rec.get("gpu"))
        if index is None:
            continue
        power = rec.get("power") or {}
        clock = rec.get("clock") or {}
        gfx0 = clock.get("gfx_0") if isinstance(clock, dict) else None
        mem = rec.get("mem_usage") or {}
        throttle = power.get("throttle_status") if isinstance(power, dict) else None
        ecc = rec.get("ecc")
        ecc = ecc if isinstance(ecc, dict) else {}
        bad = [number(ecc.get(k)) for k in ("total_uncorrectable_count", "total_deferred_count")]
        samples.append(GpuSample(
            index=int(index),
            power_w=number(_first(power, "socket_power", "average_socket_power")),
            temp_c=number(_first(rec.get("temperature"), "hotspot", "edge")),
            gfx_clock_mhz=number(_first(gfx0, "clk")),
            max_gfx_clock_mhz=number(_first(gfx0, "max_clk")),
            util_pct=number(_first(rec.get("usage"), "gfx_activity")),
            vram_used_mib=mib(_first(mem, "used_vram")),
            vram_total_mib=mib(_first(mem, "total_vram")),
            throttled=(None if not isinstance(throttle, str) or throttle == "N/A"
                       else throttle.upper() != "UNTHROTTLED"),
            ecc_uncorrectable=(None if all(b is None for b in bad)
                               else int(sum(b or 0 for b in bad))),
        ))
    return samples


def parse_amd_smi_process(text: str) -> list[GpuProcess]:
    """``amd-smi process --json``, older per-GPU shape or newer per-process shape."""
    data = _json_payload(text, "amd-smi")
    if isinstance(data, dict):
        data = data.get("gpu_data", data.get("process_data", []))
    found: list[GpuProcess] = []
    for rec in data if isinstance(data, list) else []:
        if not isinstance(rec, dict):
            continue
        if "gpus" in rec:  # newer: one record per process, listing its GPUs
            for gpu in rec.get("gpus") or []:
                if isinstance(gpu, dict) and number(gpu.get("gpu_index")) is not None:
                    found.append(_process(rec, int(number(gpu["gpu_index"]) or 0), gpu))
            continue
        index = number(rec.get("gpu"))
        for entry in rec.get("process_list") or []:
            info = entry.get("process_info") if isinstance(entry, dict) else None
            if isinstance(info, dict):  # else "No running processes detected"
                found.append(_process(info, None if index is None else int(index), info))
    return found


def _process(rec: Mapping[str, Any], gpu: int | None, usage: Mapping[str, Any]) -> GpuProcess:
    memory = usage.get("memory_usage") or {}
    vram = memory.get("vram_mem") if isinstance(memory, dict) else None
    if vram is None:
        vram = usage.get("vram_mem", usage.get("mem_usage", usage.get("mem")))
    pid = number(rec.get("pid"))
    name = str(rec.get("name") or "N/A").rsplit("/", 1)[-1]
    return GpuProcess(pid=None if pid is None else int(pid), name=name, gpu=gpu,
                      vram_mib=mib(vram, "B"))


# --- rocm-smi ------------------------------------------------------------------------

def _rocm_key(card: Mapping[str, str], *patterns: str) -> str | None:
    for pattern in patterns:
        for key, value in card.items():
            if re.fullmatch(pattern, key, re.IGNORECASE):
                return value
    return None


def parse_rocm_smi(text: str) -> list[GpuSample]:
    """``rocm-smi ... --json``: one sample per ``cardN`` (the ``system`` key is skipped)."""
    data = _json_payload(text, "rocm-smi")
    if not isinstance(data, dict):
        raise GpuToolError("rocm-smi JSON is not a table of cards")
    samples = []
    for key, card in data.items():
        match = re.fullmatch(r"card(\d+)", key)
        if not match or not isinstance(card, dict):
            continue
        used = number(_rocm_key(card, r"VRAM Total Used Memory \(B\)"))
        total = number(_rocm_key(card, r"VRAM Total Memory \(B\)"))
        samples.append(GpuSample(
            index=int(match.group(1)),
            name=_rocm_key(card, r"Card Series", r"Device Name"),
            power_w=number(_rocm_key(card, r".*Graphics Package Power \(W\)")),
            temp_c=number(_rocm_key(card, r"Temperature \(Sensor junction\) \(C\)",
                                    r"Temperature \(Sensor edge\) \(C\)")),
            gfx_clock_mhz=number(_rocm_key(card, r"sclk clock speed:?")),
            util_pct=number(_rocm_key(card, r"GPU use \(%\)")),
            vram_used_mib=None if used is None else used / 2**20,
            vram_total_mib=None if total is None else total / 2**20,
        ))
    return samples


def parse_rocm_smi_pids(text: str) -> list[GpuProcess]:
    """``rocm-smi --showpids --json``: ``{"system": {"PID123": "name, gpus, vram B, ..."}}``.

    rocm-smi does not say which GPU a process uses, so ``gpu`` is None.
    """
    try:
        data = _json_payload(text, "rocm-smi")
    except GpuToolError:
        return []  # "WARNING: No JSON data to report" when nothing runs
    system = data.get("system", {}) if isinstance(data, dict) else {}
    found = []
    for key, value in system.items():
        match = re.fullmatch(r"PID(\d+)", key)
        if match and isinstance(value, str):
            parts = [p.strip() for p in value.split(",")]
            vram = number(parts[2]) if len(parts) > 2 else None
            found.append(GpuProcess(int(match.group(1)), parts[0], None,
                                    None if vram is None else vram / 2**20))
    return found


# --- nvidia-smi ----------------------------------------------------------------------

def _csv_rows(text: str) -> list[dict[str, str]]:
    rows = list(csv.reader(io.StringIO(text.strip()), skipinitialspace=True))
    if not rows:
        return []
    header = [re.sub(r"\s*\[.*\]$", "", h.strip()) for h in rows[0]]
    # Newer drivers answer clocks_throttle_reasons.* under clocks_event_reasons.*.
    header = [h.replace("clocks_event_reasons", "clocks_throttle_reasons") for h in header]
    return [dict(zip(header, (c.strip() for c in row), strict=False)) for row in rows[1:] if row]


def parse_nvidia_query(text: str) -> list[GpuSample]:
    """``nvidia-smi --query-gpu=... --format=csv`` (with its header line)."""
    samples = []
    for row in _csv_rows(text):
        reasons = row.get("clocks_throttle_reasons.active", "")
        try:
            mask = int(reasons, 16) if reasons.startswith("0x") else None
        except ValueError:
            mask = None
        samples.append(GpuSample(
            index=int(row["index"]),
            name=row.get("name"),
            power_w=number(row.get("power.draw")),
            temp_c=number(row.get("temperature.gpu")),
            gfx_clock_mhz=number(row.get("clocks.sm", row.get("clocks.current.sm"))),
            max_gfx_clock_mhz=number(row.get("clocks.max.sm")),
            util_pct=number(row.get("utilization.gpu")),
            vram_used_mib=number(row.get("memory.used")),
            vram_total_mib=number(row.get("memory.total")),
            throttled=None if mask is None else bool(mask & _NVIDIA_THROTTLE_BITS),
        ))
    return samples


def parse_nvidia_apps(text: str, uuid_to_index: Mapping[str, int]) -> list[GpuProcess]:
    """``nvidia-smi --query-compute-apps=pid,process_name,gpu_uuid,used_memory --format=csv``."""
    found = []
    for row in _csv_rows(text):
        pid = number(row.get("pid"))
        memory = row.get("used_gpu_memory", row.get("used_memory"))
        found.append(GpuProcess(None if pid is None else int(pid),
                                row.get("process_name", "?"),
                                uuid_to_index.get(row.get("gpu_uuid", "")), number(memory)))
    return found


def _nvidia_uuids(text: str) -> dict[str, int]:
    return {row["uuid"]: int(row["index"]) for row in _csv_rows(text) if "uuid" in row}


# --- discovery -----------------------------------------------------------------------

