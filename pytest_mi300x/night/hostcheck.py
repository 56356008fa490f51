"""Is the host fit to measure tonight? A failed check makes the night ``infra``: the host,
not the build, and never a culprit search.

Cheapest first: free disk where the state and the engine cache live, a free loopback port;
then each build of the night made ready (a pip requirement installed into its cached venv
by ``pytest-mi300x provision``; an image pulled by ``docker pull``, by digest); then the
host doctor's checks (pytest_mi300x/doctor/: GPUs, partitions, NUMA balancing, power,
identity, numbering, what tonight's build reads, /dev/kfd in docker, disk), the same
``pytest-mi300x doctor`` runs. Every check is the doctor's ``Check``: one line with its fix.
"""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from pytest_mi300x.ab.builds import Build
from pytest_mi300x.doctor import Check, run_checks
from pytest_mi300x.doctor.base import fail, ok
from pytest_mi300x.hosts.profile import HostProfile
from pytest_mi300x.night.images import DOCKER_PREFIX

MIN_FREE_GB = 10.0

Runner = Callable[[list[str]], tuple[int, str]]
"""Runs a command: (exit code, its last output line)."""
Doctor = Callable[[HostProfile, str], Sequence[Check]]
"""The host doctor for (host, tonight's build): ``doctor.run_checks`` unless a test says."""


def run_quiet(cmd: list[str]) -> tuple[int, str]:
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, check=False,
                              timeout=3600)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return 1, str(exc)
    lines = (done.stderr or done.stdout).strip().splitlines()
    return done.returncode, lines[-1] if lines else ""


def install_command(build: Build) -> list[str]:
    """What makes ``build`` ready on this host: its image pulled, or its venv installed."""
    if build.engine_build.startswith(DOCKER_PREFIX):
        return ["docker", "pull", build.engine_build.removeprefix(DOCKER_PREFIX)]
    return [sys.executable, "-m", "pytest_mi300x.cli", "provision",
            f"--vllm-build={build.engine_build}"]


def disk(paths: list[Path], min_free_gb: float = MIN_FREE_GB) -> list[Check]:
    import shutil

    out = []
    for path in paths:
        probe = path
        while not probe.exists() and probe != probe.parent:
            probe = probe.parent
        free = shutil.disk_usage(probe).free / 1e9
        found = f"{path}: {free:.0f} GB free, {min_free_gb:g} GB needed"
        out.append(ok("night disk", found) if free >= min_free_gb else
                   fail("night disk", found, f"free space at {probe} (old engine builds: "
                                              "pytest-mi300x cache prune --limit SIZE)"))
    return out


def port() -> Check:
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", 0))
            return ok("loopback port", f"127.0.0.1:{sock.getsockname()[1]} free")
    except OSError as exc:
        return fail("loopback port", str(exc), "free a loopback port (pytest-mi300x clean)")


def installable(builds: list[Build], run: Runner = run_quiet) -> list[Check]:
    out = []
    seen: set[str] = set()
    for build in builds:
        if build.engine_build in seen:
            continue
        seen.add(build.engine_build)
        rc, last = run(install_command(build))
        out.append(ok("build ready", build.engine_build) if rc == 0 else
                   fail("build ready", f"{build.engine_build}: exit {rc}: {last}",
                        "see the install's output; a registry or index down is the host's"))
    return out


def checks(host: HostProfile, builds: list[Build], paths: list[Path],
           run: Runner = run_quiet, doctor: Doctor | None = None,
           min_free_gb: float = MIN_FREE_GB) -> list[Check]:
    """Every check of the host before a night, cheapest first; the installs only when the
    rest passed, the doctor (which asks tonight's build itself) only once they are ready.
    ``builds[0]`` is tonight's."""
    found = [*disk(paths, min_free_gb), port()]
    if not any(c.failed for c in found):
        found += installable(builds, run)
    if not any(c.failed for c in found):
        tonight = builds[0].engine_build if builds else None
        found += (doctor or _doctor)(host, tonight or "")
    return found


def _doctor(host: HostProfile, build: str) -> Sequence[Check]:
    return run_checks(host, build or None)
