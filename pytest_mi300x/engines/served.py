"""What a session resolves before it launches a server: the model as served, the GPUs a
flag set leases, and secrets moved from engine flags to env."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any

from pytest_mi300x.engines.flags import FlagSet
from pytest_mi300x.hosts.profile import HostProfile
from pytest_mi300x.results import redact

TP_FLAG = "tensor_parallel_size"


SECRET_FLAGS = {"--hf-token": "HF_TOKEN"}
"""Engine flags that carry a secret, and the env var the engine reads it from instead: off
the command line, a token shows neither in `ps` nor in the engine's own log of its args."""


def secret_flags_to_env(args: tuple[str, ...]) -> tuple[tuple[str, ...], dict[str, str]]:
    """(args without secret flags, the env that carries them)."""
    kept: list[str] = []
    env: dict[str, str] = {}
    it = iter(args)
    for arg in it:
        flag, eq, value = arg.partition("=")
        if flag in SECRET_FLAGS:
            env[SECRET_FLAGS[flag]] = value if eq else next(it, "")
            redact.register(env[SECRET_FLAGS[flag]])
        else:
            kept.append(arg)
    return tuple(kept), env


def check_engine_args(args: Iterable[str], where: str) -> None:
    """Refuse what must not reach an engine's command line, naming ``where`` it came from:
    a flag the harness sets itself for any engine (engine args go to every engine: where
    the server listens, its key), in any spelling an argparse parser takes (``--host=X``,
    the abbreviation ``--ho X``), and a secret flag no env var can carry (the command line
    shows in `ps`)."""
    from pytest_mi300x.engines.registry import ENGINES

    owned_flags = sorted({f"--{name}" for kind in ENGINES.values() for name in kind.owned_flags})
    for arg in args:
        flag = arg.partition("=")[0]
        if not flag.startswith("--"):
            continue
        taken = next((name for name in owned_flags if len(flag) > 3 and name.startswith(flag)),
                     None)
        if taken:
            raise ValueError(f"{where}: {flag} sets the server's {taken}, which the harness "
                             "sets itself (servers listen on 127.0.0.1, on a free port, behind "
                             "the session's API key); remove it")
        if redact.secret_flag(flag) and flag not in SECRET_FLAGS:
            raise ValueError(f"{where}: {flag} takes a secret, which on the engine's command "
                             "line shows in `ps` and in the engine's log of its arguments; "
                             "give it through the env var the engine reads instead "
                             "(--engine-env NAME=VALUE)")


def gpus_needed(flag_set: FlagSet, host: HostProfile) -> int:
    """GPUs one server of ``flag_set`` leases: its tensor-parallel size, else the host's."""
    if not host.has_gpus:
        return 0
    value = flag_set.value(TP_FLAG)
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    return host.tensor_parallel


def at_tensor_parallel(flag_set: FlagSet, tp: int | None, host: HostProfile) -> FlagSet:
    """The flag set a test runs with on ``host``: on a GPU host, with ``tensor_parallel_size``
    set to the test's own ``tp`` (its ``tensor_parallel`` marker: the seed's TP for the case)
    when the set gives none; as it is on a host without GPUs (nothing to split a model
    across) or without a test TP (the host's ``tensor_parallel`` applies)."""
    if tp is None or not host.has_gpus or flag_set.value(TP_FLAG) is not None:
        return flag_set
    return replace(flag_set, flags=(*flag_set.flags, (TP_FLAG, tp)))


@dataclass(frozen=True)
class ServedModel:
    """A logical model name resolved on a host: what the engine loads and its tokenizer facts."""

    logical: str
    ref: str
    path: str
    vocab_size: int
    special_ids: frozenset[int]
    dummy_weights: bool = False
    """Served with random weights (the engine kind's ``random_weights_args``): speed only,
    its answers mean nothing."""

    def describe(self) -> dict[str, Any]:
        return {"logical": self.logical, "ref": self.ref, "path": self.path,
                "vocab_size": self.vocab_size, "dummy_weights": self.dummy_weights}
