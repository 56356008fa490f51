"""What must match for two figures to be compared: hardware, software stack, workload, flags.

A baseline, a history point and a result each carry this "stack"; the gate, compare,
the history's setup breaks and A/B runs all use these functions to decide.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pytest_mi300x.results.redact import redact

BUILD_KEYS: tuple[str, ...] = ("engine_build", "engine_version", "torch")
"""The engine under test: a different build is what a cross-build comparison is for."""


def comparability(fingerprint: Mapping[str, Any], engine: Mapping[str, Any],
                  workload: Mapping[str, Any] | None = None,
                  flag_set: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Hardware, software stack and, when given, the workload as run (scaled) and the flag
    set as the test defines it.

    User overrides (``--engine-env``, ``--engine-arg``) stay out of it on purpose: they
    are how a slowdown or a candidate setting is tried against the baseline.
    """
    packages = engine.get("packages", {})
    stack: dict[str, Any] = {
        "cpu_model": fingerprint.get("cpu_model"),
        "cpu_count": fingerprint.get("cpu_count"),
        "machine": fingerprint.get("machine"),
        "accelerators": fingerprint.get("accelerators"),
        "engine_build": engine.get("build"),
        "engine_version": engine.get("version"),
        "torch": packages.get("torch"),
    }
    # The CPU's vector extensions decide what the engine can do and how fast (AVX2-only
    # machines serve several times slower and refuse fp8 KV cache): older results lack it.
    if fingerprint.get("cpu_isa") is not None:
        stack["cpu_isa"] = fingerprint.get("cpu_isa")
    # Recorded since the GPU host's first fixes (older results lack them): NUMA balancing
    # (on, a GPU can stall until the kernel's balancing pass ends) and the harness's way of
    # measuring (hosts/fingerprint.py MEASUREMENT_VERSION).
    for key in ("numa_balancing", "harness_measurement"):
        if fingerprint.get(key) is not None:
            stack[key] = fingerprint[key]
    if workload is not None:
        stack["workload"] = portable_workload(workload)
    if flag_set is not None:
        # As stored: a secret in the flag set's env is hidden on both sides alike.
        stack["flag_set"] = redact({"argv": list(flag_set.get("argv", [])),
                                    "env": dict(flag_set.get("env", {})),
                                    **({"unset": list(flag_set["unset"])}
                                       if flag_set.get("unset") else {})})
    return stack


def portable_workload(workload: Mapping[str, Any]) -> dict[str, Any]:
    """The workload without machine-local file paths (a dataset file is known by its
    digest) or derived labels, so the same workload matches on every machine."""
    def strip(value: Any) -> Any:
        if isinstance(value, Mapping):
            return {k: strip(v) for k, v in value.items() if k not in ("path", "label")}
        return value
    return strip(workload)


def setup_of(stack: Mapping[str, Any]) -> dict[str, Any]:
    """The stack without the engine build: hardware, workload, flag set."""
    return {k: v for k, v in stack.items() if k not in BUILD_KEYS}


def sent_as_burst(workload: Mapping[str, Any] | None) -> bool:
    """Whether a described (scaled) workload went out as one burst: a host's
    ``burst_floors`` apply to its figures."""
    return (workload or {}).get("arrivals", {}).get("request_rate") == "inf"


_MISSING = "<missing>"


def _flatten(tree: Mapping[str, object], prefix: str = "") -> dict[str, object]:
    flat: dict[str, object] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(_flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def stack_diff(baseline: Mapping[str, object], candidate: Mapping[str, object]) -> list[str]:
    """Lines 'key: baseline -> candidate' for every differing (dotted) key."""
    # A whole section one side never recorded (an older harness) is one line, not one per field.
    whole = {k for k in baseline.keys() ^ candidate.keys()
             if isinstance(baseline.get(k, candidate.get(k)), Mapping)}
    old = _flatten({k: v for k, v in baseline.items() if k not in whole})
    new = _flatten({k: v for k, v in candidate.items() if k not in whole})
    old.update({k: "recorded" for k in whole if k in baseline})
    new.update({k: "recorded" for k in whole if k in candidate})
    lines = []
    for key in sorted(old.keys() | new.keys()):
        before, after = old.get(key, _MISSING), new.get(key, _MISSING)
        if key not in old or key not in new or before != after:
            lines.append(f"{key}: {before} -> {after}")
    return lines


def split_builds(differs: list[str]) -> tuple[list[str], list[str]]:
    """(build differences, everything else) of a ``stack_diff``."""
    builds = [d for d in differs if d.split(":", 1)[0] in BUILD_KEYS]
    return builds, [d for d in differs if d not in builds]
