"""The baseline store: one readable JSON file per test, per host, engine and model."""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from filelock import FileLock

from pytest_mi300x.results.files import write_json_atomic

SCHEMA = "pytest-mi300x/baseline/1"


BUILD_KEYS: tuple[str, ...] = ("engine_build", "engine_version", "torch")
"""The engine under test: a different build is what a cross-build comparison is for."""


def comparability(fingerprint: dict[str, Any], engine: dict[str, Any],
                  workload: dict[str, Any] | None = None,
                  flag_set: dict[str, Any] | None = None) -> dict[str, Any]:
    """What must match for two runs' figures to be compared: hardware, software stack,
    and, when given, the workload as run (scaled) and the flag set as the test defines it.

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
    if workload is not None:
        stack["workload"] = portable_workload(workload)
    if flag_set is not None:
        stack["flag_set"] = {"argv": list(flag_set.get("argv", [])),
                             "env": dict(flag_set.get("env", {}))}
    return stack


def portable_workload(workload: dict[str, Any]) -> dict[str, Any]:
    """The workload without machine-local file paths (a dataset file is known by its
    digest) or derived labels, so the same workload matches on every machine."""
    def strip(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: strip(v) for k, v in value.items() if k not in ("path", "label")}
        return value
    return strip(workload)


def test_file_name(nodeid: str) -> str:
    name = re.sub(r"[^A-Za-z0-9_.=+\[\]-]+", "_", nodeid.replace("::", "__").replace("/", "__"))
    return f"{name.strip('_')[:200]}.json"


@dataclass(frozen=True)
class Baseline:
    """Stored repetitions of one test on one host, engine and model, with provenance."""

    test: str
    host: str
    engine: str
    model: str
    repetitions: list[dict[str, float]]
    comparability: dict[str, Any]
    provenance: dict[str, Any] = field(default_factory=dict)
    created_at: str = ""
    servers: list[int] = field(default_factory=list)
    """The server start each repetition came from (empty: all from one start)."""

    def __post_init__(self) -> None:
        if self.servers and len(self.servers) != len(self.repetitions):
            raise ValueError(f"{self.test}: servers names {len(self.servers)} repetitions, "
                             f"the baseline has {len(self.repetitions)}")

    @property
    def server_of(self) -> list[int]:
        """Server start per repetition, 0 for all when the baseline had one."""
        return list(self.servers) or [0] * len(self.repetitions)

    @property
    def server_count(self) -> int:
        return len(set(self.server_of)) or 1

    def with_server(self, new: Baseline) -> Baseline:
        """This baseline plus ``new``'s repetitions as one more server start."""
        start = max(self.server_of, default=-1) + 1
        starts = self.provenance.get("server_starts") or [_start_of(self.provenance)]
        provenance = {**self.provenance, "server_starts": [*starts, _start_of(new.provenance)]}
        return Baseline(test=self.test, host=self.host, engine=self.engine, model=self.model,
                        repetitions=[*self.repetitions, *new.repetitions],
                        comparability=self.comparability, provenance=provenance,
                        servers=[*self.server_of, *([start] * len(new.repetitions))])

    def to_dict(self) -> dict[str, Any]:
        return {"schema": SCHEMA, "test": self.test, "host": self.host, "engine": self.engine,
                "model": self.model, "created_at": self.created_at,
                "repetitions": self.repetitions, "servers": self.server_of,
                "comparability": self.comparability, "provenance": self.provenance}

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> Baseline:
        return cls(test=doc["test"], host=doc["host"], engine=doc["engine"], model=doc["model"],
                   repetitions=list(doc["repetitions"]), comparability=dict(doc["comparability"]),
                   provenance=dict(doc.get("provenance", {})),
                   created_at=str(doc.get("created_at", "")),
                   servers=[int(k) for k in doc.get("servers", [])])


def _start_of(provenance: dict[str, Any]) -> dict[str, Any]:
    """What tells one server start's repetitions from another's."""
    return {"run_id": provenance.get("run_id"), "seeds": provenance.get("seeds")}


class BaselineError(Exception):
    """A baseline file that cannot be read; names the file and the fix."""


class BaselineStore:
    """``<root>/<host>/<engine>/<model>/<test>.json``; writes are atomic and file-locked."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, host: str, engine: str, model: str, nodeid: str) -> Path:
        return self.root / host / engine / model / test_file_name(nodeid)

    def load(self, host: str, engine: str, model: str, nodeid: str) -> Baseline | None:
        path = self.path(host, engine, model, nodeid)
        if not path.exists():
            return None
        return self._read(path)

    def _read(self, path: Path) -> Baseline:
        try:
            doc = json.loads(path.read_text())
            if doc.get("schema") != SCHEMA:
                raise KeyError("schema")
            return Baseline.from_dict(doc)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise BaselineError(
                f"{path}: not a readable baseline ({type(exc).__name__}: {exc}); "
                "delete it and refresh with `pytest-mi300x baselines refresh`") from None

    def save(self, baseline: Baseline) -> Path:
        path = self.path(baseline.host, baseline.engine, baseline.model, baseline.test)
        path.parent.mkdir(parents=True, exist_ok=True)
        doc = baseline.to_dict()
        if not doc["created_at"]:
            doc["created_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        with FileLock(str(path) + ".lock"):
            write_json_atomic(path, doc)
        return path

    def all(self) -> list[tuple[Path, Baseline]]:
        return [(p, self._read(p)) for p in sorted(self.root.glob("*/*/*/*.json"))]


BASELINE_PROPERTY = "mi300x_baseline"
REPORTED_FIGURES = ("request_throughput", "median_ttft_ms", "mean_tpot_ms")


class BaselineWriter:
    """Writes baselines shipped in test reports; registered only where results converge
    (the xdist controller, or the single process), so one process writes each file.

    With ``add_server`` a comparable stored baseline keeps its repetitions and gains
    this session's as one more server start; any other stored baseline is replaced.
    """

    def __init__(self, store: BaselineStore, *, add_server: bool = False) -> None:
        self.store = store
        self.add_server = add_server
        self.changes: list[str] = []

    def pytest_runtest_logreport(self, report: Any) -> None:
        for name, value in report.user_properties:
            if name == BASELINE_PROPERTY:
                self._write(Baseline.from_dict(json.loads(str(value))))

    def _write(self, new: Baseline) -> None:
        try:
            old = self.store.load(new.host, new.engine, new.model, new.test)
        except BaselineError:
            old = None
        note = ""
        if self.add_server and old is not None and old.comparability == new.comparability:
            new = old.with_server(new)
            note = f"server start {new.server_count} added ({len(new.repetitions)} repetitions); "
        elif self.add_server and old is not None:
            note = "replaced (the stored one is from a different stack); "
        path = self.store.save(new)
        self.changes.append(f"{path}: {note}{describe_change(old, new)}")


def _median(reps: list[dict[str, float]], key: str) -> float | None:
    values = sorted(float(r[key]) for r in reps if key in r)
    if not values:
        return None
    mid = len(values) // 2
    return values[mid] if len(values) % 2 else (values[mid - 1] + values[mid]) / 2


def describe_change(old: Baseline | None, new: Baseline) -> str:
    """One line: new, or the change of a few headline medians."""
    if old is None:
        return f"new ({len(new.repetitions)} repetitions)"
    parts = []
    for key in REPORTED_FIGURES:
        before, after = _median(old.repetitions, key), _median(new.repetitions, key)
        if before is None or after is None:
            continue
        pct = (after - before) / before * 100 if before else float("nan")
        parts.append(f"{key} {before:.4g} -> {after:.4g} ({pct:+.1f}%)")
    return "; ".join(parts) or "replaced"
