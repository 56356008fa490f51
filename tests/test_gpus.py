"""GPU discovery parsers on real tool outputs (tests/data/smi/README.md names each source)."""

from __future__ import annotations

import ast
import json
from collections.abc import Sequence
from pathlib import Path

import pytest

from pytest_mi300x.gpus import discovery as gpus
from pytest_mi300x.gpus.discovery import GpuToolError, GpuUnreachable

DATA = Path(__file__).parent / "data" / "smi"


def read(name: str) -> str:
    return (DATA / name).read_text()


def mi300x_gpu_data_document() -> str:
    """The MI300X ``gpu_data`` record rebuilt from the reporter's pdb transcript."""
    lines = read("amd-smi-metric-gpu-data-mi300x.pdb.txt").splitlines()
    gpu = ast.literal_eval(lines[1])
    usage = ast.literal_eval(lines[3])
    return json.dumps({"gpu_data": [{"gpu": gpu, "usage": usage}]})


def test_amd_smi_metric_older_list_shape() -> None:
    [sample] = gpus.parse_amd_smi_metric(read("amd-smi-metric-u-list-w7700.json"))
    assert sample.index == 0
    assert sample.util_pct == 42.0
    assert sample.power_w is None  # -u asks for usage only


def test_amd_smi_metric_newer_gpu_data_shape_from_an_mi300x() -> None:
    [sample] = gpus.parse_amd_smi_metric(mi300x_gpu_data_document())
    assert (sample.index, sample.util_pct) == (0, 0.0)


def test_amd_smi_warning_lines_before_the_json_are_skipped() -> None:
    text = ("WARNING: User is missing the following required groups: render, video.\n"
            + read("amd-smi-metric-u-list-w7700.json"))
    assert gpus.parse_amd_smi_metric(text)[0].util_pct == 42.0


def test_amd_smi_full_metric_record_reads_power_temp_clock_vram_throttle() -> None:
    # Field names as amd-smi documents them (the real samples above carry usage only).
    record = {"gpu": 3, "power": {"socket_power": {"value": 542, "unit": "W"},
                                  "throttle_status": "THROTTLED"},
              "temperature": {"edge": {"value": 52, "unit": "C"},
                              "hotspot": {"value": 71, "unit": "C"}},
              "clock": {"gfx_0": {"clk": {"value": 1300, "unit": "MHz"},
                                  "max_clk": {"value": 2100, "unit": "MHz"}}},
              "usage": {"gfx_activity": {"value": 87, "unit": "%"}},
              "mem_usage": {"used_vram": {"value": 121344, "unit": "MB"},
                            "total_vram": {"value": 196592, "unit": "MB"}}}
    [s] = gpus.parse_amd_smi_metric(json.dumps({"gpu_data": [record]}))
    assert (s.power_w, s.temp_c, s.gfx_clock_mhz, s.max_gfx_clock_mhz) == (542, 71, 1300, 2100)
    assert (s.vram_used_mib, s.vram_total_mib, s.throttled) == (121344, 196592, True)


def test_amd_smi_process_newer_per_process_shape() -> None:
    procs = gpus.parse_amd_smi_process(read("amd-smi-process-by-pid.json"))
    assert [(p.pid, p.name, p.gpu) for p in procs] == [
        (2168274, "python3.12", 0), (2168274, "python3.12", 1)]
    assert procs[1].vram_mib == pytest.approx(65588000 / 2**20)


def test_amd_smi_process_older_per_gpu_shape() -> None:
    # The documented older shape (per GPU, "process_info" or a "no process" string).
    text = json.dumps([
        {"gpu": 0, "process_list": [{"process_info": "No running processes detected"}]},
        {"gpu": 1, "process_list": [{"process_info": {
            "name": "vllm", "pid": 4242, "mem_usage": {"value": 2353860608, "unit": "B"}}}]},
    ])
    [proc] = gpus.parse_amd_smi_process(text)
    assert (proc.pid, proc.gpu, round(proc.vram_mib or 0)) == (4242, 1, 2245)


def test_rocm_smi_use_and_vram() -> None:
    [card] = gpus.parse_rocm_smi(read("rocm-smi-productname-use-vram.json"))
    assert (card.index, card.name, card.util_pct) == (0, "Radeon RX 7900 XT", 0.0)
    assert card.vram_total_mib == pytest.approx(21458059264 / 2**20)
    assert card.vram_used_mib == pytest.approx(27856896 / 2**20)


def test_rocm_smi_older_lower_case_temperature_keys() -> None:
    [card] = gpus.parse_rocm_smi(read("rocm-smi-power-temp-fan.json"))
    assert (card.power_w, card.temp_c) == (222.0, 103.0)  # junction before edge


def test_rocm_smi_pids_have_no_gpu_index() -> None:
    [proc] = gpus.parse_rocm_smi_pids(
        '{"system": {"PID28389": "llama-server, 1, 2353860608, 11011, 0"}}')
    assert (proc.pid, proc.name, proc.gpu) == (28389, "llama-server", None)
    assert gpus.parse_rocm_smi_pids("WARNING: No JSON data to report\n") == []


def test_nvidia_query_idle_and_busy_with_renamed_throttle_column() -> None:
    [idle] = gpus.parse_nvidia_query(read("query-gpu-idle.csv"))
    [busy] = gpus.parse_nvidia_query(read("query-gpu-busy.csv"))
    assert (idle.name, idle.vram_total_mib, idle.vram_used_mib) == (
        "NVIDIA H100 80GB HBM3", 81559, 0)
    assert idle.throttled is False  # 0x1: idle, not throttled
    assert (busy.util_pct, busy.power_w, busy.gfx_clock_mhz, busy.max_gfx_clock_mhz) == (
        100, 308.73, 1455, 1980)
    assert busy.throttled is True  # 0x4: software power cap


def test_nvidia_compute_apps_place_processes_on_gpus() -> None:
    uuids = {"GPU-00000000-0000-0000-0000-000000000000": 0}
    assert gpus.parse_nvidia_apps(read("compute-apps-idle.csv"), uuids) == []
    [proc] = gpus.parse_nvidia_apps(read("compute-apps-busy.csv"), uuids)
    assert (proc.pid, proc.name, proc.gpu, proc.vram_mib) == (421, "python3", 0, 8632)


class Tools:
    """Answers GPU-tool argv from a table; anything else is 'not found'."""

    def __init__(self, answers: dict[str, str]) -> None:
        self.answers = answers
        self.calls: list[tuple[str, ...]] = []

    def __call__(self, argv: Sequence[str], timeout: float) -> str:
        self.calls.append(tuple(argv))
        for prefix, text in self.answers.items():
            if " ".join(argv).startswith(prefix):
                return text
        raise GpuToolError(f"{argv[0]} not found on PATH")


def test_discover_falls_back_to_rocm_smi_and_names_holders() -> None:
    tools = Tools({"rocm-smi --showproductname": read("rocm-smi-productname-use-vram.json"),
                   "rocm-smi --showpids": "WARNING: No JSON data to report"})
    inv = gpus.discover("mi300x", run=tools)
    assert inv.tool == "rocm-smi" and inv.indices == (0,)
    assert inv.holder(0) is None  # 27 MB in use: idle
    assert tools.calls[0][0] == "amd-smi"


def test_holder_names_the_process_from_amd_smi() -> None:
    metric = json.dumps([{"gpu": 0}, {"gpu": 1}])
    tools = Tools({"amd-smi metric": metric,
                   "amd-smi process": read("amd-smi-process-by-pid.json")})
    inv = gpus.discover("mi300x", run=tools)
    assert inv.holder(1) == "pid 2168274 (python3.12, 0.1 GiB VRAM)"
    assert inv.holder(0) == "pid 2168274 (python3.12, 0.0 GiB VRAM)"  # listed, so held


def test_holder_by_vram_when_no_process_is_visible() -> None:
    inv = gpus.Inventory("amd-smi", (gpus.GpuSample(0, vram_used_mib=120_000),), ())
    assert "117.2 GiB VRAM in use by a process amd-smi cannot name" in (inv.holder(0) or "")


def test_no_tool_is_one_line_naming_each_failure() -> None:
    with pytest.raises(GpuUnreachable) as exc:
        gpus.discover("mi300x", run=Tools({}))
    assert str(exc.value) == "amd-smi not found on PATH; rocm-smi not found on PATH"


def test_a_hung_tool_is_cut_off_by_the_timeout(tmp_path: Path) -> None:
    script = tmp_path / "amd-smi"
    script.write_text("#!/bin/sh\nsleep 30\n")
    script.chmod(0o755)
    with pytest.raises(GpuToolError, match="did not answer within 0 s"):
        gpus.run_tool([str(script), "metric"], timeout=0.3)
