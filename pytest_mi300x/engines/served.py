"""What a session resolves before it launches a server: the model as served, the GPUs a
flag set leases, and secrets moved from engine flags to env."""

from __future__ import annotations

from dataclasses import dataclass
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


def gpus_needed(flag_set: FlagSet, host: HostProfile) -> int:
    """GPUs one server of ``flag_set`` leases: its tensor-parallel size, else the host's."""
    if not host.has_gpus:
        return 0
    value = flag_set.value(TP_FLAG)
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    return host.tensor_parallel


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
