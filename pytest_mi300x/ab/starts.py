"""Server starts of builds, each one pytest session, and the record of all of them.

A start runs the user's selection under one build with a fresh server (a pytest session
starts its own), writes an ordinary results folder, and is summarised in the record: per
test, the valid repetitions' figures and the floors and noise the host recorded. The
record is saved after every start, so an interrupted A/B or bisect continues where it was.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pytest_mi300x.ab.builds import Build
from pytest_mi300x.results import redact
from pytest_mi300x.results.files import (
    ReadError,
    read_json,
    redact_file,
    slug,
    write_json_atomic,
)
from pytest_mi300x.results.model import read_folder
from pytest_mi300x.servers.process import open_private_log

SCHEMA = "pytest-mi300x/starts/1"


@dataclass
class Runs:
    """One test in one start."""

    reps: list[dict[str, float]]
    floors: dict[str, float] = field(default_factory=dict)
    noise: dict[str, float] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    store_key: list[str] = field(default_factory=list)
    """(host, engine, model) under which the test's baseline and noise record are kept."""
    stack: dict[str, Any] = field(default_factory=dict)
    """What the figures depend on (results/stack.py), to match a stored noise record."""


@dataclass
class Start:
    """One pytest session of one build."""

    build: str
    index: int
    folder: str
    rc: int
    seconds: float
    tests: dict[str, Runs] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> Start:
        tests = {k: Runs(**v) for k, v in doc.get("tests", {}).items()}
        return cls(doc["build"], int(doc["index"]), doc["folder"], int(doc["rc"]),
                   float(doc["seconds"]), tests)


RunStart = Callable[[Build, int], Start]


class Record:
    """Every start so far, saved after each one."""

    def __init__(self, path: Path | None, meta: dict[str, Any]) -> None:
        """``path`` None keeps the record in memory (simulations)."""
        self.path = path
        self.meta = meta
        self._starts: list[Start] = []
        self.marks: dict[str, int] = {}
        """Named positions in ``starts`` (where a phase of a bisect began)."""
        if path is not None and path.exists():
            doc = read_json(path, "a pytest-mi300x starts record",
                            "delete the folder to start over")
            if not isinstance(doc, dict) or doc.get("schema") != SCHEMA:
                raise ReadError(f"{path}: not a pytest-mi300x starts record; delete the "
                                "folder to start over")
            if doc.get("meta") != meta:
                raise ReadError(f"{path}: recorded for other builds or tests "
                                f"({doc.get('meta')}); give another --out or delete it")
            self._starts = [Start.from_dict(s) for s in doc.get("starts", [])]
            self.marks = {str(k): int(v) for k, v in (doc.get("marks") or {}).items()}

    @property
    def starts(self) -> list[Start]:
        return self._starts

    def add(self, start: Start) -> None:
        self._starts.append(start)
        self._save()

    def _save(self) -> None:
        if self.path is not None:
            write_json_atomic(self.path, {"schema": SCHEMA, "meta": self.meta,
                                          "marks": self.marks,
                                          "starts": [asdict(s) for s in self.starts]})

    def since(self, mark: str) -> Record:
        """The starts from the position named ``mark`` on (set to here the first time it
        is asked for, and saved): a phase that must be judged on its own fresh starts."""
        if mark not in self.marks:
            self.marks[mark] = len(self.starts)
            self._save()
        return _Tail(self, self.marks[mark])

    def of(self, build: Build) -> list[Start]:
        return [s for s in self.starts if s.build == build.name]

    def next_index(self, build: Build) -> int:
        """The number of ``build``'s next start (its folder's name): one past every start
        of it in the whole record."""
        return len(self.of(build)) + 1

    def tests(self) -> list[str]:
        return sorted({t for s in self.starts for t in s.tests})

    def runs(self, build: Build, test: str, metric: str) -> list[list[float]]:
        """Per start of ``build``, the values of ``metric`` in its valid runs of ``test``."""
        out = []
        for s in self.of(build):
            runs = s.tests.get(test)
            if runs is not None:
                values = [r[metric] for r in runs.reps if metric in r]
                if values:
                    out.append(values)
        return out

    def reps(self, build: Build, test: str) -> tuple[list[dict[str, float]], list[int]]:
        """Every valid run of ``test`` under ``build``, and the start each came from."""
        reps: list[dict[str, float]] = []
        starts: list[int] = []
        for s in self.of(build):
            runs = s.tests.get(test)
            if runs is not None:
                reps += runs.reps
                starts += [s.index] * len(runs.reps)
        return reps, starts

    def key_of(self, test: str) -> tuple[list[str], dict[str, Any]] | None:
        """Where ``test``'s baseline is kept, and its stack, as its starts recorded them."""
        for s in self.starts:
            runs = s.tests.get(test)
            if runs is not None and len(runs.store_key) == 3:
                return runs.store_key, runs.stack
        return None

    def thresholds(self, test: str) -> tuple[dict[str, float], dict[str, float]]:
        """(floors, noise) the host recorded for ``test``: the widest any start saw."""
        floors: dict[str, float] = {}
        noise: dict[str, float] = {}
        for s in self.starts:
            runs = s.tests.get(test)
            if runs is None:
                continue
            for mine, theirs in ((floors, runs.floors), (noise, runs.noise)):
                for k, v in theirs.items():
                    mine[k] = max(mine.get(k, 0.0), v)
        return floors, noise


class _Tail(Record):
    """The starts of a record from a position on; what is added goes to the record."""

    def __init__(self, parent: Record, position: int) -> None:  # no file of its own
        self.parent, self.position = parent, position
        self.path, self.meta, self.marks = None, parent.meta, {}

    @property
    def starts(self) -> list[Start]:
        return self.parent.starts[self.position:]

    def add(self, start: Start) -> None:
        self.parent.add(start)

    def next_index(self, build: Build) -> int:
        return self.parent.next_index(build)


STEP = "[pytest-mi300x] "
"""How the plugin's step lines start (an install, a server up, a test's figures)."""


class SessionRunner:
    """Runs one start: ``python -m pytest SELECTION`` under the build, output to a log."""

    def __init__(self, selection: list[str], out: Path, *, repeats: int | None = None,
                 progress: Callable[[str], None] = print, extra: Sequence[str] = ()) -> None:
        """``extra``: pytest options after the runner's own (the last of an option wins:
        the night sends its gate starts' history to its state)."""
        redact.register_process_env()  # the sessions inherit it: their logs may show it
        self.selection = selection
        self.out = out
        self.repeats = repeats
        self.progress = progress
        self.extra = list(extra)

    def folder(self, build: Build, index: int) -> Path:
        return self.out / f"{slug(build.name, 40)}-start-{index}"

    def command(self, build: Build, index: int) -> list[str]:
        """The pytest session of one start (its env: ``build.session_env()``)."""
        folder = self.folder(build, index)
        # Path values with "=": pytest takes a bare existing path as a test path when it
        # picks its rootdir, and the rootdir decides the test ids.
        cmd = [sys.executable, "-m", "pytest", *self.selection, *build.pytest_args(),
               f"--results-dir={folder}", f"--baselines-dir={self.out / 'no-baselines'}",
               f"--history-file={self.out / 'history.jsonl'}", "-p", "no:cacheprovider",
               "-rfE"]
        if self.repeats is not None:
            cmd += ["--repeats", str(self.repeats)]
        return cmd + self.extra

    def __call__(self, build: Build, index: int) -> Start:
        folder = self.folder(build, index)
        cmd = self.command(build, index)
        folder.mkdir(parents=True, exist_ok=True)
        started = time.monotonic()
        log_path = folder / "pytest.log"
        log_path.unlink(missing_ok=True)  # a rerun's log starts afresh, created 0600
        with open_private_log(log_path) as log:
            # The build's env (tokens too) through the environment: a command line shows
            # in `ps` to every local user.
            child = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                     env={**os.environ, **build.session_env()})
            rc = self._relay(child, log_path, f"  {build.name} start {index}: ")
        redact_file(log_path)
        seconds = time.monotonic() - started
        skipped: list[str] = []
        tests = {}
        for result in read_folder(folder, skipped):
            tests[result.test] = Runs(result.repetitions, result.host_floors,
                                      result.host_noise, result.problems[:3],
                                      [result.host_name, result.engine_name, result.model],
                                      result.stack)
        return Start(build.name, index, str(folder), rc, seconds, tests)

    def _relay(self, child: subprocess.Popen[bytes], log_path: Path, prefix: str) -> int:
        """Wait for the session, passing its step lines on as they come: a start takes a
        minute here and many on a GPU host, and an A/B must not sit silent through it."""
        pending = ""
        with log_path.open("rb") as log:
            while True:
                rc = child.poll()
                pending += log.read().decode("utf-8", "replace")
                *lines, pending = pending.split("\n")
                if rc is not None:
                    lines.append(pending)
                for line in lines:
                    if line.startswith(STEP):
                        self.progress(prefix + redact.text(line[len(STEP):].rstrip()))
                if rc is not None:
                    return rc
                time.sleep(0.5)
