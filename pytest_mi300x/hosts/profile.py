"""Host profiles: where engines run, with what env, at what workload scale.

The built-in ``cpu`` host (hosts/cpu.py) is this machine's CPU running the real vLLM
engine on a tiny model. Other hosts come from a ``hosts.toml`` file (hosts/toml.py).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pytest_mi300x.hosts.peaks import Peaks

TINY_MODEL = "tiny:llama"
"""Model reference that stands for the locally generated tiny Llama (random weights)."""

LAUNCHERS = ("local", "docker")
ACCELERATORS = ("cpu", "mi300x", "mi325x", "mi355x", "cuda")


class HostConfigError(Exception):
    """A host profile that cannot be used; the message is one line naming file, field and fix."""


@dataclass(frozen=True)
class WorkloadScale:
    """Factors that shrink a suite's full-size workload to what a host can carry."""

    prompts: float = 1.0
    rate: float = 1.0
    lengths: float = 1.0
    max_rate: float = math.inf
    """Scaled rates above this become a burst: the host's client cannot send them on schedule."""
    min_prompts: int = 1
    """Fewest prompts a scaled run keeps (never more than the suite asked for): below it a
    run is too short for its figures to be stable on this host."""

    def num_prompts(self, n: int) -> int:
        return min(n, max(self.min_prompts, round(n * self.prompts), 1))

    def request_rate(self, rate: float, *, burst_above_max: bool = True) -> float:
        if math.isinf(rate):
            return rate
        scaled = rate * self.rate
        return math.inf if burst_above_max and scaled > self.max_rate else scaled

    def length(self, n: int) -> int:
        return max(1, round(n * self.lengths))


@dataclass(frozen=True)
class DockerSettings:
    """A host's container settings (``[hosts.NAME.docker]`` in hosts.toml)."""

    shm_size: str = "16G"
    model_cache: str | None = None
    """Host folder of model weights, mounted read-only at the same path."""
    extra_args: tuple[str, ...] = ()
    network: str = "host"
    """"host" (the seed's, TGI's and ROCm's way: no proxy relaying every token) or
    "bridge" (the port published on 127.0.0.1)."""
    cache_dir: str | None = None
    """Host folder of the engines' compile and tuning caches, one sub-folder per image."""
    min_free_gb: float = 100.0
    """Free disk the doctor asks for in docker's data root and ``cache_dir``."""

    def describe(self) -> dict[str, Any]:
        return {"shm_size": self.shm_size, "model_cache": self.model_cache,
                "extra_args": list(self.extra_args), "network": self.network,
                "cache_dir": self.cache_dir}


@dataclass(frozen=True)
class HostChecks:
    """A host's required state; None: not required (still recorded)."""

    numa_balancing: int | None = None
    """/proc/sys/kernel/numa_balancing; ROCm's MI300X guide: 0, "otherwise the GPU might
    hang until the periodic balancing is finalized"."""
    compute_partition: str | None = None
    """SPX, DPX, QPX, CPX: how each GPU is split (a CPX GPU is 8 smaller GPUs)."""
    memory_partition: str | None = None
    """NPS1 or NPS4."""
    power_cap_w: float | None = None
    perf_level: str | None = None
    """The DPM performance level amd-smi reports ("auto", or "determinism" for
    ``amd-smi set --perf-determinism``)."""
    cooldown_s: float = 300.0
    """How long a server start waits for a GPU too hot to measure on to cool."""

    def describe(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if v is not None}


@dataclass(frozen=True)
class HostProfile:
    """One machine the suite can run on."""

    name: str
    accelerator: str
    accelerator_count: int
    launcher: str = "local"
    env: Mapping[str, str] = field(default_factory=dict)
    engine_args: tuple[str, ...] = ()
    models: Mapping[str, str] = field(default_factory=dict)
    scale: WorkloadScale = WorkloadScale()
    max_servers: int = 1
    start_timeout_s: float = 900.0
    floors: Mapping[str, float] = field(default_factory=dict)
    """Per-metric floor tolerances (percent) for this host's noise; ini and markers override."""
    burst_floors: Mapping[str, float] = field(default_factory=dict)
    """Floors over ``floors`` for workloads sent as one burst (rate inf), whose figures
    depend on how the server batches the burst; ini and markers still override."""
    noise: Mapping[str, float] = field(default_factory=dict)
    """Start-to-start noise per metric (percent: the CV of a server start's median), as
    measured on this host at its workload sizes: it lets a single start be judged."""
    burst_noise: Mapping[str, float] = field(default_factory=dict)
    """Over ``noise`` for workloads sent as one burst."""
    engine_nice: int = 10
    """Niceness of locally launched servers (their process group and autogroup), so the
    load generator sharing the machine is never queued behind them; 0 leaves them be."""
    frontend_cpus: int = 0
    """On a CPU host: how many of the machine's CPUs run the server's front end and the load
    client, the others being left to the engine's compute threads (hosts/placement.py);
    0 lets the OS place everything."""
    source: str = "built-in"
    tensor_parallel: int = 1
    """GPUs per server unless a flag set says ``tensor_parallel_size``."""
    dummy_weights: bool = False
    """Serve random weights (``--load-format dummy``): speed only, no download."""
    docker: DockerSettings = DockerSettings()
    lock_dir: str | None = None
    """Folder of the GPU lease locks (default $PYTEST_MI300X_LOCK_DIR or
    /tmp/pytest-mi300x-gpu-locks); every worker on the host must share it."""
    lease_timeout_s: float = 3600.0
    gfx: str | None = None
    description: str = ""
    peaks: Peaks | None = None
    """One accelerator's peak compute and bandwidth (hosts/peaks.py): the roofline workloads
    are checked against; None where there is none (the cpu host)."""
    checks: HostChecks = field(default_factory=lambda: HostChecks())
    """What the host must be before anything is measured (checked at the start of every
    session on it, and by ``pytest-mi300x doctor``)."""

    @property
    def has_gpus(self) -> bool:
        return self.accelerator != "cpu"

    def servers_at_once(self) -> int:
        """How many default-sized servers fit on the host's GPUs at the same time."""
        return max(1, self.accelerator_count // max(1, self.tensor_parallel))

    def resolve_model(self, logical: str) -> str:
        """What this host serves for a logical model name (``*`` is the fallback)."""
        if logical in self.models:
            return self.models[logical]
        if "*" in self.models:
            return self.models["*"]
        known = ", ".join(sorted(k for k in self.models if k != "*")) or "none"
        raise HostConfigError(
            f"{self.source}: host {self.name!r} has no model for {logical!r} "
            f"(known: {known}); add it under [hosts.{self.name}.models]"
        )

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "accelerator": self.accelerator,
            "accelerator_count": self.accelerator_count,
            "launcher": self.launcher,
            "env": dict(self.env),
            "engine_args": list(self.engine_args),
            "scale": {"prompts": self.scale.prompts, "rate": self.scale.rate,
                      "lengths": self.scale.lengths, "min_prompts": self.scale.min_prompts},
            "floors": dict(self.floors),
            "burst_floors": dict(self.burst_floors),
            "noise": dict(self.noise),
            "burst_noise": dict(self.burst_noise),
            "engine_nice": self.engine_nice,
            "frontend_cpus": self.frontend_cpus,
            "source": self.source,
            **({"gfx": self.gfx, "tensor_parallel": self.tensor_parallel,
                "dummy_weights": self.dummy_weights, "docker": self.docker.describe(),
                "checks": self.checks.describe()}
               if self.has_gpus else {}),
            **({"roofline": self.peaks.describe()} if self.peaks is not None else {}),
        }
