"""Is the host fit to measure tonight? A failure here makes the night ``infra``: the host,
not the build, and never a culprit search.

The checks that exist today: free disk where the state and the engine cache live, a free
loopback port, and each build of the night installable (a pip requirement installed into
its cached venv by ``pytest-mi300x provision``; an image pulled by ``docker pull``). The
``doctor`` command (the gpuhost branch) will add the GPU host's own checks: ``checks()`` is
the one place the night asks.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pytest_mi300x.ab.builds import Build
from pytest_mi300x.night.images import DOCKER_PREFIX

MIN_FREE_GB = 10.0


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str = ""

    def line(self) -> str:
        return f"{'ok' if self.ok else 'FAILED'}: {self.name}" + \
            (f" ({self.detail})" if self.detail else "")


Runner = Callable[[list[str]], tuple[int, str]]
"""Runs a command: (exit code, its last output line)."""


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
    out = []
    for path in paths:
        probe = path
        while not probe.exists() and probe != probe.parent:
            probe = probe.parent
        free = shutil.disk_usage(probe).free / 1e9
        out.append(Check(f"disk at {path}", free >= min_free_gb,
                         f"{free:.0f} GB free, {min_free_gb:g} GB needed"))
    return out


def port() -> Check:
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", 0))
            return Check("a free loopback port", True, f"127.0.0.1:{sock.getsockname()[1]}")
    except OSError as exc:
        return Check("a free loopback port", False, str(exc))


def installable(builds: list[Build], run: Runner = run_quiet) -> list[Check]:
    out = []
    seen: set[str] = set()
    for build in builds:
        if build.engine_build in seen:
            continue
        seen.add(build.engine_build)
        rc, last = run(install_command(build))
        out.append(Check(f"{build.engine_build} installable", rc == 0,
                         "" if rc == 0 else f"exit {rc}: {last}"))
    return out


def checks(builds: list[Build], paths: list[Path], run: Runner = run_quiet,
           min_free_gb: float = MIN_FREE_GB) -> list[Check]:
    """Every check of the host before a night, cheapest first; the install only when the
    rest passed."""
    found = [*disk(paths, min_free_gb), port()]
    if all(c.ok for c in found):
        found += installable(builds, run)
    return found
