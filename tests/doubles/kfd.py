"""TEST DOUBLE: a KFD topology folder as sysfs lays it out
(/sys/class/kfd/kfd/topology/nodes/N/properties, "name value" lines; node 0 the CPU), its
GPUs those of the rocm-smi double (PCI bus 0x0c + i) with the UUIDs the amd-smi double's
`list -e` gives; point $PYTEST_MI300X_KFD_TOPOLOGY at it. ``hip_order`` lists the
rocm-smi index of each KFD node in turn (ROCm's order). Property values other than the
real `gfx_target_version 90402` of an MI300X (ROCm/rocm-cli PR 343) are made up."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from tests.doubles.amd_smi import hip_uuid


def kfd_topology(root: Path, count: int, hip_order: Sequence[int] | None = None) -> Path:
    (root / "0").mkdir(parents=True, exist_ok=True)
    (root / "0" / "properties").write_text("cpu_cores_count 96\nsimd_count 0\n")
    for node, gpu in enumerate(hip_order or range(count), start=1):
        (root / str(node)).mkdir(exist_ok=True)
        unique = int(hip_uuid(gpu).removeprefix("GPU-"), 16)
        (root / str(node) / "properties").write_text(
            f"cpu_cores_count 0\nsimd_count 1216\ngfx_target_version 90402\n"
            f"location_id {(0x0c + gpu) << 8}\ndomain 0\nunique_id {unique}\n")
    return root
