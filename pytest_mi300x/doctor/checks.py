"""The host's checks. Each gives one Check: ok, fail (with the fix) or skip (does not
apply here, said why)."""

from __future__ import annotations

import os
from pathlib import Path

from pytest_mi300x.doctor.base import CPU_HOST_FREE_GB, Check, Facts, Tools, fail, ok, skip
from pytest_mi300x.engines.cache import default_cache_dir
from pytest_mi300x.engines.docker import ROCM_DEVICE_ARGS, DockerError
from pytest_mi300x.gpus.discovery import vendor
from pytest_mi300x.gpus.identity import HostGpus
from pytest_mi300x.gpus.smi import GpuToolError
from pytest_mi300x.hosts.fingerprint import numa_balancing
from pytest_mi300x.hosts.profile import HostProfile


def check_gpus(host: HostProfile, facts: Facts) -> Check:
    if not host.has_gpus:
        return skip("gpus", "cpu host: no GPUs to check")
    gpus = facts.gpus
    if isinstance(gpus, GpuToolError):
        return fail("gpus", f"no GPU tool answered ({gpus})",
                    "install amd-smi (ROCm 6.3+) and check the amdgpu driver is loaded "
                    "(`amd-smi list`)")
    found = (f"{len(gpus.gpus)} x {'/'.join(map(str, gpus.values('model'))) or '?'} "
             f"{'/'.join(map(str, gpus.values('gfx'))) or 'gfx?'} ({gpus.tool})")
    if len(gpus.gpus) != host.accelerator_count:
        return fail("gpus", f"{found}; the profile says {host.accelerator_count}",
                    f"set accelerator_count = {len(gpus.gpus)} in {host.source}, or bring "
                    "the missing GPUs back (a partition mode other than SPX multiplies them)")
    archs = gpus.values("gfx")
    if host.gfx and archs != [host.gfx]:
        return fail("gpus", f"{found}; the profile says {host.gfx}",
                    f"run on a {host.gfx} host or set gfx in {host.source}")
    return ok("gpus", found)


def _answered(name: str, host: HostProfile, facts: Facts, cpu_why: str) -> HostGpus | Check:
    """The GPU tool's answer, or the skip of a check that needs one (check_gpus fails for
    a tool that did not answer; the others only point there)."""
    if not host.has_gpus:
        return skip(name, cpu_why)
    if isinstance(facts.gpus, GpuToolError):
        return skip(name, "no GPU tool answered (see gpus)")
    return facts.gpus


def check_partitions(host: HostProfile, facts: Facts) -> Check:
    gpus = _answered("partitions", host, facts, "cpu host: no GPU partitions")
    if isinstance(gpus, Check):
        return gpus
    wanted = {"compute_partition": host.checks.compute_partition,
              "memory_partition": host.checks.memory_partition}
    found = {k: gpus.values(k) for k in wanted}
    text = "/".join(",".join(map(str, v)) or "?" for v in found.values())
    wrong = [f"{k} {','.join(map(str, found[k])) or 'unknown'} (profile: {w})"
             for k, w in wanted.items() if w is not None and found[k] != [w]]
    if wrong:
        return fail("partitions", "; ".join(wrong),
                    f"sudo amd-smi set --compute-partition {wanted['compute_partition'] or 'SPX'}"
                    f" / --memory-partition {wanted['memory_partition'] or 'NPS1'} (then "
                    "reload the driver), or change [checks] in the profile")
    required = "" if any(wanted.values()) else " (the profile requires none)"
    return ok("partitions", f"{text}{required}")


def check_numa(host: HostProfile, tools: Tools) -> Check:
    value = numa_balancing(tools.numa_path)
    wanted = host.checks.numa_balancing
    if value is None:
        if wanted:
            return fail("numa_balancing", f"{tools.numa_path} is not readable",
                        "run on a kernel with NUMA balancing, or drop checks.numa_balancing")
        return ok("numa_balancing", f"{tools.numa_path} absent: the kernel does no balancing")
    if wanted is not None and value != str(wanted):
        return fail("numa_balancing", f"{value}; the profile asks {wanted} (ROCm's MI300X "
                                      "guide: otherwise the GPU may hang until a balancing "
                                      "pass ends)",
                    f"sudo sysctl -w kernel.numa_balancing={wanted} (and in /etc/sysctl.d "
                    "to keep it)")
    return ok("numa_balancing", value + ("" if wanted is not None
                                         else " (the profile requires nothing)"))


def check_power(host: HostProfile, facts: Facts) -> Check:
    gpus = _answered("power", host, facts, "cpu host: no GPU power cap")
    if isinstance(gpus, Check):
        return gpus
    caps, levels = gpus.values("power_cap_w"), gpus.values("perf_level")
    found = (f"power cap {','.join(f'{c:g} W' for c in caps) or 'unknown'}, "
             f"perf level {','.join(levels) or 'unknown'}")
    wrong = []
    if host.checks.power_cap_w is not None and caps != [host.checks.power_cap_w]:
        wrong.append(f"cap should be {host.checks.power_cap_w:g} W")
    if host.checks.perf_level is not None and levels != [host.checks.perf_level]:
        wrong.append(f"perf level should be {host.checks.perf_level}")
    if wrong:
        return fail("power", f"{found}; {'; '.join(wrong)}",
                    "sudo amd-smi set --power-cap W / --perf-determinism SCLK (or "
                    "--perf-level AUTO), or change [checks] in the profile")
    return ok("power", found)


def check_identity(host: HostProfile, facts: Facts) -> Check:
    gpus = _answered("identity", host, facts, "cpu host: no GPU driver, ROCm or firmware")
    if isinstance(gpus, Check):
        return gpus
    fp = gpus.fingerprint()
    text = ", ".join(f"{k} {fp[k]}" for k in ("driver", "rocm", "vbios", "firmware")
                     if k in fp) or "nothing reported"
    mixed = [k for k in ("vbios", "driver") if len(gpus.values(k)) > 1]
    unread = f" (not read: {'; '.join(gpus.problems)[:160]})" if gpus.problems else ""
    if mixed:
        return fail("identity", f"{text}; GPUs differ in {', '.join(mixed)}{unread}",
                    "bring the GPUs to one VBIOS and driver: results of mixed GPUs compare "
                    "with no others")
    return ok("identity", f"{text} (recorded in every result's fingerprint){unread}")


def check_numbering(host: HostProfile, facts: Facts) -> Check:
    if not host.has_gpus or vendor(host.accelerator) == "cuda":
        return skip("numbering", "not a ROCm host")
    gpus = facts.gpus
    if isinstance(gpus, GpuToolError) or gpus.numbering is None:
        return skip("numbering", "no GPU tool answered (see gpus)")
    order = gpus.numbering
    differs = order.differs()
    mapping = (", ".join(f"{gpus.tool} {g} = ROCm {h}" for g, h in differs.items())
               if differs else f"{gpus.tool}'s order is ROCm's")
    if order.source.startswith("tool index"):
        return fail("numbering", f"{mapping}; no GPU UUID or ROCm order readable",
                    "install amd-smi 6.4+ (`amd-smi list -e`) or make "
                    "/sys/class/kfd/kfd/topology readable: leases would name GPUs by "
                    "amd-smi's index, which ROCm may number otherwise")
    return ok("numbering", f"by {order.source}; {mapping}")


def check_kfd(host: HostProfile, image: str | None, tools: Tools) -> Check:
    if not host.has_gpus or vendor(host.accelerator) == "cuda":
        return skip("kfd", "not a ROCm host")
    if host.launcher != "docker":
        if os.access("/dev/kfd", os.R_OK | os.W_OK):
            return ok("kfd", "/dev/kfd is readable and writable here")
        return fail("kfd", "/dev/kfd is not readable and writable by this user",
                    "add the user to the render and video groups (ROCm install guide)")
    if image is None:
        return skip("kfd", "no docker build given (--vllm-build docker:IMAGE) to start")
    try:
        tools.docker_run(["docker", "run", "--rm", *ROCM_DEVICE_ARGS, "--entrypoint", "sh",
                          image, "-c", "test -r /dev/kfd && test -w /dev/kfd"])
    except DockerError as exc:
        return fail("kfd", f"a container of {image} cannot use /dev/kfd ({exc})",
                    "check the docker group and that /dev/kfd and /dev/dri exist on the host")
    return ok("kfd", f"a container with the project's ROCm flags opens /dev/kfd ({image})")


def check_disk(host: HostProfile, tools: Tools) -> Check:
    if host.launcher == "docker":
        try:
            root = tools.docker_run(["docker", "info", "--format",
                                     "{{.DockerRootDir}}"]).strip()
        except DockerError as exc:
            return fail("disk", f"docker does not answer ({exc})",
                        "start the docker daemon and add this user to the docker group")
        places = [Path(root or "/var/lib/docker")]
        places += [Path(host.docker.cache_dir)] if host.docker.cache_dir else []
        need = host.docker.min_free_gb
    else:
        places, need = [tools.cache_dir or default_cache_dir()], CPU_HOST_FREE_GB
    short, seen = [], []
    for place in places:
        free = tools.free_bytes(place)
        seen.append(f"{place} {'?' if free is None else f'{free / 1e9:.0f} GB'} free")
        if free is not None and free < need * 1e9:
            short.append(str(place))
    if short:
        return fail("disk", f"{'; '.join(seen)}; needs {need:g} GB",
                    f"free space in {', '.join(short)} (docker image prune; old caches)")
    return ok("disk", "; ".join(seen))
