"""``amd-smi monitor -w 1``: one long-lived process printing a table row per GPU every
interval, instead of a full ``amd-smi metric --json`` of every GPU spawned every second
(what amd-smi's maintainers advise for polling). Its plain table is parsed (the tests read
real tables from amd-smi's changelog and a maintainer's paste): a header line of column
names, then rows whose values carry units ("202 W", "46 °C", "0.3/192.0 GB", "N/A").
Column names changed between releases (GPU_TEMP / GPU_T, GFX_UTIL / GFX%); both are read.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import IO

from pytest_mi300x.gpus.smi import GpuSample, mib, number

UNITS = frozenset({"W", "°C", "C", "MHz", "%", "MB", "GB", "Mb/s", "GT/s", "mV", "J"})
COLUMNS = {
    "POWER": "power_w", "GPU_T": "temp_c", "GPU_TEMP": "temp_c",
    "GFX_CLK": "gfx_clock_mhz", "GFX_CLOCK": "gfx_clock_mhz",
    "GFX%": "util_pct", "GFX_UTIL": "util_pct",
}
THERMAL_COLUMNS = ("TVIOL", "PHOT_TVIOL", "VR_TVIOL", "HBM_TVIOL")


def monitor_argv(indices: Sequence[int], interval_s: float, violations: bool = True
                 ) -> list[str]:
    """Power, temperature, gfx use and clock, VRAM and (ROCm 6.3+) violation shares."""
    return ["amd-smi", "monitor", "-w", f"{max(1, round(interval_s))}", "-p", "-t", "-u",
            "-v", *(["--violation"] if violations else []),
            *(["-g", *(str(i) for i in indices)] if indices else [])]


def split_values(line: str) -> list[str]:
    """A row's values: a number and its unit are one value, as is "0.5/ 24.0 GB"."""
    tokens, values, i = line.split(), [], 0
    while i < len(tokens):
        value = tokens[i]
        if value.endswith("/") and i + 1 < len(tokens):
            value += tokens[i + 1]
            i += 1
        if i + 1 < len(tokens) and tokens[i + 1] in UNITS:
            value += " " + tokens[i + 1]
            i += 1
        values.append(value)
        i += 1
    return values


def _vram(value: str) -> tuple[float | None, float | None]:
    """"0.3/192.0 GB" -> (used, total) in MiB."""
    amounts, _, unit = value.partition(" ")
    used, _, total = amounts.partition("/")
    return (mib({"value": number(used), "unit": unit or "MB"}) if number(used) is not None
            else None,
            mib({"value": number(total), "unit": unit or "MB"}) if number(total) is not None
            else None)


def parse_row(header: Sequence[str], line: str) -> GpuSample | None:
    values = split_values(line)
    if len(values) != len(header) or "GPU" not in header:
        return None
    row = dict(zip(header, values, strict=True))
    index = number(row["GPU"])
    if index is None:
        return None
    fields: dict[str, object] = {c: number(row[k]) for k, c in COLUMNS.items() if k in row}
    if "VRAM_USAGE" in row:
        fields["vram_used_mib"], fields["vram_total_mib"] = _vram(row["VRAM_USAGE"])
    for key, name in (("VRAM_USED", "vram_used_mib"), ("VRAM_TOTAL", "vram_total_mib")):
        if key in row:
            fields[name] = mib({"value": number(row[key]), "unit": row[key].split()[-1]})
    thermal = [v for k in THERMAL_COLUMNS if k in row and (v := number(row[k])) is not None]
    if thermal:
        fields["thermal_violation_pct"] = max(thermal)
    if "PVIOL" in row:
        fields["power_violation_pct"] = number(row["PVIOL"])
    return GpuSample(index=int(index), **fields)  # type: ignore[arg-type]


def parse_monitor(lines: Iterable[str]) -> list[GpuSample]:
    """Every row of a monitor output (the header may repeat each interval)."""
    header: list[str] = []
    out = []
    for line in lines:
        tokens = line.split()
        if not tokens:
            continue
        if "GPU" in tokens and number(tokens[0]) is None:
            header = tokens
            continue
        sample = parse_row(header, line) if header else None
        if sample is not None:
            out.append(sample)
    return out


class MonitorStream:
    """``amd-smi monitor -w`` running in the background; ``batches`` collects (time, rows of
    one interval). Falls back to the same command without ``--violation`` (amd-smi before
    ROCm 6.3 has no such option) when the first one ends without a row."""

    def __init__(self, indices: Sequence[int], interval_s: float = 1.0, *,
                 argv: Callable[[bool], list[str]] | None = None,
                 fallback: Callable[[], list[GpuSample]] | None = None) -> None:
        self.argv = argv or (lambda violations: monitor_argv(indices, interval_s, violations))
        self.interval_s = interval_s
        self.fallback = fallback
        """Polled every interval when no monitor command gives a row."""
        self.batches: list[tuple[float, list[GpuSample]]] = []
        self.errors: list[str] = []
        self.command: list[str] = []
        self._proc: subprocess.Popen[str] | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._first_row = threading.Event()

    def __enter__(self) -> MonitorStream:
        self._thread = threading.Thread(target=self._run, name="mi300x-amd-smi-monitor",
                                        daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        # A run shorter than the monitor's first row (seconds, on a loaded host) still gets
        # that row: wait for it up to one interval more before stopping.
        if self._thread is not None and self._thread.is_alive():
            self._first_row.wait(self.interval_s + 1.0)
        self._stopping.set()
        proc = self._proc
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _run(self) -> None:
        for violations in (True, False):
            if self._stopping.is_set():
                return
            rows = self._follow(self.argv(violations))
            if rows or self._stopping.is_set():
                return
        if self.fallback is None:
            return
        self.command = ["(polling)"]
        while not self._stopping.is_set():
            try:
                self.batches.append((time.time(), self.fallback()))
                self._first_row.set()
            except Exception as exc:  # noqa: BLE001 - a hung or missing tool is recorded
                if len(self.errors) < 5:
                    self.errors.append(str(exc))
            self._stopping.wait(self.interval_s)

    def _follow(self, argv: list[str]) -> int:
        """Run ``argv`` until it ends or we stop; rows parsed."""
        self.command = argv
        try:
            proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, text=True,
                                    start_new_session=True)
        except OSError as exc:
            self.errors.append(f"{argv[0]}: {exc.strerror}")
            return 0
        self._proc = proc
        rows = self._read(proc.stdout) if proc.stdout is not None else 0
        code = proc.wait()
        if not self._stopping.is_set():
            self.errors.append(f"`{' '.join(argv)}` ended (exit {code}) after {rows} rows")
        return rows

    def _read(self, out: IO[str]) -> int:
        header: list[str] = []
        batch: list[GpuSample] = []
        rows = 0
        for line in out:
            tokens = line.split()
            if "GPU" in tokens and tokens and number(tokens[0]) is None:
                header = tokens
                continue
            sample = parse_row(header, line) if header else None
            if sample is None:
                continue
            rows += 1
            self._first_row.set()
            if any(s.index == sample.index for s in batch):
                self.batches.append((time.time(), batch))
                batch = []
            batch.append(sample)
        if batch:
            self.batches.append((time.time(), batch))
        return rows
