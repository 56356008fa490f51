"""The one small Protocol every serving engine implements."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from pytest_mi300x.engines.flags import FlagSet, FlagValue

if TYPE_CHECKING:
    from pytest_mi300x.workload.datasets import Tokenizer


class EngineUnsupported(Exception):
    """An engine cannot do what a test asks on this host; the test skips with the reason."""


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
    engine_cpus: tuple[int, ...] = ()
    """On a CPU host, the CPUs the engine's compute threads are bound to (the front end
    and the client run on the others); () leaves it to the engine."""
    server_id: str = ""
    """Unique to this server start among every session on the host (the pool sets it):
    what outlives the process is named after it (a container)."""
    owner: str = ""
    """``PID:STARTTIME`` of the session process that starts the server (the pool sets it):
    a reaper tells an ended session's leftovers from a live one's by it."""
    nice: int = 0
    """How much the engine yields the CPU (the host's ``engine_nice``; the pool sets it):
    applied by the pool to a local process group, inside the container by the docker
    launcher (``Engine.applies_nice``)."""

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

    @property
    def cache_salt_field(self) -> str | None:
        """The request field that keys its prefix cache (vLLM's ``cache_salt``): requests
        with another value share no cached block, so a run under a new value starts from a
        cache that holds nothing of it (a "fresh run"); None when it has none."""
        ...

    def version(self, base_url: str, api_key: str) -> str:
        """The running server's own version string."""
        ...

    def skip_reason(self, flag_set: FlagSet, version: str) -> str | None:
        """Why this build cannot run ``flag_set`` (a flag it no longer has), else None."""
        ...

    @property
    def metric_series(self) -> Mapping[str, str]:
        """Its Prometheus /metrics series for the figures telemetry reports (figure -> name)."""
        ...

    def served_model_name(self, logical: str, model_path: str) -> str:
        """The name requests must give as ``model``."""
        ...

    def tokenizer(self, base_url: str, api_key: str, served_name: str, vocab_size: int,
                  special_ids: frozenset[int], model_path: str) -> Tokenizer:
        """Counts prompt tokens exactly as the running server does (raises EngineUnsupported
        when it cannot)."""
        ...

    @property
    def auth_probe(self) -> tuple[str, str]:
        """(method, path) of a request the server refuses without the session's API key:
        proof that the server answering on the port is the one we started."""
        ...

    def refusal(self, log_tail: str) -> str | None:
        """When a server would not start because this hardware cannot run what was asked
        (a feature the CPU lacks), the engine's reason: the test skips instead of failing."""
        ...

    def cleanup_argv(self, spec: LaunchSpec) -> list[str] | None:
        """A command that removes what outlives the server's process group (a container:
        ``docker rm -f NAME``), run after every stop and by the orphan reaper; None when
        stopping the process group is enough."""
        ...


@dataclass(frozen=True)
class BuiltEngine:
    """An engine ready to launch, with the version and provenance to record."""

    engine: Engine
    version: str
    provenance: dict[str, Any]
    python: Path | None = None
    """The engine's own interpreter, when it is installed on this machine."""
    release: Callable[[], None] = field(default=lambda: None, compare=False, repr=False)
    """Ends what the session holds while it uses the build (the engine cache's hold on its
    venv); the session calls it when it closes."""


class EngineKind(Protocol):
    """What the harness knows of an engine before any build of it is chosen: how users
    name its builds, and how to make a ready engine from an image or an install."""

    @property
    def name(self) -> str: ...

    @property
    def build_option(self) -> str:
        """The option that names its build (``--vllm-build``); also an ini key without dashes."""
        ...

    @property
    def build_example(self) -> str: ...

    @property
    def version_argv(self) -> tuple[str, ...]:
        """Run inside its image: prints the engine's version."""
        ...

    @property
    def version_path(self) -> str:
        """A GET path whose JSON answer has the running server's version under "version"
        (how an endpoint someone else runs is identified)."""
        ...

    @property
    def exact_output_lengths(self) -> bool:
        """Whether its servers honour ``ignore_eos`` (as Engine.exact_output_lengths)."""
        ...

    @property
    def cache_salt_field(self) -> str | None:
        """As Engine.cache_salt_field, known before a build is chosen (an endpoint)."""
        ...

    @property
    def metric_series(self) -> Mapping[str, str]:
        """Its /metrics series (as Engine.metric_series), known before a build is chosen."""
        ...

    @property
    def cpu_build(self) -> bool:
        """Whether the cpu host can provision and run it."""
        ...

    @property
    def owned_flags(self) -> frozenset[str]:
        """Flags (without dashes) the harness sets itself on its command line: where the
        server listens, its API key, what makes servers on one host unique. Neither a flag
        set nor ``--engine-arg`` may set them (the last of two wins)."""
        ...

    @property
    def random_weights_args(self) -> tuple[str, ...] | None:
        """Arguments that make it serve random weights (hosts with ``dummy_weights``, the
        tiny model); None when it cannot, so such hosts skip it."""
        ...

    @property
    def resolved_defaults(self) -> Mapping[str, FlagValue]:
        """Flags (cli names) and the value its builds run with when the flag is not given.
        A flag set that gives one of these values shares the server of the set without it,
        once that server's own report (``resolved_config``) shows the value."""
        ...

    def resolved_config(self, log_text: str) -> Mapping[str, str]:
        """The settings a started server reports running with (flag's setting name with
        underscores -> value as printed), read from its log; empty when it reports none."""
        ...

    def in_image(self, build: str, run: Callable[[Sequence[str]], str] | None = None,
                 cache_root: str | None = None) -> Engine:
        """The engine whose command runs inside a container of that image; ``run`` runs a
        command in the image (to ask the build what it reads), ``cache_root`` is where the
        container sees its cache folder (its compile and tuning caches go there)."""
        ...

    def from_path(self, build: str, path: Path) -> BuiltEngine:
        """The engine from an installed venv or launcher at ``path``."""
        ...

    def provision(self, build: str, cache_dir: Path | None,
                  progress: Callable[[str], None], cache_limit: int | None = None
                  ) -> BuiltEngine:
        """The engine installed from a build spec on the cpu host (``cpu_build`` only), held
        until its ``release``; ``cache_limit``: bytes the engine cache may take (others'
        builds are evicted to keep to it)."""
        ...

    def planned(self, build: str, cache_dir: Path | None) -> Engine:
        """The engine an installed build (a pip requirement or a path) would give, from its
        spec alone: nothing installed, inspected or run (``pytest-mi300x plan``)."""
        ...
