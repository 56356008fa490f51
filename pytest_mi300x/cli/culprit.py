"""``pytest-mi300x culprit``: from a red night's results to the build that caused it
(ab/culprit.py). Options of its own come first; anything else is the pytest selection."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from pytest_mi300x.cli.ab import (
    EXIT_BAD_INPUT,
    EXIT_OK,
    EXIT_REGRESSION,
    EXIT_UNDECIDED,
    common_options,
    run_bisect,
    split_args,
)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="pytest-mi300x culprit", allow_abbrev=False,
        description="From a red night to the build that caused it: confirm the failing tests "
        "head to head (the last good build against the failing one), then bisect the builds "
        "between them, and write the first bad build, its evidence and the runner-up "
        "suspects (culprit.md, culprit.json, the CI job summary). A failure shown not to "
        "reproduce (every gated metric within its floor) is marked a false alarm; one still "
        "undecided is not. Resumable: rerun the same command. Exit 0: false alarm; 1: first "
        "bad build found and confirmed; 2: bad input, or the good or bad build measured "
        "nothing; 3: undecided (not confirmed, or the bisect could not name a build).")
    p.add_argument("--results", type=Path, default=None, metavar="DIR",
                   help="the red night's results folder: its failing tests, its build (bad) "
                        "and its baselines' build (good)")
    p.add_argument("--good", default=None, metavar="BUILD",
                   help="the last build that passed (default: the night's baselines' build)")
    p.add_argument("--bad", default=None, metavar="BUILD",
                   help="the build that failed (default: the night's build)")
    p.add_argument("--builds", type=Path, default=None, metavar="FILE",
                   help="the builds in order, oldest first, good and bad among them "
                        "(default: just the two)")
    p.add_argument("--summary", default=os.environ.get("GITHUB_STEP_SUMMARY"),
                   help="also append the Markdown to this file (default: $GITHUB_STEP_SUMMARY)")
    common_options(p)
    return p


def _find(builds: list, spec: str, option: str) -> int:  # noqa: ANN001
    """The position of ``spec`` in the list: by name, else by the engine build it runs."""
    for i, b in enumerate(builds):
        if b.name == spec:
            return i
    same = [i for i, b in enumerate(builds) if b.engine_build == spec and not b.engine_args
            and not b.engine_env]
    if len(same) == 1:
        return same[0]
    raise ValueError(f"{option} {spec!r} is not in the builds list; add it (oldest first) "
                     "or name it as the list does")


def run(argv: list[str]) -> int:
    from pytest_mi300x.ab.builds import BuildError, parse_build, read_builds
    from pytest_mi300x.ab.culprit import NightError, Search, other_host_kind, read_night
    from pytest_mi300x.hosts.fingerprint import host_fingerprint
    from pytest_mi300x.results.files import write_json_atomic

    def fail(message: str) -> int:
        print(f"pytest-mi300x culprit: {message}", file=sys.stderr)
        return EXIT_BAD_INPUT

    args, selection = split_args(argv, parser())
    night = None
    if args.results is not None:
        try:
            night = read_night(args.results)
        except NightError as exc:
            return fail(str(exc))
        differs = other_host_kind(night, host_fingerprint())
        if differs:
            return fail(f"the red night ran on another kind of machine ({'; '.join(differs)}): "
                        "run the search on a runner of that kind")
        # The failing tests, with any pytest options given, on the host the night ran on.
        options = [] if selection == ["suites/"] else selection
        if not any(o.startswith("--gpu-host") for o in options) and night.host not in ("", "?"):
            options = [f"--gpu-host={night.host}", *options]
        selection = [*night.tests, *options]
    elif selection == ["suites/"]:
        return fail("give the red night's --results folder, or the failing tests to search")
    good_spec = args.good or (night.good if night else None)
    bad_spec = args.bad or (night.bad if night else None)
    if not good_spec or not bad_spec:
        return fail("no last good build: give --good BUILD (the build the baselines were "
                    "made with)" if bad_spec else "give --bad BUILD (the build that failed)")
    try:
        good = parse_build(good_spec, args.commit_template, where="--good")
        bad = parse_build(bad_spec, args.commit_template, where="--bad")
        builds = (read_builds(args.builds, args.commit_template) if args.builds
                  else [good, bad])
        g, b = _find(builds, good.name, "--good"), _find(builds, bad.name, "--bad")
    except (BuildError, ValueError) as exc:
        return fail(str(exc))
    if g == b:
        return fail(f"the night failed against a baseline of the same build {bad.name!r}: no "
                    "build to blame (the machine or the noise: run pytest-mi300x steadiness)")
    if g > b:
        return fail(f"--good {builds[g].name!r} comes after --bad {builds[b].name!r} in the "
                    "builds list; list builds oldest first")
    good, bad = builds[g], builds[b]
    done = run_bisect(args, "pytest-mi300x culprit", "culprit", builds, g, b, selection,
                      f"culprit search: {good.name} (last good) .. {bad.name} (failed), "
                      f"{b - g - 1} build(s) between, on {' '.join(selection)}")
    if isinstance(done, int):
        return done
    outcome, record, noise, out = done.outcome, done.record, done.noise, done.out
    search = Search(night, good, bad, outcome, record, done.seconds)
    text = search.markdown()
    print(text)
    said = "false alarm" if search.false_alarm else "not confirmed"
    learned = (noise.learn(good, bad, source=f"{said}: {bad.name} against {good.name}")
               if not outcome.confirmed else
               noise.learn(*(x for x in builds if record.of(x)),
                           source=f"culprit search {good.name}..{bad.name}"))
    for line in learned:
        print(line)
    write_json_atomic(out / "culprit.json", search.to_dict())
    (out / "culprit.md").write_text(text + "\n")
    if args.summary:
        with open(args.summary, "a", encoding="utf-8") as fh:
            fh.write(text + "\n")
    if search.false_alarm:
        return EXIT_OK
    return EXIT_REGRESSION if search.found else EXIT_UNDECIDED
