"""``pytest-mi300x baselines refresh|show``."""

from __future__ import annotations

import filecmp
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from pytest_mi300x.judge.baselines import MIN_GATING_STARTS

DEFAULT_SERVER_STARTS = 5
"""Server starts per refreshed baseline: the test's own start-to-start spread is measured on
them (4 degrees of freedom; 3 starts gave 2, too few for a nightly start to resolve a 10%
change at any spread). `baselines show` says what each test resolves and what it needs."""


def _whole(option: str, value: str, example: int) -> int:
    if not value.isdigit() or int(value) < 1:
        raise ValueError(f"{option} {value!r} is not a whole number >= 1; "
                         f"write e.g. {option} {example}")
    return int(value)


def _own_options(args: list[str]) -> tuple[int, int | None, bool, list[str]]:
    """``--servers N``, ``--start K`` and ``--dry-run`` taken out of the arguments otherwise
    meant for pytest: (server starts, the one start to run or None, dry run, the rest)."""
    rest: list[str] = []
    values: dict[str, str] = {}
    dry_run = False
    it = iter(args)
    for arg in it:
        name, eq, value = arg.partition("=")
        if name in ("--servers", "--start"):
            values[name] = value if eq else next(it, "")
        elif arg == "--dry-run":
            dry_run = True
        else:
            rest.append(arg)
    starts = (_whole("--servers", values["--servers"], DEFAULT_SERVER_STARTS)
              if "--servers" in values else DEFAULT_SERVER_STARTS)
    start = _whole("--start", values["--start"], 1) if "--start" in values else None
    return starts, start, dry_run, rest


def refresh(pytest_args: list[str]) -> int:
    """Measure the selection's baselines anew over ``--servers`` starts, in a copy of the
    baselines folder; the new ones replace the stored ones only where no level moved beyond
    what the starts resolve (judge/drift.py), or with ``--accept``."""
    accept = "--accept" in pytest_args
    try:
        starts, only, dry_run, args = _own_options(
            [a for a in pytest_args if a not in ("--", "--accept")])
    except ValueError as exc:
        print(f"pytest-mi300x baselines refresh: {exc}", file=sys.stderr)
        return 2
    args = args or ["suites/"]
    baselines = _baselines_dir(args)
    if starts < MIN_GATING_STARTS and only is None:
        print(f"pytest-mi300x baselines refresh: --servers {starts} makes baselines of one "
              "server start, which gate nothing (no start-to-start evidence: runs inside one "
              f"start never stand in for starts); give --servers {DEFAULT_SERVER_STARTS}",
              file=sys.stderr)
    numbers = [only] if only is not None else list(range(1, starts + 1))
    of = f"{starts}" if only is None else "a refresh"
    if only is not None or dry_run:
        # --start K is one job of the baselines workflow: its folder is the workflow's own
        # staging (an artifact handed from job to job, judged when the set is offered).
        for start in numbers:
            rc = _start(start, of, args, dry_run)
            if rc:
                return rc
        return 0 if dry_run else show(baselines)
    with tempfile.TemporaryDirectory(prefix="pytest-mi300x-refresh-") as tmp:
        # The stored baselines are never half-written: the starts write into a copy (which
        # keeps what the stored ones know of their noise), taken only when judged.
        staging = Path(tmp) / "baselines"
        if baselines.is_dir():
            shutil.copytree(baselines, staging, ignore=shutil.ignore_patterns("*.lock"))
        else:
            staging.mkdir()
        for start in numbers:
            rc = _start(start, of, [*args, f"--baselines-dir={staging}"], False)
            if rc != 0:
                if start > 1 and _take(staging, baselines, accept) == 0:
                    gates = ("; with one start they gate nothing"
                             if start - 1 < MIN_GATING_STARTS else "")
                    print(f"pytest-mi300x baselines refresh: server start {start} failed "
                          f"(exit {rc}); the baselines hold the first {start - 1} "
                          f"start(s){gates}. Run it again to refresh them whole",
                          file=sys.stderr)
                return rc
        taken = _take(staging, baselines, accept)
        if taken:
            return taken
    print(f"\nwhat the baselines resolve ({baselines}):", flush=True)
    return show(baselines)


def _start(start: int, of: str, args: list[str], dry_run: bool) -> int:
    """One server start of a refresh: one pytest session (it starts its own servers)."""
    mode = "--update-baselines" if start == 1 else "--add-baseline-server"
    cmd = [sys.executable, "-m", "pytest", mode, *args]
    if dry_run:
        print(f"server start {start} of {of} would run:", shlex.join(cmd), flush=True)
        return 0
    print(f"server start {start} of {of}; running:", shlex.join(cmd), flush=True)
    return subprocess.call(cmd)


def _take(staging: Path, baselines: Path, accept: bool) -> int:
    """Copy the refreshed baselines in, unless a level moved and ``accept`` is off: then
    say which, keep them aside, and return 1."""
    from pytest_mi300x.judge.baselines import BaselineError, BaselineStore
    from pytest_mi300x.judge.drift import refresh_moves
    from pytest_mi300x.results.files import RESULTS_DIRNAME

    try:
        moves = refresh_moves(BaselineStore(baselines), BaselineStore(staging))
    except BaselineError as exc:
        print(f"pytest-mi300x baselines refresh: {exc}", file=sys.stderr)
        return 2
    for relative, drift in moves.items():
        for line in drift.lines():
            print(f"{baselines / relative}: {line}", flush=True)
    if moves and not accept:
        kept = Path(RESULTS_DIRNAME) / f"refused-baselines-{time.strftime('%Y%m%d-%H%M%S')}"
        shutil.copytree(staging, kept, ignore=shutil.ignore_patterns("*.lock"))
        print(f"pytest-mi300x baselines refresh: {len(moves)} baseline(s) would move a level "
              "beyond what their starts resolve (above); the stored baselines are kept, the "
              f"new ones are in {kept}. If the new level is right (a change you meant), run "
              "the refresh again with --accept", file=sys.stderr)
        return 1
    for path in sorted(staging.rglob("*.json")):
        target = baselines / path.relative_to(staging)
        if not target.exists() or not filecmp.cmp(path, target, shallow=False):
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, target)
    if moves:
        print(f"taken with --accept: {len(moves)} baseline(s) moved a level", flush=True)
    return 0


def _baselines_dir(args: list[str]) -> Path:
    """The baselines folder the pytest arguments name (default baselines/)."""
    for i, arg in enumerate(args):
        if arg.startswith("--baselines-dir="):
            return Path(arg.split("=", 1)[1])
        if arg == "--baselines-dir" and i + 1 < len(args):
            return Path(args[i + 1])
    return Path("baselines")


def show(root: Path) -> int:
    from pytest_mi300x.judge.baselines import BaselineError, BaselineStore

    try:
        stored = BaselineStore(root).all()
    except BaselineError as exc:
        print(f"pytest-mi300x: {exc}", file=sys.stderr)
        return 2
    if not stored:
        print(f"no baselines under {root}; make them with: pytest-mi300x baselines refresh")
        return 0
    from pytest_mi300x.judge.gate import preview
    from pytest_mi300x.judge.multiplicity import family_of, per_test_alpha

    per_key: dict[tuple[str, str, str], int] = {}
    for _, b in stored:
        per_key[(b.host, b.engine, b.model)] = per_key.get((b.host, b.engine, b.model), 0) + 1
    now = datetime.now(UTC)
    for path, b in stored:
        try:
            created = datetime.strptime(b.created_at, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
            age = f"{(now - created).total_seconds() / 86400:.1f} d"
        except ValueError:
            age = "?"
        stack = b.comparability
        print(f"{path.relative_to(root)}  age {age}  reps {len(b.repetitions)}  "
              f"server starts {b.server_count}  "
              f"engine {stack.get('engine_build')} ({stack.get('engine_version')})  "
              f"torch {stack.get('torch')}  cpu {stack.get('cpu_model')} x{stack.get('cpu_count')}")
        tests = per_key[(b.host, b.engine, b.model)]
        if b.server_count < MIN_GATING_STARTS:
            print(f"  gates nothing: a baseline of {b.server_count} server start holds no "
                  "start-to-start evidence; refresh it: pytest-mi300x baselines refresh "
                  f"--servers {DEFAULT_SERVER_STARTS}")
            continue
        seen: set[str] = set()
        # request_throughput speaks for the throughput family
        for v in sorted(preview(b, per_test_alpha(tests)),
                        key=lambda v: (v.metric != "request_throughput", v.metric)):
            if family_of(v.metric) in seen or v.noise_source == "":
                continue
            seen.add(family_of(v.metric))
            print(f"  {v.metric}: spread {v.noise_pct:.1f}% ({v.noise_source}); a nightly "
                  f"start, as one of {tests} gated test(s): {v.resolution()}")
    return 0
