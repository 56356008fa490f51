"""Test double for the `amd-smi` command: a fake GPU inventory in amd-smi's real JSON shapes.

Installed on PATH as `amd-smi` by tests that need GPUs on a machine without any.
It answers `metric ... --json` and `process --json` only.

env: FAKE_GPU_COUNT (default 2); FAKE_AMD_SMI_SHAPE = list | gpu_data (default
gpu_data: newer amd-smi); FAKE_GPU_HOLDERS = "GPU:PID:NAME,..." (processes shown
on GPUs, as another user's job would be); FAKE_GPU_UNHEALTHY = "GPU:ecc,GPU:hot" (a GPU
with uncorrectable ECC errors, or too hot before any load).
"""

from __future__ import annotations

import json
import os
import sys


def value(number: float, unit: str) -> dict[str, object]:
    return {"value": number, "unit": unit}


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
        "power": {"socket_power": value(131, "W"), "throttle_status": "UNTHROTTLED"},
        "clock": {"gfx_0": {"clk": value(132, "MHz"), "min_clk": value(500, "MHz"),
                            "max_clk": value(2100, "MHz"), "clk_locked": "N/A",
                            "deep_sleep": "ENABLED"}},
        "temperature": {"edge": "N/A",
                        "hotspot": value(104 if sick.get(str(index)) == "hot" else 35, "C"),
                        "mem": value(30, "C")},
        "mem_usage": {"total_vram": value(196592, "MB"), "used_vram": value(283, "MB"),
                      "free_vram": value(196309, "MB")},
    }


def processes(index: int, holders: list[tuple[int, int, str]]) -> dict[str, object]:
    mine = [{"process_info": {"name": name, "pid": pid,
                              "mem_usage": value(120 * 2**30, "B")}}
            for gpu, pid, name in holders if gpu == index]
    return {"gpu": index,
            "process_list": mine or [{"process_info": "No running processes detected"}]}


def main() -> int:
    count = int(os.environ.get("FAKE_GPU_COUNT", "2"))
    holders = [(int(g), int(p), n) for g, p, n in (
        h.split(":") for h in os.environ.get("FAKE_GPU_HOLDERS", "").split(",") if h)]
    if sys.argv[1:2] == ["process"]:
        print(json.dumps([processes(i, holders) for i in range(count)], indent=4))
        return 0
    if sys.argv[1:2] == ["metric"]:
        records = [metric(i) for i in range(count)]
        shape = os.environ.get("FAKE_AMD_SMI_SHAPE", "gpu_data")
        print(json.dumps({"gpu_data": records} if shape == "gpu_data" else records, indent=4))
        return 0
    print(f"amd-smi double: unsupported arguments {sys.argv[1:]}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
