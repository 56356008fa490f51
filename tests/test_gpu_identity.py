"""Item 7 of issue 27 (+ 26.7): the GPUs' identity (model, count, gfx, driver, ROCm,
firmware/VBIOS, power cap, partitions) read from real amd-smi outputs, recorded in every
result's fingerprint, compared in comparability and by the culprit's hardware check. Item 8:
leases name GPUs to ROCm by UUID, not by amd-smi's index.

Real outputs (tests/data/smi/, sources in its README) are parsed as they are; the amd-smi
double (tests/doubles/amd_smi.py) stands in for a whole MI300X host where a test needs one.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pytest_mi300x.ab.culprit import Night, other_host_kind
from pytest_mi300x.gpus import discovery as gpus
from pytest_mi300x.gpus.identity import HostGpus, parse_static, read_identity
from pytest_mi300x.gpus.leases import GpuLease, visibility_env
from pytest_mi300x.gpus.numbering import (
    KfdNode,
    numbering,
    parse_kfd_properties,
    read_kfd_topology,
)
from pytest_mi300x.gpus.smi_text import parse_version, plain_records, records
from pytest_mi300x.results.stack import comparability, split_builds, stack_diff
from tests.doubles import install_command

DATA = Path(__file__).parent / "data" / "smi"
ROOT = Path(__file__).parent.parent


@pytest.fixture
def mi300x_tools(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The amd-smi double on PATH as an 8 x MI300X host."""
    install_command(tmp_path / "bin", "amd-smi", "amd_smi.py")
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_GPU_COUNT", "8")
    monkeypatch.setenv(numbering_env(), str(tmp_path / "no-kfd"))
    return tmp_path


def numbering_env() -> str:
    from pytest_mi300x.gpus.numbering import KFD_ENV

    return KFD_ENV


# -- real outputs -------------------------------------------------------------------------

def test_amd_smis_plain_output_reads_as_its_json_tree() -> None:
    [gpu] = plain_records((DATA / "amd-smi-static-mi350x.txt").read_text())
    assert gpu["gpu"] == 0
    assert gpu["asic"]["target_graphics_version"] == "gfx950"
    assert gpu["bus"]["bdf"] == "0000:05:00.0"  # a value with ':' in it
    assert gpu["ifwi"]["build_date"] == "2025/06/19 21:03"
    listed = records((DATA / "amd-smi-list-e-cpx.txt").read_text())
    assert [(r["gpu"], r["hip_id"], r["node_id"]) for r in listed] == [(0, "0", "2"),
                                                                      (1, "1", "3")]


def test_static_identity_of_real_gpus() -> None:
    [mi350] = parse_static((DATA / "amd-smi-static-mi350x.txt").read_text()).values()
    assert (mi350.model, mi350.gfx, mi350.driver) == ("AMD Instinct MI350X", "gfx950", "6.18.3")
    # Newer amd-smi calls the firmware image IFWI; older ones VBIOS: either is recorded.
    assert mi350.vbios == "113-M350-01-1K0-920A/00154951"
    [apu] = parse_static((DATA / "amd-smi-static-phoenix.txt").read_text()).values()
    assert apu.vbios == "113-PHXGENERIC-001/022.012.000.029.000001"
    assert apu.power_cap_w is None  # "0 W": the GPU exposes no limit
    for name in ("amd-smi-static-partition.txt", "amd-smi-static-accelerator-partition.txt"):
        [part] = parse_static((DATA / name).read_text()).values()
        # ROCm 6.4.2 renamed COMPUTE_PARTITION to ACCELERATOR_PARTITION.
        assert (part.compute_partition, part.memory_partition) == ("SPX", "NPS1")


def test_rocm_and_driver_versions_from_amd_smi_version() -> None:
    assert parse_version((DATA / "amd-smi-version-rocm-6.4.0.txt").read_text())["rocm"] == "6.4.0"
    old = parse_version((DATA / "amd-smi-version-changelog.txt").read_text())
    assert old["amdgpu"] == "6.10.10" and "rocm" not in old  # "ROCm version: N/A"


def test_kfd_properties_give_pci_address_uuid_and_arch() -> None:
    # The real line: `gfx_target_version 90402` on an MI300X (ROCm/rocm-cli PR 343); the
    # other lines are in the kernel's "name value" format, the unique id that of the real
    # MI300X whose rocminfo is in tests/data (GPU-8af705259683161c), the rest made up.
    node = parse_kfd_properties(4, "cpu_cores_count 0\nsimd_count 1216\n"
                                   "gfx_target_version 90402\nlocation_id 3072\ndomain 0\n"
                                   "unique_id 10013477955478689308\n")
    assert node is not None and node.gfx == "gfx942" and node.bdf == "0000:0c:00.0"
    assert node.hip_uuid == "GPU-8af705259683161c"
    assert parse_kfd_properties(0, "cpu_cores_count 96\nsimd_count 0\n") is None  # a CPU
    # rocminfo prints an MI300X's UUID in the same form ROCR_VISIBLE_DEVICES takes.
    agent = (DATA / "rocminfo-mi300x-agent.txt").read_text()
    assert "Uuid:                    GPU-8af705259683161c" in agent


# -- numbering (item 8) -------------------------------------------------------------------

def test_numbering_prefers_uuids_then_kfd_order_and_says_when_it_guesses(
        tmp_path: Path) -> None:
    listed = [{"gpu": 0, "bdf": "0000:0c:00.0", "hip_id": 1, "hip_uuid": "GPU-00000000000000aa"},
              {"gpu": 1, "bdf": "0000:22:00.0", "hip_id": 0, "hip_uuid": "GPU-00000000000000bb"}]
    by_uuid = numbering(listed, [])
    assert by_uuid.by_uuid and by_uuid.ids([1]) == ["GPU-00000000000000bb"]
    assert by_uuid.differs() == {0: 1, 1: 0}
    # The real CPX listing's UUIDs are redacted: its HIP ids are what is left.
    cpx = numbering(records((DATA / "amd-smi-list-e-cpx.txt").read_text()), [])
    assert cpx.source == "hip order" and cpx.ids([1]) == ["1"]
    # An amd-smi without `list -e`: the KFD topology, matched by PCI address, gives both.
    kfd = [KfdNode(2, 0xBB, "0000:22:00.0", 90402), KfdNode(3, 0xAA, "0000:0c:00.0", 90402)]
    plain = numbering([{"gpu": 0, "bdf": "0000:0c:00.0"}, {"gpu": 1, "bdf": "0000:22:00.0"}],
                      kfd)
    assert plain.source == "uuid (KFD topology)"
    assert plain.ids([0]) == ["GPU-00000000000000aa"] and plain.hip_ids == {0: 1, 1: 0}
    assert numbering([{"gpu": 0}], []).source == "tool index (unverified)"
    # The topology as sysfs lays it out.
    for node, props in ((1, "simd_count 0\n"), (2, "simd_count 1216\nlocation_id 8704\n"
                                                   "unique_id 187\n")):
        (tmp_path / str(node)).mkdir()
        (tmp_path / str(node) / "properties").write_text(props)
    assert [n.bdf for n in read_kfd_topology(tmp_path)] == ["0000:22:00.0"]


def test_a_lease_names_its_gpu_to_rocm_by_uuid(mi300x_tools: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    # amd-smi's GPU 3 is ROCm's GPU 4 on this host; GPUs 0-2 are held by another user.
    monkeypatch.setenv("FAKE_GPU_HIP_ORDER", "7,6,5,4,3,2,1,0")
    monkeypatch.setenv("FAKE_GPU_HOLDERS", "0:11:a,1:12:b,2:13:c")
    lease = GpuLease(1, accelerator="mi300x", inventory=lambda: gpus.discover("mi300x"),
                     lock_dir=mi300x_tools / "locks", label="t", timeout_s=0, poll_s=0.05)
    with lease:
        assert lease.gpus == (3,)
        from tests.doubles.amd_smi import hip_uuid  # what the double's `list -e` says

        # Before: ROCR_VISIBLE_DEVICES=3, which ROCm reads as its own GPU 3 (amd-smi's 4).
        assert lease.env["ROCR_VISIBLE_DEVICES"] == hip_uuid(3)
        assert lease.env["HIP_VISIBLE_DEVICES"] == "0"
        assert lease.numbering is not None and lease.numbering.by_uuid
    assert visibility_env((3,), "mi300x")["ROCR_VISIBLE_DEVICES"] == "3"  # no numbering known


# -- identity in the fingerprint and comparability (item 7) ------------------------------

def test_an_mi300x_host_identity_through_amd_smi(mi300x_tools: Path) -> None:
    host = read_identity("mi300x", gpus.run_tool, 20.0)
    fp = host.fingerprint()
    assert fp["count"] == 8 and fp["gfx"] == "gfx942" and fp["model"] == "AMD Instinct MI300X"
    assert (fp["driver"], fp["rocm"], fp["power_cap_w"]) == ("6.12.12", "7.0.0", 750.0)
    assert (fp["compute_partition"], fp["memory_partition"], fp["perf_level"]) == \
        ("SPX", "NPS1", "auto")
    assert len(fp["firmware"]) == 12 and fp["vbios"] == "MADE-UP-VBIOS/0.0.0"
    assert host.numbering is not None and host.numbering.by_uuid


def test_every_result_fingerprint_carries_the_gpus_and_a_driver_change_is_not_comparable(
        mi300x_tools: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    code = ("import json; from pytest_mi300x.hosts.fingerprint import host_fingerprint; "
            "print(json.dumps(host_fingerprint()))")
    fp = json.loads(subprocess.run([sys.executable, "-c", code], capture_output=True,
                                   text=True, check=True, env=os.environ).stdout)
    assert fp["accelerators"]["count"] == 8 and fp["accelerators"]["gfx"] == "gfx942"
    assert fp["numa_balancing"] is not None and fp["harness_measurement"] >= 1
    engine = {"build": "docker:rocm/vllm@sha256:aa", "version": "0.11.1"}
    before = comparability(fp, engine)
    upgraded = {**fp, "accelerators": {**fp["accelerators"], "driver": "6.14.14"}}
    builds, others = split_builds(stack_diff(before, comparability(upgraded, engine)))
    # Not the build's doing: a setup difference, so the gate refuses to compare.
    assert builds == [] and others == ["accelerators.driver: 6.12.12 -> 6.14.14"]
    # The culprit's hardware check refuses a runner with another driver.
    night = Night("f", ["t"], "b", None, hardware={"accelerators": fp["accelerators"]})
    assert other_host_kind(night, {"accelerators": upgraded["accelerators"]})
    assert other_host_kind(night, {"accelerators": fp["accelerators"]}) == []


def test_numa_balancing_and_the_harness_measurement_are_compared() -> None:
    base = {"cpu_model": "x", "numa_balancing": "0", "harness_measurement": 1}
    engine = {"build": "b"}
    assert stack_diff(comparability(base, engine),
                      comparability({**base, "numa_balancing": "1"}, engine)) == \
        ["numa_balancing: 0 -> 1"]
    assert stack_diff(comparability(base, engine),
                      comparability({**base, "harness_measurement": 2}, engine)) == \
        ["harness_measurement: 1 -> 2"]


def test_a_host_whose_gpus_disagree_records_every_value() -> None:
    from pytest_mi300x.gpus.identity import GpuIdentity

    mixed = HostGpus("amd-smi", (GpuIdentity(0, vbios="a"), GpuIdentity(1, vbios="b")))
    assert mixed.fingerprint()["vbios"] == "a,b" and mixed.fingerprint()["count"] == 2
