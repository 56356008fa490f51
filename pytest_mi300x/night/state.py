"""What lasts from one night to the next, outside the checkout.

A self-hosted runner's checkout is wiped every job (``actions/checkout`` cleans it), so the
night keeps its memory in a state directory of its own: ``--state DIR``, else
``$PYTEST_MI300X_STATE``, else ``$XDG_STATE_HOME/pytest-mi300x`` (``~/.local/state/...``).
A fresh clone given the same directory continues where the last night stopped.

Layout (each host writes only under its own folder, so a fleet can share one directory or
one git data branch, see ``Sync``)::

    hosts/<host>/
      night.lock             held while a night or a culprit search runs on the host
      builds.json            every build the stream has named, oldest first, with digests
      nights/<id>/night.json one night: builds, status, per-test outcomes, starts, time
      nights/<id>/...        its starts (results folders, starts.json records)
      baselines/             the rolling baselines (a BaselineStore: <host>/<engine>/...);
                             their noise entries are the tests' dated noise records
      anchors/<night id>/    the baselines as they stood after an earlier green night
      history.jsonl          one line per test per night (tonight's build)
      culprits/<id>/         culprit searches: culprit.json, culprit.md, starts.json
      timings.jsonl          every start's wall time, for ``plan --night``
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from pytest_mi300x.results.files import (
    ReadError,
    append_jsonl,
    read_json,
    read_jsonl,
    slug,
    write_json_atomic,
)

STATE_ENV = "PYTEST_MI300X_STATE"
NIGHT_SCHEMA = "pytest-mi300x/night/1"
BUILDS_SCHEMA = "pytest-mi300x/night-builds/1"
FINISHED = ("green", "red", "undecided")
"""Statuses after which tonight's build counts as measured (an infra night measured
nothing: its build is tried again)."""


class StateError(Exception):
    """A state directory that cannot be used; one line naming it and the fix."""


def default_state_dir() -> Path:
    if env := os.environ.get(STATE_ENV):
        return Path(env).expanduser()
    if xdg := os.environ.get("XDG_STATE_HOME"):
        return Path(xdg).expanduser() / "pytest-mi300x"
    return Path.home() / ".local" / "state" / "pytest-mi300x"


@dataclass(frozen=True)
class BuildRef:
    """A build as the state remembers it: its name (label or spec), the line that makes it
    (secrets hidden), and what identifies it beyond its name (an image's digest, a wheel's
    sha256)."""

    name: str
    spec: str
    digest: str = ""
    source: str = ""

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> BuildRef:
        return cls(str(doc["name"]), str(doc["spec"]), str(doc.get("digest") or ""),
                   str(doc.get("source") or ""))

    def shown(self) -> str:
        return f"{self.name} ({self.digest})" if self.digest else self.name


@dataclass
class NightRecord:
    """One night on one host."""

    id: str
    host: str
    tonight: BuildRef
    reference: BuildRef | None
    started: str
    status: str = "running"
    exit: int | None = None
    adopted: bool = False
    """The host's first night: tonight's build became the reference; nothing was judged."""
    headline: str = ""
    stream: str = ""
    selection: list[str] = field(default_factory=list)
    tests: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Per test: gate, head_to_head, outcome, change_pct, resolves_pct, can_gate, why."""
    starts: dict[str, int] = field(default_factory=dict)
    """Server starts used, per phase."""
    wall_s: float = 0.0
    ended: str = ""
    culprit: str = ""
    """The culprit search this night started or found (its id), if any."""
    notes: list[str] = field(default_factory=list)
    fleet_hosts: int = 1
    learned: list[str] = field(default_factory=list)
    """What a resumed night must not do twice: phases whose starts the noise records have
    learned, and ``promoted`` once its starts joined the rolling baselines."""

    def to_dict(self) -> dict[str, Any]:
        doc = asdict(self)
        doc["schema"] = NIGHT_SCHEMA
        return doc

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> NightRecord:
        doc = {k: v for k, v in doc.items() if k != "schema"}
        doc["tonight"] = BuildRef.from_dict(doc["tonight"])
        doc["reference"] = BuildRef.from_dict(doc["reference"]) if doc.get("reference") \
            else None
        return cls(**doc)

    @property
    def gated(self) -> int:
        return sum(1 for t in self.tests.values() if t.get("can_gate"))

    @property
    def starts_used(self) -> int:
        return sum(self.starts.values())


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


class HostState:
    """One host's folder of the state."""

    def __init__(self, root: Path, host: str) -> None:
        self.root = root
        self.host = host
        self.dir = root / "hosts" / slug(host)

    # -- where things are ---------------------------------------------------
    @property
    def baselines_dir(self) -> Path:
        return self.dir / "baselines"

    @property
    def history_file(self) -> Path:
        return self.dir / "history.jsonl"

    @property
    def anchors_dir(self) -> Path:
        return self.dir / "anchors"

    @property
    def culprits_dir(self) -> Path:
        return self.dir / "culprits"

    def night_dir(self, night_id: str) -> Path:
        return self.dir / "nights" / night_id

    @contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the host's lock: one night or culprit search at a time on a host."""
        self.dir.mkdir(parents=True, exist_ok=True)
        lock = FileLock(str(self.dir / "night.lock"), timeout=0)
        try:
            lock.acquire()
        except Timeout:
            raise StateError(f"{self.dir / 'night.lock'}: another night or culprit search "
                             f"holds {self.host}'s state; wait for it to end") from None
        try:
            yield
        finally:
            lock.release()

    # -- nights -----------------------------------------------------------------
    def nights(self) -> list[NightRecord]:
        """Every night of the host, oldest first."""
        out = []
        for path in sorted((self.dir / "nights").glob("*/night.json")):
            doc = self._read(path, "a night record")
            try:
                out.append(NightRecord.from_dict(doc))
            except (KeyError, TypeError) as exc:
                raise StateError(f"{path}: not a night record ({exc}); delete its folder "
                                 "to forget that night") from None
        return sorted(out, key=lambda n: (n.started, n.id))

    def save_night(self, night: NightRecord) -> Path:
        path = self.night_dir(night.id) / "night.json"
        write_json_atomic(path, night.to_dict())
        return path

    def running(self) -> NightRecord | None:
        """A night that was cut short (its job killed): the next run continues it."""
        return next((n for n in reversed(self.nights()) if n.status == "running"), None)

    def measured(self) -> set[str]:
        """Names of the builds a finished night measured on this host."""
        return {n.tonight.name for n in self.nights() if n.status in FINISHED}

    def reference(self) -> BuildRef | None:
        """The last build whose night ended green (or that the host's first night adopted)."""
        for night in reversed(self.nights()):
            if night.status == "green" or night.adopted:
                return night.tonight
        return None

    def reference_night(self) -> NightRecord | None:
        for night in reversed(self.nights()):
            if night.status == "green" or night.adopted:
                return night
        return None

    # -- the builds the stream named --------------------------------------------
    def known_builds(self) -> list[BuildRef]:
        path = self.dir / "builds.json"
        if not path.exists():
            return []
        doc = self._read(path, "a builds list")
        return [BuildRef.from_dict(b) for b in doc.get("builds", [])]

    def remember_builds(self, builds: list[BuildRef]) -> list[BuildRef]:
        """Every build seen so far, oldest first: those the stream no longer names (they fell
        out of its walk) stay before the ones it names now. Returns the merged list."""
        named = {b.name for b in builds}
        earlier = [b for b in self.known_builds() if b.name not in named]
        merged = [*earlier, *builds]
        write_json_atomic(self.dir / "builds.json",
                          {"schema": BUILDS_SCHEMA, "builds": [asdict(b) for b in merged]})
        return merged

    # -- start timings ------------------------------------------------------------
    def add_timing(self, night: str, build: str, phase: str, seconds: float,
                   tests: int) -> None:
        append_jsonl(self.dir / "timings.jsonl", [{"night": night, "build": build,
                                                    "phase": phase, "seconds": seconds,
                                                    "tests": tests, "date": now()}])

    def timings(self) -> list[dict[str, Any]]:
        return [e for _, e in read_jsonl(self.dir / "timings.jsonl")]

    def _read(self, path: Path, what: str) -> dict[str, Any]:
        try:
            doc = read_json(path, f"{what} of pytest-mi300x night",
                            "delete it (or give another --state)")
        except ReadError as exc:
            raise StateError(str(exc)) from None
        if not isinstance(doc, dict):
            raise StateError(f"{path}: not {what}; delete it (or give another --state)")
        return doc


class State:
    """A state directory."""

    def __init__(self, root: Path | None = None) -> None:
        self.root = (root or default_state_dir()).expanduser().absolute()
        if self.root.exists() and not self.root.is_dir():
            raise StateError(f"--state {self.root} is a file; give a folder (it is created "
                             "if missing)")
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StateError(f"--state {self.root}: cannot be created ({exc.strerror}); "
                             f"give a writable folder or set {STATE_ENV}") from None

    def host(self, name: str) -> HostState:
        return HostState(self.root, name)

    def hosts(self) -> list[str]:
        return sorted(p.name for p in (self.root / "hosts").glob("*") if p.is_dir())


def night_id(build: str, when: float | None = None) -> str:
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime(when))
    return f"{stamp}-{slug(build, 40)}"
