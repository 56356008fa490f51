"""``hosts.toml``: host profiles read and checked field by field; every error is one line
naming the file, the field, the value and the fix."""

from __future__ import annotations

import math
import tomllib
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from types import MappingProxyType
from typing import Any

from pytest_mi300x.hosts.cpu import CPU_HOST
from pytest_mi300x.hosts.peaks import peaks_from_toml
from pytest_mi300x.hosts.profile import (
    ACCELERATORS,
    LAUNCHERS,
    DockerSettings,
    HostChecks,
    HostConfigError,
    HostProfile,
    WorkloadScale,
)
from pytest_mi300x.results.metrics import METRIC_DIRECTIONS

BUILTIN_HOSTS: Mapping[str, HostProfile] = MappingProxyType({"cpu": CPU_HOST})

_FIELDS = {"accelerator", "accelerator_count", "launcher", "env", "engine_args", "models",
           "scale", "max_servers", "start_timeout_s", "description", "floors", "burst_floors",
           "noise", "burst_noise", "engine_nice", "frontend_cpus",
           "tensor_parallel", "dummy_weights", "docker", "lock_dir", "lease_timeout_s", "gfx",
           "roofline", "checks", "based_on"}
_BUILTIN_OVERRIDES = {"description", "env", "engine_args", "floors", "noise", "based_on"}
"""What a profile based on a built-in host may change (the built-in's measured settings
stay: a second cpu host of one kind is the same kind)."""
_DOCKER_FIELDS = {"shm_size", "model_cache", "extra_args", "network", "cache_dir",
                  "min_free_gb"}
_CHECK_FIELDS = {"numa_balancing", "compute_partition", "memory_partition", "power_cap_w",
                 "perf_level", "cooldown_s"}
PARTITIONS = {"compute_partition": ("SPX", "DPX", "TPX", "QPX", "CPX"),
              "memory_partition": ("NPS1", "NPS2", "NPS4", "NPS8")}


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
                    "write a table with prompts, rate, lengths, min_prompts")
    factors: dict[str, float] = {}
    for key in ("prompts", "rate", "lengths"):
        value = scale_raw.get(key, 1.0)
        if not isinstance(value, int | float) or not 0 < value <= 100:
            raise _fail(path, f"{where} scale.{key}", f"is {value!r}",
                        "give a factor above 0 (1.0 is full size)")
        factors[key] = float(value)
    min_prompts = scale_raw.get("min_prompts", 1)
    if not isinstance(min_prompts, int) or isinstance(min_prompts, bool) or min_prompts < 1:
        raise _fail(path, f"{where} scale.min_prompts", f"is {min_prompts!r}",
                    "give a whole number of prompts >= 1")
    max_servers = raw.get("max_servers", max(1, count))
    if not isinstance(max_servers, int) or max_servers < 1:
        raise _fail(path, f"{where} max_servers", f"is {max_servers!r}", "give a whole number >= 1")
    timeout = raw.get("start_timeout_s", 1800.0)
    if not isinstance(timeout, int | float) or not math.isfinite(timeout) or timeout <= 0:
        raise _fail(path, f"{where} start_timeout_s", f"is {timeout!r}",
                    "give a finite number of seconds > 0")
    floors_raw = _floor_table(path, f"{where} floors", raw.get("floors", {}))
    burst_raw = _floor_table(path, f"{where} burst_floors", raw.get("burst_floors", {}))
    noise_raw = _floor_table(path, f"{where} noise", raw.get("noise", {}))
    burst_noise_raw = _floor_table(path, f"{where} burst_noise", raw.get("burst_noise", {}))
    frontend = raw.get("frontend_cpus", 0)
    if not isinstance(frontend, int) or isinstance(frontend, bool) or frontend < 0:
        raise _fail(path, f"{where} frontend_cpus", f"is {frontend!r}",
                    "give a whole number of CPUs >= 0 (0: the OS places everything)")
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
    if (not isinstance(lease_timeout, int | float) or not math.isfinite(lease_timeout)
            or lease_timeout < 0):
        raise _fail(path, f"{where} lease_timeout_s", f"is {lease_timeout!r}",
                    "give a finite number of seconds >= 0")
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
        scale=WorkloadScale(**factors, min_prompts=min_prompts),
        max_servers=max_servers,
        start_timeout_s=float(timeout),
        floors=MappingProxyType(floors_raw),
        burst_floors=MappingProxyType(burst_raw),
        noise=MappingProxyType(noise_raw),
        burst_noise=MappingProxyType(burst_noise_raw),
        engine_nice=nice,
        frontend_cpus=frontend,
        source=str(path),
        tensor_parallel=tp,
        dummy_weights=dummy,
        docker=_docker_settings(path, where, raw.get("docker", {})),
        lock_dir=raw.get("lock_dir"),
        lease_timeout_s=float(lease_timeout),
        gfx=raw.get("gfx"),
        description=raw.get("description", ""),
        peaks=peaks_from_toml(path, where, accel, raw.get("roofline")),
        checks=_checks(path, where, raw.get("checks", {})),
    )


def _checks(path: Path, where: str, raw: Any) -> HostChecks:
    """``[hosts.NAME.checks]``: what the host must be before anything is measured."""
    if not isinstance(raw, dict):
        raise _fail(path, f"{where} checks", f"is {raw!r}",
                    f"write a table with {', '.join(sorted(_CHECK_FIELDS))}")
    unknown = sorted(set(raw) - _CHECK_FIELDS)
    if unknown:
        raise _fail(path, f"{where} checks.{unknown[0]}", "is not a known field",
                    f"use one of {', '.join(sorted(_CHECK_FIELDS))}")
    numa = raw.get("numa_balancing")
    if numa is not None and (isinstance(numa, bool) or numa not in (0, 1, 2)):
        raise _fail(path, f"{where} checks.numa_balancing", f"is {numa!r}",
                    "write 0 (off, as ROCm's MI300X guide asks), 1 or 2")
    for key, allowed in PARTITIONS.items():
        if raw.get(key) is not None and raw[key] not in allowed:
            raise _fail(path, f"{where} checks.{key}", f"is {raw[key]!r}",
                        f"use one of {', '.join(allowed)}")
    for key in ("power_cap_w", "cooldown_s"):
        value = raw.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)
                                  or not math.isfinite(value) or value <= 0):
            raise _fail(path, f"{where} checks.{key}", f"is {value!r}",
                        "give a finite number above 0")
    if raw.get("perf_level") is not None and not isinstance(raw["perf_level"], str):
        raise _fail(path, f"{where} checks.perf_level", f"is {raw['perf_level']!r}",
                    'write the level amd-smi metric -l reports, e.g. "auto" or "determinism"')
    return HostChecks(numa_balancing=numa, compute_partition=raw.get("compute_partition"),
                      memory_partition=raw.get("memory_partition"),
                      power_cap_w=(float(raw["power_cap_w"]) if raw.get("power_cap_w")
                                   is not None else None),
                      perf_level=(raw["perf_level"].lower() if raw.get("perf_level")
                                  else None),
                      cooldown_s=float(raw.get("cooldown_s", 300.0)))


def _floor_table(path: Path, where: str, raw: Any) -> dict[str, float]:
    if not isinstance(raw, dict) or not all(
            isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
            and v >= 0 for v in raw.values()):
        raise _fail(path, where, f"is {raw!r}",
                    "write a table of METRIC = PERCENT (a finite number >= 0), "
                    "e.g. median_ttft_ms = 10")
    unknown = sorted(set(raw) - set(METRIC_DIRECTIONS))
    if unknown:
        raise _fail(path, f"{where}.{unknown[0]}", "is not a metric this suite judges",
                    "use a figure name such as request_throughput or median_ttft_ms")
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
    for key in ("shm_size", "model_cache", "cache_dir"):
        if not isinstance(raw.get(key, ""), str):
            raise _fail(path, f"{where} docker.{key}", f"is {raw[key]!r}", "write a string")
    network = raw.get("network", "host")
    if network not in ("host", "bridge"):
        raise _fail(path, f"{where} docker.network", f"is {network!r}",
                    'write "host" (no proxy between client and server) or "bridge"')
    free = raw.get("min_free_gb", 100.0)
    if isinstance(free, bool) or not isinstance(free, int | float) or free < 0:
        raise _fail(path, f"{where} docker.min_free_gb", f"is {free!r}",
                    "give the free disk in GB the doctor asks for (a number >= 0)")
    return DockerSettings(shm_size=raw.get("shm_size", "16G"),
                          model_cache=raw.get("model_cache"), extra_args=tuple(extra),
                          network=network, cache_dir=raw.get("cache_dir"),
                          min_free_gb=float(free))


def load_hosts(path: Path | None) -> dict[str, HostProfile]:
    """Built-in hosts plus those of ``path`` (if given and present)."""
    hosts = dict(BUILTIN_HOSTS)
    if path is None or not path.exists():
        return hosts
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (IsADirectoryError, UnicodeDecodeError, PermissionError) as exc:
        raise HostConfigError(f"{path}: cannot be read as a UTF-8 TOML file "
                              f"({type(exc).__name__}); give the path of a hosts.toml") from None
    except tomllib.TOMLDecodeError as exc:
        raise HostConfigError(f"{path}: not valid TOML ({exc}); fix the syntax") from None
    table = data.get("hosts", {})
    if not isinstance(table, dict):
        raise _fail(path, "[hosts]", "is not a table", "declare hosts as [hosts.NAME]")
    for name in table:
        hosts[name] = _resolved(path, name, table, hosts, ())
    return hosts


def _merged(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """``over`` on ``base``, tables merged key by key (a fleet host changes one env value
    without repeating the rest)."""
    out = dict(base)
    for key, value in over.items():
        out[key] = (_merged(out[key], value) if isinstance(value, dict)
                    and isinstance(out.get(key), dict) else value)
    return out


def _resolved(path: Path, name: str, table: dict[str, Any], hosts: dict[str, HostProfile],
              seen: tuple[str, ...]) -> HostProfile:
    """``[hosts.NAME]``, with ``based_on = "OTHER"``: another host of the file (its table
    merged under this one's) or a built-in host (its settings, with a new name and the
    few fields a built-in lets change). A fleet of one kind is one profile and a line
    per host."""
    raw = table[name]
    base = raw.get("based_on") if isinstance(raw, dict) else None
    if base is None:
        return _profile_from_toml(path, name, raw)
    where = f"[hosts.{name}] based_on"
    if base in seen or base == name:
        raise _fail(path, where, f"is {base!r}, which is based on {name!r} in turn",
                    "base each host on one that is not based on it")
    if base in table:
        parent = table[base]
        if not isinstance(parent, dict):
            raise _fail(path, f"[hosts.{base}]", "is not a table", "declare it as [hosts.NAME]")
        if parent.get("based_on") is not None:
            _resolved(path, base, table, hosts, (*seen, name))  # its own errors first
            parent = _flattened(base, table)
        merged = _merged({k: v for k, v in parent.items() if k != "based_on"},
                         {k: v for k, v in raw.items() if k != "based_on"})
        return _profile_from_toml(path, name, merged)
    builtin = BUILTIN_HOSTS.get(base)
    if builtin is None:
        raise _fail(path, where, f"is {base!r}", "name a host of this file or a built-in one "
                    f"({', '.join(sorted(BUILTIN_HOSTS))})")
    extra = sorted(set(raw) - _BUILTIN_OVERRIDES)
    if extra:
        raise _fail(path, f"[hosts.{name}] {extra[0]}", f"cannot change the built-in {base!r}",
                    f"a host based on it may set {', '.join(sorted(_BUILTIN_OVERRIDES))}")
    args = raw.get("engine_args", list(builtin.engine_args))
    if not isinstance(args, list) or not all(isinstance(a, str) for a in args):
        raise _fail(path, f"[hosts.{name}] engine_args", f"is {args!r}",
                    "write a list of strings")
    if not isinstance(raw.get("description", ""), str):
        raise _fail(path, f"[hosts.{name}] description", f"is {raw['description']!r}",
                    "write a string")
    return replace(
        builtin, name=name, source=str(path),
        description=raw.get("description", builtin.description),
        env=MappingProxyType({**builtin.env, **_str_map(path, f"[hosts.{name}] env",
                                                           raw.get("env", {}))}),
        engine_args=tuple(args),
        floors=MappingProxyType({**builtin.floors, **_floor_table(
            path, f"[hosts.{name}] floors", raw.get("floors", {}))}),
        noise=MappingProxyType({**builtin.noise, **_floor_table(
            path, f"[hosts.{name}] noise", raw.get("noise", {}))}))


def _flattened(name: str, table: dict[str, Any]) -> dict[str, Any]:
    """A file host's table with its bases' merged under it (checked by ``_resolved``)."""
    raw = table[name]
    base = raw.get("based_on")
    if base is None or base not in table:
        return raw
    return _merged({k: v for k, v in _flattened(base, table).items() if k != "based_on"},
                   {k: v for k, v in raw.items() if k != "based_on"})


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
