"""Flag sets: the engine settings a test runs under, as a mapping that becomes a command line."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pytest

FlagValue = bool | int | float | str | Sequence[str | int]

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.=+-]*$")
_FLAG = re.compile(r"^[a-z0-9][a-z0-9_-]*$")


@dataclass(frozen=True)
class FlagSet:
    """Named engine flags and env. ``True`` is a bare flag, ``False`` the ``--no-`` form."""

    name: str
    flags: tuple[tuple[str, FlagValue], ...] = ()
    env: tuple[tuple[str, str], ...] = ()
    unset: tuple[str, ...] = ()
    """Env vars the server must not get from the host profile or the harness's own env (an
    "engine without the host's tuning env" arm); an image's own ENV still applies."""

    def __post_init__(self) -> None:
        if not _NAME.match(self.name):
            raise ValueError(
                f"flag set name {self.name!r} is not a readable test id; "
                "use letters, digits and -_.=+"
            )
        for key, _ in self.flags:
            if not _FLAG.match(key):
                raise ValueError(
                    f"flag set {self.name!r}: flag {key!r} is not a flag name; "
                    "write it without dashes, e.g. max_num_seqs"
                )

    @classmethod
    def of(cls, name: str, env: Mapping[str, str] | None = None,
           unset: Sequence[str] = (), **flags: FlagValue) -> FlagSet:
        """Flag set from keywords: ``FlagSet.of("cp-off", enable_chunked_prefill=False)``."""
        return cls(name, tuple(flags.items()), tuple(sorted((env or {}).items())),
                   tuple(sorted(unset)))

    @property
    def flag_names(self) -> tuple[str, ...]:
        return tuple(cli_name(k) for k, _ in self.flags)

    def value(self, name: str) -> FlagValue | None:
        """The value of flag ``name`` (either spelling: ``max_num_seqs``, ``max-num-seqs``),
        None when the set leaves it to the engine."""
        wanted = cli_name(name)
        return next((v for k, v in self.flags if cli_name(k) == wanted), None)

    def to_argv(self) -> list[str]:
        """The command-line form of the flags."""
        argv: list[str] = []
        for key, value in self.flags:
            name = cli_name(key)
            if value is True:
                argv.append(f"--{name}")
            elif value is False:
                argv.append(f"--no-{name}")
            elif isinstance(value, str | int | float):
                argv += [f"--{name}", str(value)]
            else:
                argv += [f"--{name}", *(str(v) for v in value)]
        return argv

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "flags": {cli_name(k): _jsonable(v) for k, v in self.flags},
                "env": dict(self.env), "argv": self.to_argv(),
                **({"unset": list(self.unset)} if self.unset else {})}

    @property
    def digest(self) -> str:
        """Short hash of what is launched, so two sets with one name never share a server."""
        blob = json.dumps(self.describe(), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:10]

    def beyond(self, defaults: Mapping[str, FlagValue]) -> FlagSet:
        """The set without the flags whose value is the engine's own default (``defaults``:
        cli name -> the value its builds run with when the flag is not given): what a
        server for it has to be started with. Same name and env."""
        kept = tuple((k, v) for k, v in self.flags
                     if cli_name(k) not in defaults or defaults[cli_name(k)] != v)
        return FlagSet(self.name, kept, self.env, self.unset)

    @property
    def launch_label(self) -> str:
        """What a server of these flags and env is, readably, without the set's name: two
        sets that launch the same server get the same label."""
        parts = [*self.to_argv(), *(f"{k}={v}" for k, v in self.env),
                 *(f"no-{k}" for k in self.unset)]
        text = re.sub(r"[^A-Za-z0-9.=+]+", "-", " ".join(parts)).strip("-")
        blob = json.dumps([self.to_argv(), list(self.env),
                           *([list(self.unset)] if self.unset else [])]).encode()
        return f"{text[:48] or 'engine-defaults'}-{hashlib.sha256(blob).hexdigest()[:8]}"

    def __str__(self) -> str:
        return self.name


DEFAULT_FLAGS = FlagSet("default")
"""The engine's own defaults: no flags added."""


def cli_name(key: str) -> str:
    return key.replace("_", "-")


def _jsonable(value: FlagValue) -> Any:
    return value if isinstance(value, bool | int | float | str) else list(value)


def flag_sets(*sets: FlagSet) -> pytest.MarkDecorator:
    """Parametrize a test over flag sets with their names as test ids."""
    names = [s.name for s in sets]
    if len(set(names)) != len(names):
        raise ValueError(f"flag set names must be unique in one test: {names}")
    return pytest.mark.parametrize("flag_set", sets, ids=names)
