"""GPU numbering: which id a server's ``ROCR_VISIBLE_DEVICES`` must name.

amd-smi numbers GPUs its own way; ROCm (ROCR, and HIP on top of it) enumerates them in the
KFD topology's node order, which is not the same on every host (pytorch PR 160468). So a
lease never hands ROCm amd-smi's index: it names each GPU by its UUID (``GPU-<16 hex>``,
which ``ROCR_VISIBLE_DEVICES`` accepts), from ``amd-smi list -e`` (HIP_UUID, ROCm 6.4+) or
else from the KFD topology in sysfs, matched to amd-smi's GPUs by PCI address. Where
neither answers, the HIP order (``hip_id``) is used if known, and amd-smi's index only as a
last resort, said so in the lease's record.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

KFD_NODES = Path("/sys/class/kfd/kfd/topology/nodes")
KFD_ENV = "PYTEST_MI300X_KFD_TOPOLOGY"
"""Another topology folder (a container with sysfs mounted elsewhere; tests)."""
HIP_UUID = re.compile(r"^GPU-[0-9a-fA-F]{16}$")


@dataclass(frozen=True)
class KfdNode:
    """One GPU node of the KFD topology (``nodes/N/properties``: "name value" lines)."""

    node: int
    unique_id: int | None
    bdf: str | None
    gfx_target_version: int | None

    @property
    def hip_uuid(self) -> str | None:
        # rocminfo and ROCR print the KFD unique_id as 16 lower-case hex digits.
        return None if not self.unique_id else f"GPU-{self.unique_id:016x}"

    @property
    def gfx(self) -> str | None:
        """gfx942 from 90402 (major*10000 + minor*100 + stepping; stepping in hex)."""
        v = self.gfx_target_version
        if not v:
            return None
        return f"gfx{v // 10000}{(v // 100) % 100}{v % 100:x}"


def parse_kfd_properties(node: int, text: str) -> KfdNode | None:
    """A GPU node from its ``properties`` text; None for a CPU node (no SIMDs)."""
    props: dict[str, int] = {}
    for line in text.splitlines():
        name, _, value = line.strip().partition(" ")
        if value.strip().lstrip("-").isdigit():
            props[name] = int(value.strip())
    if not props.get("simd_count"):
        return None
    location = props.get("location_id")
    bdf = None
    if location is not None:
        # location_id packs bus, device and function as the PCI BDF does.
        bdf = (f"{props.get('domain', 0):04x}:{location >> 8:02x}:"
               f"{(location >> 3) & 0x1F:02x}.{location & 0x7}")
    return KfdNode(node, props.get("unique_id"), bdf, props.get("gfx_target_version"))


def read_kfd_topology(root: Path | None = None) -> list[KfdNode]:
    """The GPU nodes in KFD (and so ROCm/HIP) order; [] where there is no KFD."""
    root = root or Path(os.environ.get(KFD_ENV) or KFD_NODES)
    nodes = []
    try:
        entries = sorted((p for p in root.iterdir() if p.name.isdigit()),
                         key=lambda p: int(p.name))
    except OSError:
        return []
    for entry in entries:
        try:
            parsed = parse_kfd_properties(int(entry.name), (entry / "properties").read_text())
        except OSError:
            continue
        if parsed is not None:
            nodes.append(parsed)
    return nodes


@dataclass(frozen=True)
class Numbering:
    """For each of the tool's GPU indices, what ROCm must be told (a UUID where known),
    its place in ROCm's order, and how that was found."""

    visible: Mapping[int, str]
    hip_ids: Mapping[int, int]
    source: str
    """"uuid (amd-smi list -e)", "uuid (KFD topology)", "hip order" or "tool index
    (unverified)"."""

    def ids(self, gpus: Sequence[int]) -> list[str]:
        return [self.visible.get(g, str(g)) for g in gpus]

    @property
    def by_uuid(self) -> bool:
        return self.source.startswith("uuid")

    def differs(self) -> dict[int, int]:
        """GPUs whose ROCm (HIP) id is not the tool's index: where naming by index would
        hand a server another GPU than the one leased."""
        return {g: h for g, h in sorted(self.hip_ids.items()) if g != h}


def numbering(listed: Sequence[Mapping[str, object]], kfd: Sequence[KfdNode]) -> Numbering:
    """From ``amd-smi list [-e]`` records (gpu, bdf, hip_id, hip_uuid) and the KFD nodes."""
    indices = [int(str(r["gpu"])) for r in listed if str(r.get("gpu", "")).isdigit()]
    by_index = {int(str(r["gpu"])): r for r in listed if str(r.get("gpu", "")).isdigit()}
    uuids = {g: str(r.get("hip_uuid")) for g, r in by_index.items()
             if HIP_UUID.match(str(r.get("hip_uuid", "")))}
    hip_ids = {g: int(str(r["hip_id"])) for g, r in by_index.items()
               if str(r.get("hip_id", "")).isdigit()}
    if indices and len(uuids) == len(indices):
        return Numbering(uuids, hip_ids, "uuid (amd-smi list -e)")
    kfd_by_bdf = {n.bdf.lower(): (i, n) for i, n in enumerate(kfd) if n.bdf}
    matched = {g: kfd_by_bdf[str(r.get("bdf", "")).lower()] for g, r in by_index.items()
               if str(r.get("bdf", "")).lower() in kfd_by_bdf}
    if indices and len(matched) == len(indices) and all(n.hip_uuid for _, n in matched.values()):
        return Numbering({g: str(n.hip_uuid) for g, (_, n) in matched.items()},
                         hip_ids or {g: i for g, (i, _) in matched.items()},
                         "uuid (KFD topology)")
    if indices and len(hip_ids) == len(indices):
        return Numbering({g: str(h) for g, h in hip_ids.items()}, hip_ids, "hip order")
    return Numbering({g: str(g) for g in indices}, {}, "tool index (unverified)")
