"""What a build reads, asked of the build itself: the long options its server's ``--help``
lists, and the env vars its ``vllm.envs`` table reads. Run in the build's own interpreter
(a venv) or its image (``docker run``), never the harness's python: a docker build's vLLM is
not on this machine.

Version numbers do not answer "does this build still have --flag": a per-commit build between
a flag's removal on main and the next release is ``0.11.0rc2.dev40``, which sorts before
``0.11.0``. The build's own ``--help`` is what it accepts.
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass

BuildRun = Callable[[Sequence[str]], str]
"""Runs an argv inside the build (``argv[0]`` is the build's own executable) and returns its
stdout; raises ProbeError when it cannot."""

PROBE_TIMEOUT_S = 600.0
_LONG_OPTION = re.compile(r"(?<![\w-])--([a-z0-9][a-z0-9-]*)")

ENV_SCRIPT = ("import json, vllm.envs as e; names = sorted(e.environment_variables); "
              "v1 = bool(e.VLLM_USE_V1) if 'VLLM_USE_V1' in names else None; "
              "print(json.dumps({'names': names, 'v1': v1}))")
"""vllm.envs lists every variable it reads; VLLM_USE_V1 (gone once V0 was removed, in 0.11)
says which engine runs when nothing selects one."""


class ProbeError(Exception):
    """The build could not be asked (missing interpreter, no docker, a crash); one line."""


def run_local(argv: Sequence[str]) -> str:
    """A local build: run its interpreter directly."""
    try:
        proc = subprocess.run(list(argv), capture_output=True, text=True,
                              timeout=PROBE_TIMEOUT_S, stdin=subprocess.DEVNULL, check=False)
    except (OSError, subprocess.SubprocessError) as exc:
        raise ProbeError(f"`{argv[0]}` could not run: {exc}") from None
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()
        raise ProbeError(f"`{' '.join(argv[:3])} ...` exited {proc.returncode}: "
                         f"{tail[-1] if tail else 'no output'}")
    return proc.stdout


def help_flags(text: str) -> frozenset[str]:
    """The long options (without dashes) an argparse ``--help`` lists; a boolean's
    ``--no-`` form is listed as such."""
    return frozenset(_LONG_OPTION.findall(text))


@dataclass(frozen=True)
class EnvTable:
    """The env vars a vLLM build reads, and whether it runs the V1 engine by default."""

    names: frozenset[str]
    v1: bool | None
    """VLLM_USE_V1's default where the build has that switch (0.7-0.10); None without it."""

    @property
    def runs_v1(self) -> bool:
        """Without the switch, a build that reads the V1-era ROCm switches (AITER) has no V0
        any more (0.11+); one that reads neither predates V1."""
        return self.v1 if self.v1 is not None else "VLLM_ROCM_USE_AITER" in self.names


def parse_env_table(text: str) -> EnvTable:
    try:
        doc = json.loads(text.strip().splitlines()[-1])
        return EnvTable(frozenset(str(n) for n in doc["names"]),
                        None if doc.get("v1") is None else bool(doc["v1"]))
    except (IndexError, ValueError, KeyError, TypeError):
        raise ProbeError(f"the build's vllm.envs answer is unreadable: {text.strip()[:120]!r}"
                         ) from None


_cache: dict[tuple[str, str], object] = {}


def asked(key: str, what: str, compute: Callable[[], object]) -> object:
    """Once per build (``key``: what identifies it, an image digest or an interpreter path)
    and question in this process: a build does not change while a session runs. A failure
    is kept too (the build is asked once)."""
    if (key, what) not in _cache:
        try:
            _cache[(key, what)] = compute()
        except ProbeError as exc:
            _cache[(key, what)] = exc
    return _cache[(key, what)]
