"""The culprit search of a red night, kept in the state so that any later job continues it.

A confirmed regression starts a search over the stream's builds from the last green build
(good) to tonight's (bad), every build the stream named between them included: ab/bisect.py
(confirmation, midpoints interleaved with good and bad starts, the final pair confirmed on
fresh starts) with ab/culprit.py's write-up. Its record of starts is seeded with the night's
own head-to-head starts of the two builds on the failing tests, so the confirmation the
night already made is not paid for twice. Every start is saved as it ends: a search cut
short (a job killed, the night's time spent) continues from its record when run again,
inline after a night or deferred to ``pytest-mi300x night culprit``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pytest_mi300x.ab.builds import Build
from pytest_mi300x.ab.starts import Record, RunStart, Start
from pytest_mi300x.night.state import BuildRef, HostState, StateError, now
from pytest_mi300x.results.files import ReadError, read_json, slug, write_json_atomic

SCHEMA = "pytest-mi300x/night-culprit/1"
OPEN = ("pending", "running")


@dataclass
class SearchRecord:
    """One culprit search as the state keeps it."""

    id: str
    host: str
    night: str
    tests: list[str]
    good: BuildRef
    bad: BuildRef
    builds: list[BuildRef]
    status: str = "pending"
    """pending, running, named, not confirmed, undecided, failed."""
    headline: str = ""
    first_bad: str = ""
    created: str = ""
    updated: str = ""
    starts: int = 0
    options: list[str] = field(default_factory=list)
    """The night's pytest options (host, repeats...): a deferred search runs as it did."""

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "schema": SCHEMA}

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> SearchRecord:
        doc = {k: v for k, v in doc.items() if k != "schema"}
        doc["good"] = BuildRef.from_dict(doc["good"])
        doc["bad"] = BuildRef.from_dict(doc["bad"])
        doc["builds"] = [BuildRef.from_dict(b) for b in doc["builds"]]
        return cls(**doc)

    def line(self) -> str:
        if self.status == "named":
            return f"culprit named: {self.headline} (search {self.id})"
        if self.status in OPEN:
            return (f"culprit search {self.status}: {self.good.name} .. {self.bad.name}, "
                    f"{len(self.builds) - 2} build(s) between, {self.starts} start(s) so far "
                    f"(search {self.id}; `pytest-mi300x night culprit` continues it)")
        return f"culprit search {self.status}: {self.headline} (search {self.id})"


def folder(hs: HostState, search_id: str) -> Path:
    return hs.culprits_dir / search_id


def save(hs: HostState, rec: SearchRecord) -> None:
    rec.updated = now()
    write_json_atomic(folder(hs, rec.id) / "culprit.json", rec.to_dict())


def searches(hs: HostState) -> list[SearchRecord]:
    out = []
    for path in sorted(hs.culprits_dir.glob("*/culprit.json")):
        try:
            doc = read_json(path, "a night's culprit record", "delete its folder")
            out.append(SearchRecord.from_dict(doc))
        except (ReadError, KeyError, TypeError) as exc:
            raise StateError(f"{path}: not a culprit record ({exc}); delete its folder") \
                from None
    return sorted(out, key=lambda s: s.created)


def covering(hs: HostState, good: str, tests: list[str]) -> SearchRecord | None:
    """The latest search from the same last good build on one of ``tests`` that named a
    culprit or is still going: a later red night on it says so instead of searching
    again."""
    for rec in reversed(searches(hs)):
        if rec.good.name == good and set(rec.tests) & set(tests) and \
                (rec.status == "named" or rec.status in OPEN):
            return rec
    return None


def open_search(hs: HostState, night: str, builds: list[BuildRef], tests: list[str],
                options: list[str] | None = None) -> SearchRecord:
    """A pending search over ``builds`` (good first, bad last) on ``tests``."""
    search_id = slug(f"{builds[0].name}..{builds[-1].name}", 80)
    existing = folder(hs, search_id) / "culprit.json"
    if existing.exists():
        return next(s for s in searches(hs) if s.id == search_id)
    rec = SearchRecord(search_id, hs.host, night, sorted(tests), builds[0], builds[-1],
                       list(builds), created=now(), options=list(options or []))
    save(hs, rec)
    return rec


def seed(record: Record, starts: list[Start], tests: list[str], builds: tuple[str, str]
         ) -> int:
    """Copy the night's starts of the good and the bad build on ``tests`` into an empty
    search record; how many were copied."""
    if record.starts:
        return 0
    wanted = set(tests)
    n = 0
    for start in starts:
        if start.build not in builds:
            continue
        kept = {t: r for t, r in start.tests.items() if t in wanted}
        if kept and all(r.reps for r in kept.values()) and set(kept) == wanted:
            record.add(Start(start.build, start.index, start.folder, start.rc, start.seconds,
                             kept))
            n += 1
    return n


@dataclass
class SearchSettings:
    """How a search runs its starts."""

    runner: Callable[[list[str], Path], RunStart]
    """(selection, folder) -> a start runner."""
    options: list[str] = field(default_factory=list)
    """pytest options every start gets (the host, repeats...)."""
    alpha_session: float = 0.05
    min_starts: int = 3
    max_starts: int = 6
    records_dir: Path | None = None
    """Where the tests' noise records are kept (the host's rolling baselines)."""
    progress: Callable[[str], None] = print


def run_search(hs: HostState, rec: SearchRecord, builds: list[Build], settings: SearchSettings,
               night_starts: list[Start] | None = None) -> SearchRecord:
    """Run (or continue) the search; its status and headline are saved as it ends. A
    ``BaseException`` that is not an error (the night's budget spent, a kill) leaves it
    running, to be continued."""
    from pytest_mi300x.ab.bisect import Bisect, ReferenceFailed
    from pytest_mi300x.ab.culprit import Search
    from pytest_mi300x.ab.noiselog import NoiseLog

    where = folder(hs, rec.id)
    meta = {"builds": [b.name for b in rec.builds], "tests": rec.tests,
            "looks": [settings.min_starts, settings.max_starts]}
    try:
        record = Record(where / "starts.json", meta)
    except ReadError as exc:
        raise StateError(str(exc)) from None
    copied = seed(record, night_starts or [], rec.tests, (rec.good.name, rec.bad.name))
    if copied:
        settings.progress(f"culprit search {rec.id}: {copied} start(s) of the night's head to "
                          "head carried over")
    rec.status = "running"
    save(hs, rec)
    runner = settings.runner([*rec.tests, *(rec.options or settings.options)], where)

    def counted(build: Build, index: int) -> Start:
        start = runner(build, index)
        rec.starts = len(record.starts) + 1
        return start

    noise = NoiseLog(record, settings.records_dir or hs.baselines_dir)
    began = time.monotonic()
    try:
        outcome = Bisect(builds, 0, len(builds) - 1, counted, record,
                         min_starts=settings.min_starts, max_starts=settings.max_starts,
                         alpha_session=settings.alpha_session, records=noise.records,
                         progress=settings.progress).run()
    except ReferenceFailed as exc:
        rec.status, rec.headline = "failed", str(exc)
        save(hs, rec)
        return rec
    finally:
        rec.starts = len(record.starts)
        if rec.status == "running":
            save(hs, rec)
    search = Search(None, builds[0], builds[-1], outcome, record, time.monotonic() - began)
    text = search.markdown()
    (where / "culprit.md").write_text(text + "\n", encoding="utf-8")
    write_json_atomic(where / "search.json", search.to_dict())
    if search.found:
        rec.status = "named"
        rec.first_bad = outcome.first_bad.name if outcome.first_bad else ""
    else:
        rec.status = "not confirmed" if search.false_alarm else "undecided"
    rec.headline = search.headline()
    for line in noise.learn(*(b for b in builds if record.of(b)),
                            source=f"night culprit search {rec.id}"):
        settings.progress(line)
    save(hs, rec)
    return rec


def builds_for(rec: SearchRecord, known: dict[str, Build]) -> list[Build]:
    """The search's builds as runnable builds: the stream's own (with their env) where it
    still names them, else made again from the line the state kept (secrets hidden)."""
    from pytest_mi300x.ab.builds import parse_build

    return [known.get(ref.name) or parse_build(ref.spec, where=f"culprit {rec.id}")
            for ref in rec.builds]
