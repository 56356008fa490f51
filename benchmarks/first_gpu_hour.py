"""The first hour on an MI300X host (under 10 minutes): what the next GPU fix needs to know.

Nothing of the GPU path has run on a GPU yet. This script runs each part once, times it,
and keeps every raw output, so whatever does not behave as rehearsed comes back as test data:

1. doctor: every check of `pytest-mi300x doctor`, with the build.
2. smi: the real outputs of amd-smi (static, list -e, firmware, version, metric, the
   violation counters, perf level, process, a few seconds of `monitor -w 1`), rocm-smi,
   rocminfo and the KFD topology, each saved with its wall time and exit code, and what the
   harness's parsers make of them (smi/parsed.json).
3. numbering: for each GPU, a container started with the project's docker flags and
   ROCR_VISIBLE_DEVICES=<the UUID a lease would give> runs rocminfo: does it see that GPU?
4. image: the build pulled and identified by digest, its env, its --help flags and env table.
5. server: one TP-8 server with --load-format dummy and chunked prefill off, confirmed from
   its config line, then a short burst with GPU telemetry (monitor and violation counters),
   on the host's network; 6. the same burst on a server published with `-p` (bridge).

    python benchmarks/first_gpu_hour.py --vllm-build=docker:rocm/vllm:<tag> --out first-hour/

Writes OUT/report.md (one line per step) and OUT/report.json; exit 0 when every step ran.
The image is pulled by step 4: pull it beforehand (`docker pull`) to stay within 10 minutes.
Steps left when the budget (--budget-s) is spent are reported as not run.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from pytest_mi300x.config import Settings
from pytest_mi300x.doctor import describe, run_checks
from pytest_mi300x.engines.builds import resolve_gpu_build
from pytest_mi300x.engines.docker import ROCM_DEVICE_ARGS, Dockerized, _docker
from pytest_mi300x.engines.flags import FlagSet
from pytest_mi300x.engines.registry import kind
from pytest_mi300x.engines.vllm import VLLMEngine
from pytest_mi300x.gpus.discovery import (
    AMD_LIST,
    AMD_LIST_OLD,
    AMD_METRIC,
    AMD_PROCESS,
    ROCM_METRIC,
)
from pytest_mi300x.gpus.identity import (
    AMD_FIRMWARE,
    AMD_PERF_LEVEL,
    AMD_STATIC,
    AMD_VERSION,
    ROCM_STATIC,
    read_identity,
)
from pytest_mi300x.gpus.monitor import monitor_argv, parse_monitor
from pytest_mi300x.gpus.numbering import KFD_NODES, numbering, read_kfd_topology
from pytest_mi300x.gpus.smi_text import records
from pytest_mi300x.gpus.violations import AMD_VIOLATIONS, parse_violations
from pytest_mi300x.hosts.profile import HostProfile
from pytest_mi300x.hosts.toml import select_host
from pytest_mi300x.servers.shared import read_report

SMI_COMMANDS: dict[str, Sequence[str]] = {
    "amd-smi-static.json": AMD_STATIC,
    "amd-smi-static-plain.txt": ("amd-smi", "static"),
    "amd-smi-list-e.json": AMD_LIST,
    "amd-smi-list.json": AMD_LIST_OLD,
    "amd-smi-firmware.json": AMD_FIRMWARE,
    "amd-smi-version.txt": AMD_VERSION,
    "amd-smi-metric.json": AMD_METRIC,
    "amd-smi-metric-throttle.json": AMD_VIOLATIONS,
    "amd-smi-metric-throttle-plain.txt": ("amd-smi", "metric", "--throttle"),
    "amd-smi-metric-perf-level.json": AMD_PERF_LEVEL,
    "amd-smi-process.json": AMD_PROCESS,
    "rocm-smi-identity.json": ROCM_STATIC,
    "rocm-smi-metric.json": ROCM_METRIC,
    "rocminfo.txt": ("rocminfo",),
}
_UUID = re.compile(r"^\s*Uuid:\s+(GPU-\S+)", re.MULTILINE)


def timed_run(argv: Sequence[str], timeout: float = 60.0) -> dict[str, Any]:
    """Run a tool; its output, exit code and wall time, whatever happens."""
    started = time.monotonic()
    try:
        proc = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL, check=False)
        out = {"stdout": proc.stdout, "stderr": proc.stderr, "rc": proc.returncode}
    except FileNotFoundError:
        out = {"stdout": "", "stderr": f"{argv[0]} not found", "rc": None}
    except subprocess.TimeoutExpired as exc:
        out = {"stdout": str(exc.stdout or ""), "stderr": f"timed out after {timeout:.0f} s",
               "rc": None}
    return {**out, "argv": list(argv), "seconds": round(time.monotonic() - started, 3)}


def smi_step(out: Path, monitor_s: float = 5.0, kfd: Path = KFD_NODES,
             run: Callable[[Sequence[str]], dict[str, Any]] = timed_run) -> dict[str, Any]:
    """Every GPU tool output the harness reads, saved raw with its timing, and parsed."""
    folder = out / "smi"
    folder.mkdir(parents=True, exist_ok=True)
    timings: dict[str, Any] = {}
    for name, argv in SMI_COMMANDS.items():
        got = run(argv)
        (folder / name).write_text(got["stdout"] + (f"\n# stderr:\n{got['stderr']}"
                                                    if got["stderr"] else ""))
        timings[name] = {k: got[k] for k in ("argv", "rc", "seconds")}
    started, argv, rc = time.monotonic(), monitor_argv([], 1.0), None
    try:
        monitor = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                   text=True)
        try:
            text, _ = monitor.communicate(timeout=monitor_s)
        except subprocess.TimeoutExpired:
            monitor.terminate()
            text, _ = monitor.communicate()
        rc = monitor.returncode
    except OSError as exc:
        text = f"# {argv[0]}: {exc.strerror}"
    (folder / "amd-smi-monitor.txt").write_text(text)
    timings["amd-smi-monitor.txt"] = {"argv": argv, "rc": rc,
                                      "seconds": round(time.monotonic() - started, 3)}
    if kfd.is_dir():
        shutil.copytree(kfd, folder / "kfd-topology", dirs_exist_ok=True,
                        ignore=lambda d, names: [n for n in names if n not in ("properties",)
                                                 and not n.isdigit()])
    return {"timings": timings, "parsed": parse_saved(folder, kfd)}


def parse_saved(folder: Path, kfd: Path) -> dict[str, Any]:
    """What the harness's parsers make of the saved outputs (an error is recorded)."""
    def attempt(fn: Callable[[], Any]) -> Any:
        try:
            return fn()
        except Exception as exc:  # noqa: BLE001 - the next fix needs the error itself
            return {"error": f"{type(exc).__name__}: {exc}"}

    def saved(argv: Sequence[str], _timeout: float) -> str:
        from pytest_mi300x.gpus.smi import GpuToolError

        name = next((n for n, a in SMI_COMMANDS.items() if tuple(a) == tuple(argv)), None)
        text = (folder / name).read_text().split("\n# stderr:\n")[0] if name else ""
        if not text.strip():
            raise GpuToolError(f"`{' '.join(argv)}` printed nothing (see its saved file)")
        return text

    return {
        "identity": attempt(lambda: read_identity("mi300x", saved, 0, kfd).fingerprint()),
        "numbering": attempt(lambda: numbering(
            records((folder / "amd-smi-list-e.json").read_text()), read_kfd_topology(kfd))
            .__dict__),
        "violations": attempt(lambda: {g: v.__dict__ for g, v in parse_violations(
            (folder / "amd-smi-metric-throttle.json").read_text()).items()}),
        "monitor_rows": attempt(lambda: [s.describe() for s in parse_monitor(
            (folder / "amd-smi-monitor.txt").read_text().splitlines())][:16]),
    }


def numbering_step(image: str, visible: dict[int, str],
                   run: Callable[[Sequence[str]], str] = _docker) -> dict[str, Any]:
    """For each GPU: does a container told ROCR_VISIBLE_DEVICES=<id> see that GPU alone?"""
    seen: dict[str, Any] = {}
    for gpu, rocr_id in sorted(visible.items()):
        try:
            text = run(["docker", "run", "--rm", *ROCM_DEVICE_ARGS, "-e",
                        f"ROCR_VISIBLE_DEVICES={rocr_id}", "--entrypoint", "rocminfo", image])
            uuids = _UUID.findall(text)
            seen[str(gpu)] = {"asked": rocr_id, "seen": uuids,
                              "ok": uuids == [rocr_id] if rocr_id.startswith("GPU-")
                              else len(uuids) == 1}
        except Exception as exc:  # noqa: BLE001 - recorded for the next fix
            seen[str(gpu)] = {"asked": rocr_id, "error": str(exc), "ok": False}
    return {"gpus": seen, "ok": bool(seen) and all(v["ok"] for v in seen.values())}


def image_step(host: HostProfile, build: str) -> dict[str, Any]:
    """The build as the harness resolves it: digest, env, version, flags, env table."""
    built = resolve_gpu_build("vllm", build, host)
    inner = built.engine.inner if isinstance(built.engine, Dockerized) else built.engine
    facts: dict[str, Any] = {"provenance": built.provenance, "version": built.version}
    if isinstance(inner, VLLMEngine):
        flags, table = inner.flags(), inner.env_table()
        facts["help_flags"] = sorted(flags) if isinstance(flags, frozenset) else str(flags)
        facts["env_table"] = ({"names": sorted(table.names), "runs_v1": table.runs_v1}
                              if not isinstance(table, Exception) else str(table))
    return facts


def server_step(host: HostProfile, build: str, out: Path, tp: int, network: str,
                prompts: int, input_len: int, output_len: int) -> dict[str, Any]:
    """One server of ``tp`` GPUs, random weights, chunked prefill off (confirmed from its
    config line), and a burst with telemetry, as the suite's own session runs them."""
    from pytest_mi300x.session import PerfSession
    from pytest_mi300x.workload.arrivals import Arrivals
    from pytest_mi300x.workload.datasets import RandomDataset
    from pytest_mi300x.workload.workload import Workload

    here = replace(host, dummy_weights=True, docker=replace(host.docker, network=network))
    flags = FlagSet.of(f"first-hour-{network}", enable_chunked_prefill=False,
                       tensor_parallel_size=tp)
    settings = Settings(gpu_host=host.name, vllm_build=build, results_dir=out / network,
                        run_id=f"first-hour-{network}", repeats=1,
                        baselines_dir=out / "no-baselines")
    with PerfSession(settings, here, out / network) as session:
        [server] = session.servers("vllm", "llama-3.1-70b", flags)
        report = read_report(kind("vllm"), server.process.log_path)
        started = time.monotonic()
        result = session.measurer(server, f"first-gpu-hour::{network}", "llama-3.1-70b").run(
            Workload(RandomDataset(input_len=input_len, output_len=output_len,
                                   num_prompts=prompts, seed=0), Arrivals()))
        return {"startup_s": server.process.startup_s, "argv": server.describe()["argv"],
                "config_line": {k: report.get(k) for k in ("enable_chunked_prefill",
                                                           "tensor_parallel_size",
                                                           "load_format")},
                "chunked_prefill_off_confirmed": report.get("enable_chunked_prefill") == "False",
                "burst_s": round(time.monotonic() - started, 1),
                "figures": {k: result.figures.get(k) for k in
                            ("request_throughput", "median_ttft_ms", "mean_tpot_ms", "failed")},
                "result": str(result.path)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--vllm-build", required=True, help="docker:IMAGE (or a venv path)")
    p.add_argument("--gpu-host", default="mi300x-01")
    p.add_argument("--hosts-file", type=Path, default=Path("hosts.toml"))
    p.add_argument("--out", type=Path, default=Path("first-gpu-hour"))
    p.add_argument("--tp", type=int, default=None, help="GPUs of the server (default: the "
                                                        "host's tensor_parallel)")
    p.add_argument("--num-prompts", type=int, default=64)
    p.add_argument("--input-len", type=int, default=256)
    p.add_argument("--output-len", type=int, default=128)
    p.add_argument("--monitor-s", type=float, default=5.0)
    p.add_argument("--budget-s", type=float, default=600.0)
    args = p.parse_args(argv)
    host = select_host(args.gpu_host, args.hosts_file)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    started, steps = time.monotonic(), []
    image = args.vllm_build.removeprefix("docker:") if args.vllm_build.startswith("docker:") \
        else None
    context: dict[str, Any] = {}

    def step(name: str, fn: Callable[[], Any]) -> None:
        if time.monotonic() - started > args.budget_s:
            steps.append({"step": name, "status": "not run",
                          "why": f"over the {args.budget_s:.0f} s budget"})
            return
        t0 = time.monotonic()
        try:
            data = fn()
            steps.append({"step": name, "status": "ran", "seconds": round(time.monotonic() - t0,
                                                                          1), "data": data})
        except Exception as exc:  # noqa: BLE001 - every failure is a finding to keep
            steps.append({"step": name, "status": "failed", "seconds":
                          round(time.monotonic() - t0, 1), "error": f"{type(exc).__name__}: "
                          f"{exc}", "traceback": traceback.format_exc()[-4000:]})

    step("doctor", lambda: describe(run_checks(host, args.vllm_build)))
    step("smi", lambda: context.setdefault("smi", smi_step(out, args.monitor_s)))
    step("image", lambda: context.setdefault("image", image_step(host, args.vllm_build)))
    ref = str(context.get("image", {}).get("provenance", {}).get("reference") or image or "")
    visible = (context.get("smi", {}).get("parsed", {}).get("numbering", {}) or {}).get(
        "visible", {})
    if ref:
        step("numbering", lambda: numbering_step(ref, {int(k): v for k, v in visible.items()}))
    tp = args.tp or host.tensor_parallel
    for network in ("host", "bridge"):
        step(f"server-{network}", lambda n=network: server_step(  # type: ignore[misc]
            host, args.vllm_build, out, tp, n, args.num_prompts, args.input_len,
            args.output_len))
    report = {"host": host.name, "build": args.vllm_build, "seconds":
              round(time.monotonic() - started, 1), "steps": steps}
    (out / "report.json").write_text(json.dumps(report, indent=2, default=str))
    lines = [f"# First GPU hour: {host.name}, {args.vllm_build}, "
             f"{report['seconds']} s", ""]
    for s in steps:
        lines.append(f"- {s['step']}: {s['status']}"
                     + (f" in {s['seconds']} s" if "seconds" in s else "")
                     + (f": {s.get('error') or s.get('why')}" if s["status"] != "ran" else ""))
    (out / "report.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0 if all(s["status"] == "ran" for s in steps) else 1


if __name__ == "__main__":
    sys.exit(main())
