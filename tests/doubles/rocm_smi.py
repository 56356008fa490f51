"""Test double for the `rocm-smi` command (the fallback on ROCm stacks without amd-smi):
MI300X cards in rocm-smi's real JSON key shapes (tests/data/smi/rocm-smi-*.json).

Installed on PATH as `rocm-smi` by tests that need GPUs on a machine without any. It
answers the metric query (`--showproductname --showuse --showmeminfo vram --showpower
--showtemp --json`), `--showpids --json`, `--showbus --json` and the identity query
(`--showproductname --showuniqueid --showbus --showvbios --showdriverversion
--showmaxpower --showcomputepartition --showmemorypartition --json`). Key names of the
last two follow rocm-smi's JSON as seen in users' pastes for "PCI Bus", "Max Graphics
Package Power (W)", "Card Series", "GFX Version"; "Unique ID", "VBIOS version", "Compute
Partition", "Memory Partition" and "Driver version" are NOT from a real paste.

env: FAKE_GPU_COUNT (default 2); FAKE_GPU_HOLDERS = "GPU:PID:NAME,..." (processes of
another user: rocm-smi lists them without their GPU, which shows 120 GiB of VRAM in use).
"""

from __future__ import annotations

import json
import os
import sys

VRAM_TOTAL = 206_141_652_992  # 192 GiB of HBM3
IDLE_USED = 283 * 2**20
HELD_USED = 120 * 2**30


def holders() -> list[tuple[int, int, str]]:
    return [(int(g), int(p), n) for g, p, n in (
        h.split(":") for h in os.environ.get("FAKE_GPU_HOLDERS", "").split(",") if h)]


def card(index: int, held: bool) -> dict[str, str]:
    return {
        "GPU use (%)": "0",
        "VRAM Total Memory (B)": str(VRAM_TOTAL),
        "VRAM Total Used Memory (B)": str(HELD_USED if held else IDLE_USED),
        "Card Series": "AMD Instinct MI300X",
        "Card Model": "0x74a1",
        "Card Vendor": "Advanced Micro Devices, Inc. [AMD/ATI]",
        "GFX Version": "gfx942",
        "Average Graphics Package Power (W)": "140.0",
        "Temperature (Sensor edge) (C)": "N/A",
        "Temperature (Sensor junction) (C)": "41.0",
        "Temperature (Sensor memory) (C)": "33.0",
    }


def main() -> int:
    args = sys.argv[1:]
    count = int(os.environ.get("FAKE_GPU_COUNT", "2"))
    held = holders()
    if "--json" not in args:
        print(f"rocm-smi double: only --json output, not {args}", file=sys.stderr)
        return 2
    if "--showpids" in args:
        if not held:
            print("WARNING: No JSON data to report")
            return 0
        print(json.dumps({"system": {f"PID{pid}": f"{name}, 1, {HELD_USED}, 0, unknown"
                                     for _, pid, name in held}}))
        return 0
    if "--showuniqueid" in args:
        print(json.dumps({**{f"card{i}": {
            **{k: v for k, v in card(i, False).items() if k in ("Card Series", "GFX Version")},
            "Unique ID": f"0x{0x5a1e_0000_0000_0000 + i * 0x1111:016x}",
            "PCI Bus": f"0000:{0x0c + i:02X}:00.0", "VBIOS version": "MADE-UP-VBIOS",
            "Max Graphics Package Power (W)": "750.0", "Compute Partition": "SPX",
            "Memory Partition": "NPS1"} for i in range(count)},
            "system": {"Driver version": "6.12.12"}}))
        return 0
    if args == ["--showbus", "--json"]:
        print(json.dumps({f"card{i}": {"PCI Bus": f"0000:{0x0c + i:02X}:00.0"}
                          for i in range(count)}))
        return 0
    if {"--showuse", "--showpower"} <= set(args):
        busy = {g for g, _, _ in held}
        print(json.dumps({f"card{i}": card(i, i in busy) for i in range(count)}))
        return 0
    print(f"rocm-smi double: unsupported arguments {args}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
