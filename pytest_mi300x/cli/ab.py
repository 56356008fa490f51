"""``pytest-mi300x ab`` and ``pytest-mi300x bisect``: builds against each other, outside a
test run. Options of their own come first; everything else is the pytest selection."""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pytest_mi300x.judge import multiplicity
from pytest_mi300x.results.files import RESULTS_DIRNAME

EXIT_OK, EXIT_REGRESSION, EXIT_BAD_INPUT, EXIT_UNDECIDED = 0, 1, 2, 3


def common_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--starts", type=int, default=3, metavar="N",
                        help="server starts per build before the first look (default 3)")
    parser.add_argument("--max-starts", type=int, default=6, metavar="M",
                        help="starts per build at most, added in pairs while a gated metric "
                             "is undecided (default 6); each look spends part of the "
                             "false-alarm budget")
    parser.add_argument("--repeats", type=int, default=None, metavar="R",
                        help="measured runs per test in each start (default: the suite's)")
    parser.add_argument("--commit-template", default=None, metavar="T",
                        help="turns commit:SHA into a build, e.g. 'docker:rocm/vllm-ci:{sha}'")
    parser.add_argument("--out", type=Path, default=None,
                        help="folder for the starts and the report (a rerun with the same "
                             "folder continues)")
    parser.add_argument("--baselines-dir", type=Path, default=Path("baselines"),
                        help="where the tests' noise records are kept with their baselines "
                             "(read as a prior while they agree with these starts; these "
                             "starts are added to them); default baselines/")
    parser.add_argument("--alpha", type=float, default=multiplicity.ALPHA_SESSION * 100,
                        metavar="PCT",
                        help="false-alarm budget of the whole run, percent, one-sided, "
                             "split over the selected tests (at most 1%% each) and over the "
                             f"looks (default {multiplicity.ALPHA_SESSION * 100:g})")


def ab_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pytest-mi300x ab", allow_abbrev=False,
        description="Run the selected tests on two builds, interleaved (A B B A ...), one "
        "server start per pytest session, and judge each metric on the start-level data at "
        "balanced looks. Exit 0: every gated metric no change or better; 1: B regressed, "
        "or B measured nothing on a test A measured; 2: bad input, or A measured nothing; "
        "3: a gated metric still undecided at the last start.")
    parser.add_argument("--a", required=True, metavar="BUILD", help="the reference build")
    parser.add_argument("--b", required=True, metavar="BUILD", help="the build to judge")
    parser.add_argument("--threshold", type=float, default=None, metavar="PCT",
                        help="smallest change that counts (default: the host's floors)")
    common_options(parser)
    return parser


def bisect_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pytest-mi300x bisect", allow_abbrev=False,
        description="Find the first build of an ordered list that made the selected tests "
        "slower: confirm that --good and --bad differ, classify midpoints (their starts "
        "interleaved with good and bad starts), set aside builds that measure nothing, and "
        "confirm the pair it ends on head to head. Resumable: rerun the same command to "
        "continue. Exit 0: good and bad are shown not to differ (every gated metric within "
        "its floor); 1: the first bad build was found and confirmed; 2: bad input, or good or "
        "bad measured nothing; 3: undecided (good and bad not confirmed either way, a build "
        "fell between them, or the final pair did not confirm).")
    parser.add_argument("--good", required=True, metavar="BUILD")
    parser.add_argument("--bad", required=True, metavar="BUILD")
    parser.add_argument("--builds", required=True, type=Path, metavar="FILE",
                        help="builds in order, oldest first, one a line (both --good and "
                             "--bad among them)")
    parser.add_argument("--metric", default=None,
                        help="bisect on this metric (default: the largest gated regression)")
    common_options(parser)
    return parser


def split_args(argv: list[str], parser: argparse.ArgumentParser
           ) -> tuple[argparse.Namespace, list[str]]:
    args, selection = parser.parse_known_args(argv)
    if args.starts < 2 or args.max_starts < args.starts:
        parser.error(f"--starts {args.starts} / --max-starts {args.max_starts}: give at least "
                     "2 starts per build and --max-starts >= --starts")
    if not 0 < args.alpha <= 50:
        parser.error(f"--alpha {args.alpha:g} is not a percent in (0, 50]; write e.g. --alpha 5")
    return args, [a for a in selection if a != "--"] or ["suites/"]


def out_folder(args: argparse.Namespace, kind: str, key: object) -> Path:
    if args.out is not None:
        return Path(args.out)
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:8]
    return Path(RESULTS_DIRNAME) / f"{kind}-{digest}"


def open_record(args: argparse.Namespace, kind: str, meta: dict[str, Any], prog: str,
                headline: str) -> tuple[Path, Any] | None:
    """The run's folder and its record of starts (an earlier run's, to continue), with the
    headline printed; None (said on stderr) when the record cannot be read."""
    from pytest_mi300x.ab.starts import Record
    from pytest_mi300x.results.files import ReadError

    out = out_folder(args, kind, meta)
    try:
        record = Record(out / "starts.json", meta)
    except ReadError as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return None
    print(f"{headline}; starts in {out}"
          + (f" ({len(record.starts)} recorded, continuing)" if record.starts else ""),
          flush=True)
    return out, record


def ab(argv: list[str]) -> int:
    from pytest_mi300x.ab.builds import BuildError, parse_build
    from pytest_mi300x.ab.headtohead import HeadToHead, StartFailed, table
    from pytest_mi300x.ab.noiselog import NoiseLog
    from pytest_mi300x.ab.starts import SessionRunner
    from pytest_mi300x.results.files import write_json_atomic

    args, selection = split_args(argv, ab_parser())
    try:
        a = parse_build(args.a, args.commit_template, where="--a")
        b = parse_build(args.b, args.commit_template, where="--b")
    except BuildError as exc:
        print(f"pytest-mi300x ab: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    if a.name == b.name:
        print(f"pytest-mi300x ab: --a and --b are the same build {a.name!r}; give two builds "
              "(or a +label on one to run an A/A check)", file=sys.stderr)
        return EXIT_BAD_INPUT
    meta = {"a": a.describe(), "b": b.describe(), "selection": selection,
            "repeats": args.repeats, "looks": [args.starts, args.max_starts]}
    opened = open_record(args, "ab", meta, "pytest-mi300x ab",
                         f"A/B of {a.name} (A) and {b.name} (B) on {' '.join(selection)}")
    if opened is None:
        return EXIT_BAD_INPUT
    out, record = opened
    started = time.monotonic()
    noise = NoiseLog(record, args.baselines_dir)
    runner = SessionRunner(selection, out, repeats=args.repeats,
                           progress=lambda line: print(line, flush=True))
    h2h = HeadToHead(a, b, runner, record, min_starts=args.starts,
                     max_starts=args.max_starts, threshold_pct=args.threshold,
                     alpha_session=args.alpha / 100, records=noise.records,
                     progress=lambda line: print(line, flush=True))
    try:
        outcome = h2h.run()
    except StartFailed as exc:
        print(f"pytest-mi300x ab: {exc}", file=sys.stderr)
        # B that cannot run what A runs fails the A/B; A that cannot leaves nothing to judge.
        return EXIT_REGRESSION if exc.build == b.name else EXIT_BAD_INPUT
    lines = table(outcome.verdicts)
    worse, left = outcome.regressed, outcome.undecided
    notes = [f"{test}: build {'A' if side == 'A' else 'B'} ({(a if side == 'A' else b).name}) "
             "measured nothing; see its starts' pytest.log" for test, side in
             outcome.dropped.items()]
    notes += noise.steadiness_lines(a, b)
    if worse:
        summary, rc = f"{len(worse)} gated regression(s) of B against A", EXIT_REGRESSION
    elif "B" in outcome.dropped.values():
        summary, rc = "B measured nothing on a test A measured: the A/B fails", EXIT_REGRESSION
    elif outcome.dropped:
        summary, rc = "A measured nothing on a test: nothing to judge B against", EXIT_BAD_INPUT
    elif left:
        summary, rc = (f"undecided after {outcome.looks} starts a side: "
                       f"{len(left)} gated metric(s) "
                       "could not be resolved (see 'resolves'; more starts: --max-starts)",
                       EXIT_UNDECIDED)
    else:
        summary, rc = "no gated regression of B against A; every gated metric decided", EXIT_OK
    unresolved = [f"  {t}: {v.metric}: {v.resolution()}" for t, vs in outcome.verdicts.items()
                  for v in vs if v.gated and not v.decided]
    text = "\n".join([*lines, "", *notes, *(["undecided:", *unresolved] if unresolved else []),
                      f"{summary}; {time.monotonic() - started:.0f} s"])
    print(text)
    for v in worse:
        print(v.message())
    added = noise.learn(a, b, source=f"ab {a.name} vs {b.name}")
    for line in added:
        print(line)
    write_json_atomic(out / "ab.json", {
        "a": a.describe(), "b": b.describe(), "selection": selection, "exit": rc,
        "looks": outcome.looks, "dropped": outcome.dropped, "summary": summary,
        "verdicts": {t: [v.to_dict() for v in vs] for t, vs in outcome.verdicts.items()}})
    (out / "ab.md").write_text("```\n" + text + "\n```\n")
    return rc


@dataclass
class Bisected:
    """A bisect run by ``run_bisect``, with what its caller reports from."""

    outcome: Any
    record: Any
    noise: Any
    out: Path
    seconds: float


def run_bisect(args: argparse.Namespace, prog: str, kind: str, builds: list[Any], g: int,
               b: int, selection: list[str], headline: str) -> Bisected | int:
    """The bisect ``bisect`` and ``culprit`` both run: its record (resumed when there is
    one), each start a pytest session, the tests' noise records; an exit code on failure."""
    from pytest_mi300x.ab.bisect import Bisect, ReferenceFailed
    from pytest_mi300x.ab.noiselog import NoiseLog
    from pytest_mi300x.ab.starts import SessionRunner

    meta = {"builds": [x.describe() for x in builds], "good": g, "bad": b,
            "selection": selection, "repeats": args.repeats,
            "looks": [args.starts, args.max_starts]}
    opened = open_record(args, kind, meta, prog, headline)
    if opened is None:
        return EXIT_BAD_INPUT
    out, record = opened
    noise = NoiseLog(record, args.baselines_dir)
    runner = SessionRunner(selection, out, repeats=args.repeats,
                           progress=lambda line: print(line, flush=True))
    started = time.monotonic()
    try:
        outcome = Bisect(builds, g, b, runner, record, metric=getattr(args, "metric", None),
                         min_starts=args.starts, max_starts=args.max_starts,
                         alpha_session=args.alpha / 100, records=noise.records,
                         progress=lambda line: print(line, flush=True)).run()
    except ReferenceFailed as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    return Bisected(outcome, record, noise, out, time.monotonic() - started)


def bisect(argv: list[str]) -> int:
    from pytest_mi300x.ab.builds import BuildError, parse_build, read_builds
    from pytest_mi300x.ab.headtohead import table
    from pytest_mi300x.results.files import write_json_atomic

    args, selection = split_args(argv, bisect_parser())
    try:
        builds = read_builds(args.builds, args.commit_template)
        good = parse_build(args.good, args.commit_template, where="--good")
        bad = parse_build(args.bad, args.commit_template, where="--bad")
    except BuildError as exc:
        print(f"pytest-mi300x bisect: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    names = [b.name for b in builds]
    for option, build in (("--good", good), ("--bad", bad)):
        if build.name not in names:
            print(f"pytest-mi300x bisect: {option} {build.name!r} is not in {args.builds}; "
                  "add it to the list (oldest first)", file=sys.stderr)
            return EXIT_BAD_INPUT
    g, b = names.index(good.name), names.index(bad.name)
    if g >= b:
        print(f"pytest-mi300x bisect: --good {good.name!r} comes after --bad {bad.name!r} in "
              f"{args.builds}; list builds oldest first", file=sys.stderr)
        return EXIT_BAD_INPUT
    done = run_bisect(args, "pytest-mi300x bisect", "bisect", builds, g, b, selection,
                      f"bisect of {b - g - 1} build(s) between {good.name} and {bad.name}")
    if isinstance(done, int):
        return done
    outcome, record, noise, out = done.outcome, done.record, done.noise, done.out
    lines = ["good vs bad:", *table(outcome.confirmation), ""]
    lines += [step.line() for step in outcome.steps]
    if outcome.culprit_check and outcome.culprit_check is not outcome.confirmation:
        lines += ["", "last good vs first bad:", *table(outcome.culprit_check)]
    lines += ["", outcome.reason]
    print("\n".join(lines))
    for line in noise.learn(*(x for x in builds if record.of(x)),
                            source=f"bisect {good.name}..{bad.name}"):
        print(line)
    write_json_atomic(out / "bisect.json", {
        "confirmed": outcome.confirmed, "undecided": outcome.undecided,
        "test": outcome.test, "metric": outcome.metric,
        "first_bad": outcome.first_bad.describe() if outcome.first_bad else None,
        "last_good": outcome.last_good.describe() if outcome.last_good else None,
        "culprit_confirmed": outcome.culprit_confirmed, "suspects": outcome.suspects,
        "skipped": outcome.skipped,
        "steps": [s.to_dict() for s in outcome.steps],
        "confirmation": {t: [v.to_dict() for v in vs]
                         for t, vs in outcome.confirmation.items()},
        "culprit_check": {t: [v.to_dict() for v in vs]
                          for t, vs in outcome.culprit_check.items()},
        "reason": outcome.reason})
    (out / "bisect.md").write_text("```\n" + "\n".join(lines) + "\n```\n")
    if not outcome.confirmed:
        return EXIT_UNDECIDED if outcome.undecided else EXIT_OK
    return EXIT_REGRESSION if outcome.culprit_confirmed and outcome.first_bad else EXIT_UNDECIDED
