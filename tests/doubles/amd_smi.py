"""Test double for the `amd-smi` command: a fake inventory of MI300X GPUs in amd-smi's JSON
shapes, for machines without any GPU.

Installed on PATH as `amd-smi` by tests. What it answers, and where its shapes come from:
- `metric ... --json` (power, temperature, clocks, use, VRAM, ECC) and `process --json`: the
  shapes of real outputs (tests/data/smi/).
- `metric --throttle|-T|-v --json [-g ...]`: the violation counters, keys as amd-smi's own
  CLI names them (`throttle`: accumulation_counter, <kind>_accumulated,
  <kind>_violation_status; tests/data/smi/amd-smi-metric-throttle.txt is amd-smi's real
  plain output). The counter ticks a million times a second; a thermal limiter's
  accumulator ticks with it the share FAKE_GPU_THERMAL gives.
- `metric -l --json`: perf_level.
- `static ... --json`: asic, bus, vbios, driver, limit, partition. The BDFs, the 750 W cap,
  SPX/NPS1 and driver 6.12.12 are those of the real 8 x MI300X host in amd-smi's changelog
  (ROCm 7.0, `amd-smi` default view); the VBIOS part number and firmware versions are
  MADE UP (no real MI300X paste of them was found) and say so.
- `list [-e] --json`: gpu, bdf, uuid, kfd_id, node_id, partition_id, and with -e hip_id and
  hip_uuid (amd-smi 6.4+; field names from its changelog).
- `firmware --json`, `version`: the shapes of amd-smi's CLI; the version line is the real
  one of that changelog host.
- `monitor -w N [-p -t -u -v --violation] -g ...`: a header, then one row per GPU every N
  seconds (FAKE_MONITOR_SLEEP overrides) until killed, columns as amd-smi 6.4+ prints them
  (tests/data/smi/amd-smi-monitor-*.txt are real ones).

env: FAKE_GPU_COUNT (default 2); FAKE_AMD_SMI_SHAPE = list | gpu_data (default gpu_data);
FAKE_GPU_HOLDERS = "GPU:PID:NAME,..."; FAKE_GPU_UNHEALTHY = "GPU:ecc,GPU:hot";
FAKE_GPU_HOT_UNTIL = epoch seconds (every GPU at 104 C until then: a server just stopped);
FAKE_GPU_GFX (gfx942), FAKE_GPU_PARTITION (SPX), FAKE_GPU_POWER_CAP (750),
FAKE_GPU_PERF_LEVEL (AUTO); FAKE_GPU_HIP_ORDER = "3,2,1,0" (the HIP id of each amd-smi
index; default the same order); FAKE_AMD_SMI_OLD = 1 (an amd-smi before 6.3/6.4: no
`list -e`, no violation counters, no `monitor --violation`); FAKE_GPU_THERMAL = "GPU:pct";
AMD_SMI_DOUBLE_JOURNAL = a file each call's arguments are appended to.
"""

from __future__ import annotations

import json
import os
import sys
import time

BDFS = ["0000:0c:00.0", "0000:22:00.0", "0000:38:00.0", "0000:5c:00.0", "0000:9f:00.0",
        "0000:af:00.0", "0000:bf:00.0", "0000:df:00.0"]
"""The changelog host's GPUs, in amd-smi's order."""


def value(number: float, unit: str) -> dict[str, object]:
    return {"value": number, "unit": unit}


def count() -> int:
    return int(os.environ.get("FAKE_GPU_COUNT", "2"))


def hot(index: int) -> bool:
    sick = dict(item.split(":") for item in os.environ.get("FAKE_GPU_UNHEALTHY", "").split(",")
                if item)
    until = float(os.environ.get("FAKE_GPU_HOT_UNTIL", "0") or 0)
    return sick.get(str(index)) == "hot" or time.time() < until


def bdf(index: int) -> str:
    return BDFS[index] if index < len(BDFS) else f"0000:{0xe0 + index:02x}:00.0"


def hip_ids() -> list[int]:
    order = os.environ.get("FAKE_GPU_HIP_ORDER", "")
    return [int(x) for x in order.split(",")] if order else list(range(count()))


def hip_uuid(index: int) -> str:
    return f"GPU-{0x5a1e_0000_0000_0000 + index * 0x1111:016x}"


def metric(index: int) -> dict[str, object]:
    sick = dict(item.split(":") for item in os.environ.get("FAKE_GPU_UNHEALTHY", "").split(",")
                if item)
    return {
        "ecc": {"total_correctable_count": 0,
                "total_uncorrectable_count": 2 if sick.get(str(index)) == "ecc" else 0,
                "total_deferred_count": 0},
        "gpu": index,
        "usage": {"gfx_activity": value(0, "%"), "umc_activity": value(0, "%"),
                  "mm_activity": "N/A"},
        "power": {"socket_power": value(131, "W"), "throttle_status": "N/A"},
        "clock": {"gfx_0": {"clk": value(132, "MHz"), "min_clk": value(500, "MHz"),
                            "max_clk": value(2100, "MHz"), "clk_locked": "N/A",
                            "deep_sleep": "ENABLED"}},
        "temperature": {"edge": "N/A", "hotspot": value(104 if hot(index) else 35, "C"),
                        "mem": value(30, "C")},
        "mem_usage": {"total_vram": value(196592, "MB"), "used_vram": value(283, "MB"),
                      "free_vram": value(196309, "MB")},
    }


def violations(index: int) -> dict[str, object]:
    shares = dict(item.split(":") for item in os.environ.get("FAKE_GPU_THERMAL", "").split(",")
                  if item)
    ticks = int(time.time() * 1_000_000)
    thermal = int(ticks * float(shares.get(str(index), 0)) / 100)
    status = "ACTIVE" if thermal else "NOT ACTIVE"
    return {"gpu": index, "throttle": {
        "accumulation_counter": ticks, "prochot_accumulated": 0, "ppt_accumulated": ticks // 2,
        "socket_thermal_accumulated": 0, "vr_thermal_accumulated": 0,
        "hbm_thermal_accumulated": thermal, "prochot_violation_status": "NOT ACTIVE",
        "ppt_violation_status": "ACTIVE", "hbm_thermal_violation_status": status,
        "ppt_violation_activity": value(50, "%"),
        "hbm_thermal_violation_activity": value(float(shares.get(str(index), 0)), "%")}}


def static(index: int) -> dict[str, object]:
    partition = os.environ.get("FAKE_GPU_PARTITION", "SPX")
    return {
        "gpu": index,
        "asic": {"market_name": "AMD Instinct MI300X", "vendor_id": "0x1002",
                 "device_id": "0x74a1", "target_graphics_version":
                 os.environ.get("FAKE_GPU_GFX", "gfx942")},
        "bus": {"bdf": bdf(index)},
        "vbios": {"name": "MADE UP", "part_number": "MADE-UP-VBIOS", "version": "0.0.0"},
        "driver": {"name": "amdgpu", "version": "6.12.12"},
        "limit": {"max_power": value(750, "W"), "min_power": value(0, "W"),
                  "socket_power": value(float(os.environ.get("FAKE_GPU_POWER_CAP", "750")),
                                        "W")},
        "partition": {"compute_partition": partition, "memory_partition": "NPS1",
                      "partition_id": 0},
    }


def listed(index: int, enumerate_: bool) -> dict[str, object]:
    rec: dict[str, object] = {"gpu": index, "bdf": bdf(index),
                              "uuid": f"{index:02x}ff74a1-0000-1000-8000-00000000000{index}",
                              "kfd_id": 40000 + index, "node_id": index + 1, "partition_id": 0}
    if enumerate_:
        rec.update(hip_id=hip_ids()[index], hip_uuid=hip_uuid(index))
    return rec


def wanted(args: list[str]) -> list[int]:
    if "-g" in args:
        return [int(a) for a in args[args.index("-g") + 1:] if a.isdigit()]
    return list(range(count()))


def shaped(records: list[dict[str, object]]) -> str:
    shape = os.environ.get("FAKE_AMD_SMI_SHAPE", "gpu_data")
    return json.dumps({"gpu_data": records} if shape == "gpu_data" else records, indent=4)


def monitor(args: list[str]) -> int:
    old = os.environ.get("FAKE_AMD_SMI_OLD") == "1"
    if "--violation" in args and old:
        print("amd-smi monitor: error: unrecognized arguments: --violation", file=sys.stderr)
        return 2
    every = float(os.environ.get("FAKE_MONITOR_SLEEP", args[args.index("-w") + 1]))
    head = "GPU  POWER   GPU_T   MEM_T   GFX_CLK   GFX%   MEM%   ENC%   DEC%      VRAM_USAGE"
    if "--violation" in args:
        head += "  PVIOL  TVIOL  TVIOL_ACTIVE  PHOT_TVIOL  VR_TVIOL  HBM_TVIOL"
    print(head, flush=True)
    shares = dict(item.split(":") for item in os.environ.get("FAKE_GPU_THERMAL", "").split(",")
                  if item)
    while True:
        for index in wanted(args):
            row = (f"  {index}  {380 + index} W   {104 if hot(index) else 61} °C   52 °C  "
                   f"2100 MHz   97 %   44 %    N/A    0 %    160.1/192.0 GB")
            if "--violation" in args:
                share = float(shares.get(str(index), 0))
                row += (f"   50 %   {share:g} %   {'True' if share else 'False'}"
                        f"   0 %   0 %   {share:g} %")
            print(row, flush=True)
        time.sleep(every)


def processes(index: int, holders: list[tuple[int, int, str]]) -> dict[str, object]:
    mine = [{"process_info": {"name": name, "pid": pid,
                              "mem_usage": value(120 * 2**30, "B")}}
            for gpu, pid, name in holders if gpu == index]
    return {"gpu": index,
            "process_list": mine or [{"process_info": "No running processes detected"}]}


def main() -> int:
    args = sys.argv[1:]
    if os.environ.get("AMD_SMI_DOUBLE_JOURNAL"):
        with open(os.environ["AMD_SMI_DOUBLE_JOURNAL"], "a") as fh:
            fh.write(" ".join(args) + "\n")
    old = os.environ.get("FAKE_AMD_SMI_OLD") == "1"
    holders = [(int(g), int(p), n) for g, p, n in (
        h.split(":") for h in os.environ.get("FAKE_GPU_HOLDERS", "").split(",") if h)]
    if args[:1] == ["process"]:
        print(json.dumps([processes(i, holders) for i in range(count())], indent=4))
        return 0
    if args[:1] == ["metric"] and {"--throttle", "-T", "-v", "--violation"} & set(args):
        if old:
            print("amd-smi metric: error: unrecognized arguments: --throttle", file=sys.stderr)
            return 2
        print(shaped([violations(i) for i in wanted(args)]))
        return 0
    if args[:1] == ["metric"] and "-l" in args:
        print(shaped([{"gpu": i, "perf_level": "AMDSMI_DEV_PERF_LEVEL_"
                       + os.environ.get("FAKE_GPU_PERF_LEVEL", "AUTO")} for i in wanted(args)]))
        return 0
    if args[:1] == ["metric"]:
        print(shaped([metric(i) for i in range(count())]))
        return 0
    if args[:1] == ["static"]:
        print(shaped([static(i) for i in range(count())]))
        return 0
    if args[:1] == ["list"]:
        if "-e" in args and old:
            print("amd-smi list: error: unrecognized arguments: -e", file=sys.stderr)
            return 2
        print(shaped([listed(i, "-e" in args) for i in range(count())]))
        return 0
    if args[:1] == ["firmware"]:
        print(shaped([{"gpu": i, "fw_list": [{"fw_id": "CP_MEC1", "fw_version": "MADE-UP.1"},
                                             {"fw_id": "PSP_SOSDRV", "fw_version": "MADE-UP.2"}]}
                      for i in range(count())]))
        return 0
    if args[:1] == ["version"]:
        print("AMDSMI Tool: 26.0.0+eaa54ecc | AMDSMI Library version: 26.0.0 | "
              "ROCm version: 7.0.0 | amdgpu version: 6.12.12 | amd_hsmp version: N/A")
        return 0
    if args[:1] == ["monitor"]:
        return monitor(args)
    print(f"amd-smi double: unsupported arguments {args}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
