"""The one small Protocol every serving engine implements."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

from pytest_mi300x.engines.flags import FlagSet


@dataclass(frozen=True)
class LaunchSpec:
    """Everything one server start needs, engine-neutral."""

    model: str
    served_model_name: str
    host: str
    port: int
    api_key: str
    flag_set: FlagSet
    extra_args: tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    gpus_needed: int = 0
    """GPUs the server leases (tensor-parallel size); 0 on the CPU host."""
    gpus: tuple[int, ...] = ()
    """The physical GPUs leased for it, once leased."""

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"


class Engine(Protocol):
    """How to launch, probe and identify one serving engine."""

    @property
    def name(self) -> str:
        """Short engine name used in server keys and results (``vllm``, ``tgi``)."""
        ...

    def command(self, spec: LaunchSpec) -> list[str]:
        """The argv that starts a server for ``spec``."""
        ...

    def environment(self, spec: LaunchSpec) -> dict[str, str]:
        """Env added to the server process (secrets included; redact before recording)."""
        ...

    @property
    def exact_output_lengths(self) -> bool:
        """Whether it honours ``ignore_eos`` (so each request's output length is as asked)."""
        ...

    @property
    def health_path(self) -> str:
        """Path that answers 200 once the server takes requests."""
        ...

    def version(self, base_url: str, api_key: str) -> str:
        """The running server's own version string."""
        ...

    def skip_reason(self, flag_set: FlagSet, version: str) -> str | None:
        """Why this build cannot run ``flag_set`` (a flag it no longer has), else None."""
        ...
