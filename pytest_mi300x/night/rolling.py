"""The rolling baselines: a green night's starts of tonight's build join each test's
baseline, which keeps its most recent ``window`` starts; nothing joins from a red or an
undecided night. The baseline then stands for the last green build (its comparability is
that build's), so the gate judges tonight against the recent green past, and a culprit
search knows its last good build.

An anchor (the baselines as they stood ``ANCHOR_NIGHTS`` green nights back) is kept beside
them, for the drift judgement (judge/drift.py, the power branch): a slow slide of a few
percent a release never trips a night against a baseline that rolls along with it.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from pytest_mi300x.ab.starts import Runs, Start
from pytest_mi300x.judge.baselines import Baseline, BaselineStore, carry_noise
from pytest_mi300x.results.model import read_folder
from pytest_mi300x.results.stack import setup_of

DEFAULT_WINDOW = 10
"""Server starts a rolling baseline keeps."""
ANCHOR_NIGHTS = 7
"""Green nights back that the anchor stands."""


def _provenance(start: Start, test: str, runs: Runs, night: str) -> dict[str, Any]:
    """What the start's result document says of its figures (engine build, flags, host and
    fingerprint, workload and seeds, harness), else what its record kept."""
    folder = Path(start.folder)
    found = [r for r in read_folder(folder) if r.test == test] if folder.is_dir() else []
    base: dict[str, Any] = {"night": night, "build": start.build, "start": start.index}
    if found:
        doc = found[0].doc
        seeds = [r.get("seed") for r in doc.get("runs", [])]
        return {**base, **{k: doc.get(k) for k in ("engine", "server", "host", "fingerprint",
                                                   "harness", "run_id")},
                "workload": (doc.get("workload") or {}).get("scaled"), "seeds": seeds}
    return {**base, "host": {"floors": runs.floors, "noise": runs.noise}, "stack": runs.stack}


def promote(store: BaselineStore, starts: list[Start], night: str,
            window: int = DEFAULT_WINDOW) -> list[str]:
    """Add each test's runs in ``starts`` (tonight's build, a green night) to its rolling
    baseline, one server start each, keeping the latest ``window`` starts. Lines saying
    what changed."""
    lines = []
    tests = sorted({t for s in starts for t, r in s.tests.items() if r.reps})
    for test in tests:
        mine = [(s, s.tests[test]) for s in starts if test in s.tests and s.tests[test].reps]
        key = next((r.store_key for _, r in mine if len(r.store_key) == 3), None)
        if key is None:
            continue
        host, engine, model = key
        new = _night_baseline(test, host, engine, model, mine, night)
        said: list[str] = []

        def merge(old: Baseline | None, new: Baseline = new, said: list[str] = said
                  ) -> Baseline:
            if old is None or setup_of(old.comparability) != setup_of(new.comparability):
                said.append("new" if old is None else "replaced (another setup)")
                return _window(carry_noise(old, new), window)
            offset = max(old.server_of, default=-1) + 1
            merged = Baseline(
                test=new.test, host=new.host, engine=new.engine, model=new.model,
                repetitions=[*old.repetitions, *new.repetitions],
                comparability=new.comparability,
                provenance={**new.provenance,
                            "server_starts": [*old.provenance.get("server_starts", []),
                                              *new.provenance.get("server_starts", [])]},
                servers=[*old.server_of, *(offset + s for s in new.server_of)],
                noise=old.noise, created_at=new.created_at)
            said.append(f"+{new.server_count} start(s)")
            return _window(merged, window)

        path, _, stored = store.update(new, merge)
        lines.append(f"rolling baseline of {test}: {said[0]}, now {stored.server_count} "
                     f"start(s) ({path})")
    return lines


def _night_baseline(test: str, host: str, engine: str, model: str,
                    mine: list[tuple[Start, Runs]], night: str) -> Baseline:
    reps: list[dict[str, float]] = []
    servers: list[int] = []
    starts = []
    for n, (start, runs) in enumerate(mine):
        reps += [dict(r) for r in runs.reps]
        servers += [n] * len(runs.reps)
        starts.append(_provenance(start, test, runs, night))
    last = mine[-1][1]
    return Baseline(test=test, host=host, engine=engine, model=model, repetitions=reps,
                    comparability=dict(last.stack),
                    provenance={**starts[-1], "server_starts": starts, "rolling": True},
                    servers=servers)


def _window(baseline: Baseline, window: int) -> Baseline:
    """The baseline's latest ``window`` server starts (their order is their numbers')."""
    order = sorted(set(baseline.server_of))
    keep = set(order[-window:])
    pairs = [(r, s) for r, s in zip(baseline.repetitions, baseline.server_of, strict=True)
             if s in keep]
    starts = baseline.provenance.get("server_starts") or []
    return Baseline(test=baseline.test, host=baseline.host, engine=baseline.engine,
                    model=baseline.model, repetitions=[r for r, _ in pairs],
                    comparability=baseline.comparability,
                    provenance={**baseline.provenance, "server_starts": starts[-window:]},
                    servers=[s for _, s in pairs], noise=baseline.noise,
                    created_at=baseline.created_at)


def snapshot(baselines: Path, anchors: Path, night: str, keep: int = ANCHOR_NIGHTS) -> Path:
    """Copy the baselines as they stand after a green night; keep the latest ``keep`` + 1
    copies, so that the oldest is the baselines ``keep`` green nights back."""
    target = anchors / night
    if target.exists():
        shutil.rmtree(target)
    if baselines.is_dir():
        shutil.copytree(baselines, target, ignore=shutil.ignore_patterns("*.lock"))
    else:
        target.mkdir(parents=True)
    copies = sorted(p for p in anchors.iterdir() if p.is_dir())
    for old in copies[:-(keep + 1)]:
        shutil.rmtree(old)
    return target


def anchor(anchors: Path) -> Path | None:
    """The oldest kept copy: the anchor drift is judged against."""
    copies = sorted(p for p in anchors.iterdir() if p.is_dir()) if anchors.is_dir() else []
    return copies[0] if copies else None


def drift_lines(anchors: Path, baselines: Path) -> list[str]:
    """The drift judgement of the rolling baselines against their anchor (judge/drift.py):
    a slow slide that no night sees against a baseline rolling along with it."""
    from pytest_mi300x.judge.drift import judge_stores

    where = anchor(anchors)
    if where is None:
        return []
    return judge_stores(BaselineStore(where), BaselineStore(baselines))
