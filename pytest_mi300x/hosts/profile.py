"""Host profiles: where engines run, with what env, at what workload scale.

The built-in ``cpu`` host is this machine's CPU running the real vLLM engine on
a tiny model. Other hosts come from a ``hosts.toml`` file.
"""

from __future__ import annotations

import math
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from pytest_mi300x.engines.docker import DockerSettings

TINY_MODEL = "tiny:llama"
"""Model reference that stands for the locally generated tiny Llama (random weights)."""

LAUNCHERS = ("local", "docker")
ACCELERATORS = ("cpu", "mi300x", "mi325x", "mi355x", "cuda")


def sent_as_burst(workload: Mapping[str, Any] | None) -> bool:
    """Whether a described (scaled) workload went out as one burst: a host's
    ``burst_floors`` apply to its figures."""
    return (workload or {}).get("arrivals", {}).get("request_rate") == "inf"


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

    def num_prompts(self, n: int) -> int:
        return max(1, round(n * self.prompts))

    def request_rate(self, rate: float, *, burst_above_max: bool = True) -> float:
        if math.isinf(rate):
            return rate
        scaled = rate * self.rate
        return math.inf if burst_above_max and scaled > self.max_rate else scaled

    def length(self, n: int) -> int:
        return max(1, round(n * self.lengths))


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
    engine_nice: int = 10
    """Niceness of locally launched servers (their process group and autogroup), so the
    load generator sharing the machine is never queued behind them; 0 leaves them be."""
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
                      "lengths": self.scale.lengths},
            "floors": dict(self.floors),
            "burst_floors": dict(self.burst_floors),
            "engine_nice": self.engine_nice,
            "source": self.source,
            **({"gfx": self.gfx, "tensor_parallel": self.tensor_parallel,
                "dummy_weights": self.dummy_weights, "docker": self.docker.describe()}
               if self.has_gpus else {}),
        }


_THROUGHPUTS = ("request_throughput", "output_throughput", "total_token_throughput")

CPU_HOST = HostProfile(
    name="cpu",
    accelerator="cpu",
    accelerator_count=0,
    env=MappingProxyType({
        # 1 GiB of KV cache is ~0.5M tokens for the tiny model: plenty, and it
        # keeps several engine builds side by side within the machine's memory.
        "VLLM_CPU_KVCACHE_SPACE": "1",
        "HF_HUB_OFFLINE": "1",
        "VLLM_NO_USAGE_STATS": "1",
        "DO_NOT_TRACK": "1",
    }),
    engine_args=("--max-model-len", "2048"),
    models=MappingProxyType({"*": TINY_MODEL}),
    # The suites are written at MI300X size; two CPU cores carry a tenth of the
    # requests at a quarter of the rate and length.
    # The guide's QPS 1000 scales to 250 req/s, which a client sharing 2 cores with the
    # engine sent a median 81-96 ms late (an invalid run); it means "as fast as the
    # server takes them" anyway, so past 50 req/s the cpu host sends a burst.
    scale=WorkloadScale(prompts=0.1, rate=0.25, lengths=0.25, max_rate=50.0),
    max_servers=1,
    # Measured with `python benchmarks/detection_real.py --instances 5 --slowdown-env
    # VLLM_CPU_OMP_THREADS_BIND=nobind` on a quiet 2-core machine (one fresh server per
    # instance, 5 vs 3 runs; 20 A/A pairs): the spread is mostly between server
    # instances. Paced throughputs are mostly arrival-bound (QPS 16: CV 2%, no A/A
    # alarm at 5.6%), but a slow server fell 11% behind at QPS 32; 15% keeps a 30%
    # drop (a -23% shift) clearly past the floor. TTFT 40%: A/A alarms 2/20 at QPS 16
    # and 0/20 at QPS 1000, and the nobind slowdown's x1.8 TTFT at QPS 16 caught 24/25
    # (21/25 at 60%); QPS 16 latency medians alarmed 1-3 times in 20 at any floor up to
    # 60%. Checked again with `--instances 6` after engine_nice removed the client's
    # stalls: baselines of 3 server starts (what `baselines refresh` stores) against
    # each other start gave 0 A/A alarms in 60 for every gated metric at these floors.
    floors=MappingProxyType({
        **{f"median_{m}_ms": 60.0 for m in ("tpot", "itl", "e2el")},
        "median_ttft_ms": 40.0,
        **{m: 15.0 for m in _THROUGHPUTS},
    }),
    # A burst's throughput depends on how one server batches it: servers came up
    # fast or slow (38 vs 31 req/s across instances, CV 4.7% within one and 11.6%
    # between); 30% is the smallest floor with no A/A alarm in 20 pairs.
    burst_floors=MappingProxyType({m: 30.0 for m in _THROUGHPUTS}),
)

BUILTIN_HOSTS: Mapping[str, HostProfile] = MappingProxyType({"cpu": CPU_HOST})

_FIELDS = {"accelerator", "accelerator_count", "launcher", "env", "engine_args", "models",
           "scale", "max_servers", "start_timeout_s", "description", "floors", "burst_floors",
           "engine_nice",
           "tensor_parallel", "dummy_weights", "docker", "lock_dir", "lease_timeout_s", "gfx"}
_DOCKER_FIELDS = {"shm_size", "model_cache", "extra_args"}


def _fail(path: Path, field_name: str, problem: str, fix: str) -> HostConfigError:
    return HostConfigError(f"{path}: {field_name} {problem}; {fix}")


def _str_map(path: Path, where: str, value: Any) -> dict[str, str]:
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise _fail(path, where, f"is {value!r}", "write a table of string values")
    return dict(value)


def _profile_from_toml(path: Path, name: str, raw: Any) -> HostProfile:
    where = f"[hosts.{name}]"
    if not isinstance(raw, dict):
        raise _fail(path, where, "is not a table", "declare it as [hosts.NAME]")
    unknown = sorted(set(raw) - _FIELDS)
    if unknown:
        raise _fail(path, f"{where} {unknown[0]}", "is not a known field",
                    f"use one of {', '.join(sorted(_FIELDS))}")
    accel = raw.get("accelerator")
    if accel not in ACCELERATORS:
        raise _fail(path, f"{where} accelerator", f"is {accel!r}",
                    f"use one of {', '.join(ACCELERATORS)}")
    count = raw.get("accelerator_count", 0 if accel == "cpu" else None)
    if not isinstance(count, int) or count < 0:
        raise _fail(path, f"{where} accelerator_count", f"is {count!r}",
                    "give the number of accelerators as a whole number")
    launcher = raw.get("launcher", "local")
    if launcher not in LAUNCHERS:
        raise _fail(path, f"{where} launcher", f"is {launcher!r}",
                    f"use one of {', '.join(LAUNCHERS)}")
    args = raw.get("engine_args", [])
    if not isinstance(args, list) or not all(isinstance(a, str) for a in args):
        raise _fail(path, f"{where} engine_args", f"is {args!r}", "write a list of strings")
    scale_raw = raw.get("scale", {})
    if not isinstance(scale_raw, dict):
        raise _fail(path, f"{where} scale", f"is {scale_raw!r}",
                    "write a table with prompts, rate, lengths")
    factors: dict[str, float] = {}
    for key in ("prompts", "rate", "lengths"):
        value = scale_raw.get(key, 1.0)
        if not isinstance(value, int | float) or not 0 < value <= 100:
            raise _fail(path, f"{where} scale.{key}", f"is {value!r}",
                        "give a factor above 0 (1.0 is full size)")
        factors[key] = float(value)
    max_servers = raw.get("max_servers", max(1, count))
    if not isinstance(max_servers, int) or max_servers < 1:
        raise _fail(path, f"{where} max_servers", f"is {max_servers!r}", "give a whole number >= 1")
    timeout = raw.get("start_timeout_s", 1800.0)
    if not isinstance(timeout, int | float) or timeout <= 0:
        raise _fail(path, f"{where} start_timeout_s", f"is {timeout!r}", "give seconds > 0")
    floors_raw = _floor_table(path, f"{where} floors", raw.get("floors", {}))
    burst_raw = _floor_table(path, f"{where} burst_floors", raw.get("burst_floors", {}))
    nice = raw.get("engine_nice", 10)
    if not isinstance(nice, int) or isinstance(nice, bool) or not 0 <= nice <= 19:
        raise _fail(path, f"{where} engine_nice", f"is {nice!r}",
                    "give a niceness from 0 (leave the engine be) to 19")
    tp = raw.get("tensor_parallel", 1)
    if not isinstance(tp, int) or tp < 1 or (count and tp > count):
        raise _fail(path, f"{where} tensor_parallel", f"is {tp!r}",
                    f"give GPUs per server, 1 to {count or 1}")
    dummy = raw.get("dummy_weights", False)
    if not isinstance(dummy, bool):
        raise _fail(path, f"{where} dummy_weights", f"is {dummy!r}", "write true or false")
    lease_timeout = raw.get("lease_timeout_s", 3600.0)
    if not isinstance(lease_timeout, int | float) or lease_timeout < 0:
        raise _fail(path, f"{where} lease_timeout_s", f"is {lease_timeout!r}",
                    "give seconds >= 0")
    for key in ("lock_dir", "gfx", "description"):
        if not isinstance(raw.get(key, ""), str):
            raise _fail(path, f"{where} {key}", f"is {raw[key]!r}", "write a string")
    return HostProfile(
        name=name,
        accelerator=accel,
        accelerator_count=count,
        launcher=launcher,
        env=MappingProxyType(_str_map(path, f"{where} env", raw.get("env", {}))),
        engine_args=tuple(args),
        models=MappingProxyType(_str_map(path, f"{where} models", raw.get("models", {}))),
        scale=WorkloadScale(**factors),
        max_servers=max_servers,
        start_timeout_s=float(timeout),
        floors=MappingProxyType(floors_raw),
        burst_floors=MappingProxyType(burst_raw),
        engine_nice=nice,
        source=str(path),
        tensor_parallel=tp,
        dummy_weights=dummy,
        docker=_docker_settings(path, where, raw.get("docker", {})),
        lock_dir=raw.get("lock_dir"),
        lease_timeout_s=float(lease_timeout),
        gfx=raw.get("gfx"),
        description=raw.get("description", ""),
    )


def _floor_table(path: Path, where: str, raw: Any) -> dict[str, float]:
    if not isinstance(raw, dict) or not all(
            isinstance(v, int | float) and not isinstance(v, bool) and v >= 0
            for v in raw.values()):
        raise _fail(path, where, f"is {raw!r}",
                    "write a table of METRIC = PERCENT, e.g. median_ttft_ms = 10")
    return {k: float(v) for k, v in raw.items()}


def _docker_settings(path: Path, where: str, raw: Any) -> DockerSettings:
    if not isinstance(raw, dict):
        raise _fail(path, f"{where} docker", f"is {raw!r}",
                    "write a table with shm_size, model_cache, extra_args")
    unknown = sorted(set(raw) - _DOCKER_FIELDS)
    if unknown:
        raise _fail(path, f"{where} docker.{unknown[0]}", "is not a known field",
                    f"use one of {', '.join(sorted(_DOCKER_FIELDS))}")
    extra = raw.get("extra_args", [])
    if not isinstance(extra, list) or not all(isinstance(a, str) for a in extra):
        raise _fail(path, f"{where} docker.extra_args", f"is {extra!r}",
                    "write a list of strings")
    for key in ("shm_size", "model_cache"):
        if not isinstance(raw.get(key, ""), str):
            raise _fail(path, f"{where} docker.{key}", f"is {raw[key]!r}", "write a string")
    return DockerSettings(shm_size=raw.get("shm_size", "16G"),
                          model_cache=raw.get("model_cache"), extra_args=tuple(extra))


def load_hosts(path: Path | None) -> dict[str, HostProfile]:
    """Built-in hosts plus those of ``path`` (if given and present)."""
    hosts = dict(BUILTIN_HOSTS)
    if path is None or not path.exists():
        return hosts
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise HostConfigError(f"{path}: not valid TOML ({exc}); fix the syntax") from None
    table = data.get("hosts", {})
    if not isinstance(table, dict):
        raise _fail(path, "[hosts]", "is not a table", "declare hosts as [hosts.NAME]")
    for name, raw in table.items():
        hosts[name] = _profile_from_toml(path, name, raw)
    return hosts


def select_host(name: str, path: Path | None) -> HostProfile:
    """The profile named ``name``; an unknown name lists the known ones."""
    hosts = load_hosts(path)
    if name not in hosts:
        where = str(path) if path is not None and path.exists() else "built-in hosts"
        raise HostConfigError(
            f"--gpu-host {name!r} is not defined in {where} (known hosts: "
            f"{', '.join(sorted(hosts))}); add [hosts.{name}] to hosts.toml or pass --hosts-file"
        )
    return hosts[name]
