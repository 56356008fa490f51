"""What GPUs a host has, as identity: model, count, gfx arch, driver, ROCm, firmware and
VBIOS, power cap, compute and memory partition, and the ROCm numbering. A driver, ROCm or
firmware upgrade changes a host's figures as surely as an engine change; recorded in every
result's fingerprint (``accelerators``) it makes such a change visible instead of being
blamed on the engine.

Read from ``amd-smi static`` (asic, bus, vbios, driver, board, limit, partition),
``amd-smi list -e``, ``amd-smi firmware``, ``amd-smi version`` and ``amd-smi metric -l``,
each under the GPU tools' timeout; rocm-smi and nvidia-smi hosts give what their tool has.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pytest_mi300x.gpus.discovery import AMD_LIST, AMD_LIST_OLD
from pytest_mi300x.gpus.numbering import Numbering, numbering, read_kfd_topology
from pytest_mi300x.gpus.smi import GpuToolError, number
from pytest_mi300x.gpus.smi_text import find, parse_version, records, text_of

Runner = Callable[[Sequence[str], float], str]

AMD_STATIC = ("amd-smi", "static", "-a", "-b", "-V", "-d", "-B", "-l", "-p", "--json")
AMD_FIRMWARE = ("amd-smi", "firmware", "--json")
AMD_VERSION = ("amd-smi", "version")
AMD_PERF_LEVEL = ("amd-smi", "metric", "-l", "--json")
ROCM_STATIC = ("rocm-smi", "--showproductname", "--showuniqueid", "--showbus", "--showvbios",
               "--showdriverversion", "--showmaxpower", "--showcomputepartition",
               "--showmemorypartition", "--json")


@dataclass(frozen=True)
class GpuIdentity:
    """One GPU as its tool identifies it; None where the tool does not say."""

    index: int
    model: str | None = None
    gfx: str | None = None
    bdf: str | None = None
    vbios: str | None = None
    driver: str | None = None
    power_cap_w: float | None = None
    compute_partition: str | None = None
    memory_partition: str | None = None
    perf_level: str | None = None
    firmware: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class HostGpus:
    """The host's GPUs, their software stack, and how ROCm numbers them."""

    tool: str
    gpus: tuple[GpuIdentity, ...]
    versions: dict[str, str] = field(default_factory=dict)
    """``rocm``, ``amdgpu`` (driver), ``tool``, as ``amd-smi version`` prints them."""
    numbering: Numbering | None = None
    problems: tuple[str, ...] = ()
    """What could not be read (a tool call that failed): part of the identity is unknown."""

    def values(self, name: str) -> list[Any]:
        """The distinct known values of one field over the GPUs, sorted."""
        return sorted({v for g in self.gpus if (v := getattr(g, name)) not in (None, {})},
                      key=str)

    def fingerprint(self) -> dict[str, Any]:
        """What results record and compare (results/stack.py ``accelerators``): one value
        per field when every GPU agrees, else their distinct values joined by ','."""
        def one(name: str) -> Any:
            found = self.values(name)
            if not found:
                return None
            return found[0] if len(found) == 1 else ",".join(map(str, found))

        firmware = sorted({json.dumps(g.firmware, sort_keys=True) for g in self.gpus
                           if g.firmware})
        out: dict[str, Any] = {
            "tool": self.tool, "count": len(self.gpus), "model": one("model"),
            "gfx": one("gfx"), "driver": self.versions.get("amdgpu") or one("driver"),
            "rocm": self.versions.get("rocm"), "vbios": one("vbios"),
            # The full list is long (20-odd blobs per GPU); its digest shows any change.
            "firmware": (hashlib.sha256("\n".join(firmware).encode()).hexdigest()[:12]
                         if firmware else None),
            "power_cap_w": one("power_cap_w"), "compute_partition": one("compute_partition"),
            "memory_partition": one("memory_partition"), "perf_level": one("perf_level"),
        }
        return {k: v for k, v in out.items() if v is not None}


def _power_w(value: Any) -> float | None:
    amount = number(value)
    if not amount:
        return None  # amd-smi prints 0 W where the GPU exposes no limit
    unit = str(value.get("unit", "W")) if isinstance(value, dict) else str(value)
    # The library reports microwatts; the CLI converts to W (older ones printed uW).
    return round(amount / 1e6, 1) if "uW" in unit else amount


def parse_static(text: str) -> dict[int, GpuIdentity]:
    """``amd-smi static [-a -b -V -d -B -l -p] --json`` (or its plain form) by GPU index."""
    found = {}
    for rec in records(text):
        index = number(rec.get("gpu"))
        if index is None:
            continue
        image = rec.get("vbios") if isinstance(rec.get("vbios"), dict) else rec.get("ifwi")
        part, version = (find(image, "part_number"), find(image, "version")) \
            if isinstance(image, dict) else (None, None)
        limit: dict[str, Any] = rec["limit"] if isinstance(rec.get("limit"), dict) else {}
        found[int(index)] = GpuIdentity(
            index=int(index),
            model=text_of(find(rec.get("asic"), "market_name"))
            or text_of(find(rec.get("board"), "product_name")),
            gfx=text_of(find(rec.get("asic"), "target_graphics_version")),
            bdf=text_of(find(rec.get("bus"), "bdf")),
            vbios="/".join(str(v) for v in (part, version) if v) or None,
            driver=text_of(find(rec.get("driver"), "version")),
            power_cap_w=_power_w(limit.get("socket_power", find(limit, "socket_power_limit",
                                                                "power_cap"))),
            compute_partition=text_of(find(rec.get("partition"), "compute_partition",
                                           "accelerator_partition")),
            memory_partition=text_of(find(rec.get("partition"), "memory_partition")),
        )
    return found


def parse_firmware(text: str) -> dict[int, dict[str, str]]:
    """``amd-smi firmware --json``: firmware id -> version, by GPU index."""
    out = {}
    for rec in records(text):
        index = number(rec.get("gpu"))
        listing = rec.get("fw_list")
        entries = listing.values() if isinstance(listing, dict) else listing or []
        if index is None:
            continue
        out[int(index)] = {str(e.get("fw_id", e.get("fw_name"))): str(e.get("fw_version"))
                           for e in entries if isinstance(e, dict)}
    return out


def parse_perf_level(text: str) -> dict[int, str]:
    """``amd-smi metric -l --json``: AMDSMI_DEV_PERF_LEVEL_AUTO -> "auto" by GPU index."""
    out = {}
    for rec in records(text):
        index, level = number(rec.get("gpu")), text_of(find(rec, "perf_level"))
        if index is not None and level:
            out[int(index)] = level.removeprefix("AMDSMI_DEV_PERF_LEVEL_").lower()
    return out


def _optional(run: Runner, argv: Sequence[str], timeout: float, problems: list[str]) -> str:
    try:
        return run(argv, timeout)
    except GpuToolError as exc:
        problems.append(str(exc))
        return ""


def amd_identity(run: Runner, timeout: float, kfd_root: Path | None = None) -> HostGpus:
    """The GPUs through amd-smi (raises GpuToolError when ``amd-smi static`` fails)."""
    problems: list[str] = []
    try:
        static = parse_static(run(AMD_STATIC, timeout))
    except GpuToolError:
        # An amd-smi without one of those options: everything it has.
        static = parse_static(run(("amd-smi", "static", "--json"), timeout))
    if not static:
        raise GpuToolError("amd-smi static listed no GPU")
    # `list -e` (HIP ids and UUIDs) is amd-smi 6.4+; plain `list` before it.
    listed_text = _optional(run, AMD_LIST, timeout, []) or \
        _optional(run, AMD_LIST_OLD, timeout, problems)
    listed = records(listed_text) if listed_text else []
    firmware = parse_firmware(_optional(run, AMD_FIRMWARE, timeout, problems) or "[]")
    levels = parse_perf_level(_optional(run, AMD_PERF_LEVEL, timeout, problems) or "[]")
    versions = parse_version(_optional(run, AMD_VERSION, timeout, problems))
    gpus = tuple(GpuIdentity(**{**g.__dict__, "firmware": firmware.get(i, {}),
                                "perf_level": levels.get(i)})
                 for i, g in sorted(static.items()))
    listed = listed or [{"gpu": g.index, "bdf": g.bdf} for g in gpus]
    return HostGpus("amd-smi", gpus, versions, numbering(listed, read_kfd_topology(kfd_root)),
                    tuple(problems))


def rocm_identity(run: Runner, timeout: float, kfd_root: Path | None = None) -> HostGpus:
    """What rocm-smi (older ROCm stacks) says of each ``cardN``."""
    from pytest_mi300x.gpus.smi import _json_payload, _rocm_key

    try:
        text = run(ROCM_STATIC, timeout)
    except GpuToolError:
        # A rocm-smi without one of those options (partitions came with MI300): the basics.
        text = run(("rocm-smi", "--showproductname", "--showbus", "--json"), timeout)
    data = _json_payload(text, "rocm-smi")
    gpus, listed = [], []
    for key, card in sorted(data.items()) if isinstance(data, dict) else []:
        if not key.startswith("card") or not key[4:].isdigit() or not isinstance(card, dict):
            continue
        index = int(key[4:])
        bdf = _rocm_key(card, r"PCI Bus")
        gpus.append(GpuIdentity(
            index=index, model=_rocm_key(card, r"Card Series", r"Card SKU", r"Device Name"),
            gfx=_rocm_key(card, r"GFX Version"), bdf=bdf.lower() if bdf else None,
            vbios=_rocm_key(card, r"VBIOS version"),
            power_cap_w=number(_rocm_key(card, r"Max Graphics Package Power \(W\)")),
            compute_partition=_rocm_key(card, r"Compute Partition"),
            memory_partition=_rocm_key(card, r"Memory Partition")))
        listed.append({"gpu": index, "bdf": bdf})
    if not gpus:
        raise GpuToolError("rocm-smi listed no GPU")
    system = data.get("system", {}) if isinstance(data, dict) else {}
    driver = _rocm_key(system, r"Driver version") if isinstance(system, dict) else None
    return HostGpus("rocm-smi", tuple(gpus), {"amdgpu": driver} if driver else {},
                    numbering(listed, read_kfd_topology(kfd_root)))


def cuda_identity(run: Runner, timeout: float) -> HostGpus:
    from pytest_mi300x.gpus.smi import _csv_rows

    rows = _csv_rows(run(("nvidia-smi", "--query-gpu=index,name,driver_version,power.limit",
                          "--format=csv"), timeout))
    gpus = tuple(GpuIdentity(index=int(r["index"]), model=r.get("name"),
                             driver=r.get("driver_version"),
                             power_cap_w=number(r.get("power.limit"))) for r in rows)
    if not gpus:
        raise GpuToolError("nvidia-smi listed no GPU")
    return HostGpus("nvidia-smi", gpus)


def read_identity(accelerator: str, run: Runner, timeout: float,
                  kfd_root: Path | None = None) -> HostGpus:
    """The host's GPUs from the first tool that answers; GpuToolError naming each failure."""
    probes: list[Callable[[], HostGpus]] = (
        [lambda: cuda_identity(run, timeout)] if accelerator == "cuda" else
        [lambda: amd_identity(run, timeout, kfd_root), lambda: rocm_identity(run, timeout,
                                                                              kfd_root)])
    failures = []
    for probe in probes:
        try:
            return probe()
        except GpuToolError as exc:
            failures.append(str(exc))
    raise GpuToolError("; ".join(failures))


def tool_present() -> str | None:
    """The GPU vendor whose tool is on PATH ("amd", "cuda"), None on a machine without."""
    if shutil.which("amd-smi") or shutil.which("rocm-smi"):
        return "amd"
    return "cuda" if shutil.which("nvidia-smi") else None
