"""``pytest-mi300x baselines refresh|show``."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

from pytest_mi300x.judge.baselines import MIN_GATING_STARTS

DEFAULT_SERVER_STARTS = 5
"""Server starts per refreshed baseline: the test's own start-to-start spread is measured on
them (4 degrees of freedom; 3 starts gave 2, too few for a nightly start to resolve a 10%
change at any spread). `baselines show` says what each test resolves and what it needs."""


def _server_starts(args: list[str]) -> tuple[int, list[str]]:
    """``--servers N`` taken out of the arguments otherwise meant for pytest."""
    rest: list[str] = []
    value: str | None = None
    it = iter(args)
    for arg in it:
        if arg == "--servers":
            value = next(it, "")
        elif arg.startswith("--servers="):
            value = arg.split("=", 1)[1]
        else:
            rest.append(arg)
    if value is None:
        return DEFAULT_SERVER_STARTS, rest
    if not value.isdigit() or int(value) < 1:
        raise ValueError(f"--servers {value!r} is not a whole number >= 1; "
                         f"write e.g. --servers {DEFAULT_SERVER_STARTS}")
    return int(value), rest


def refresh(pytest_args: list[str]) -> int:
    try:
        starts, args = _server_starts([a for a in pytest_args if a != "--"])
    except ValueError as exc:
        print(f"pytest-mi300x baselines refresh: {exc}", file=sys.stderr)
        return 2
    args = args or ["suites/"]
    baselines = _baselines_dir(args)
    if starts < MIN_GATING_STARTS:
        print(f"pytest-mi300x baselines refresh: --servers {starts} makes baselines of one "
              "server start, which gate nothing (no start-to-start evidence: runs inside one "
              f"start never stand in for starts); give --servers {DEFAULT_SERVER_STARTS}",
              file=sys.stderr)
    for start in range(1, starts + 1):
        # Each pytest session starts its own servers: that is what makes a start.
        mode = "--update-baselines" if start == 1 else "--add-baseline-server"
        cmd = [sys.executable, "-m", "pytest", mode, *args]
        print(f"server start {start} of {starts}; running:", " ".join(cmd), flush=True)
        rc = subprocess.call(cmd)
        if rc != 0:
            if start > 1:
                gates = ("; with one start they gate nothing" if start - 1 < MIN_GATING_STARTS
                         else "")
                print(f"pytest-mi300x baselines refresh: server start {start} failed (exit "
                      f"{rc}); the baselines hold the first {start - 1} start(s){gates}. Run "
                      "it again to refresh them whole", file=sys.stderr)
            return rc
    print(f"\nwhat the baselines resolve ({baselines}):", flush=True)
    return show(baselines)


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
