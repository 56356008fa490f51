"""``pytest-mi300x ab`` and ``pytest-mi300x bisect``: builds against each other, outside a
test run. Options of their own come first; everything else is the pytest selection."""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path

from pytest_mi300x.results.files import RESULTS_DIRNAME

EXIT_OK, EXIT_REGRESSION, EXIT_BAD_INPUT, EXIT_UNDECIDED = 0, 1, 2, 3


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--starts", type=int, default=3, metavar="N",
                        help="server starts per build before a verdict (default 3)")
    parser.add_argument("--max-starts", type=int, default=6, metavar="M",
                        help="starts per build at most, added while a gated metric is "
                             "undecided (default 6)")
    parser.add_argument("--repeats", type=int, default=None, metavar="R",
                        help="measured runs per test in each start (default: the suite's)")
    parser.add_argument("--commit-template", default=None, metavar="T",
                        help="turns commit:SHA into a build, e.g. 'docker:rocm/vllm-ci:{sha}'")
    parser.add_argument("--out", type=Path, default=None,
                        help="folder for the starts and the report (a rerun with the same "
                             "folder continues)")


def ab_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pytest-mi300x ab", allow_abbrev=False,
        description="Run the selected tests on two builds, interleaved (A B B A ...), one "
        "server start per pytest session, and judge each metric on the start-level data. "
        "Exit 0: no regression; 1: B regressed; 2: bad input.")
    parser.add_argument("--a", required=True, metavar="BUILD", help="the reference build")
    parser.add_argument("--b", required=True, metavar="BUILD", help="the build to judge")
    parser.add_argument("--threshold", type=float, default=None, metavar="PCT",
                        help="smallest change that counts (default: the host's floors)")
    _common(parser)
    return parser


def bisect_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pytest-mi300x bisect", allow_abbrev=False,
        description="Find the first build of an ordered list that made the selected tests "
        "slower: confirm that --good and --bad differ, then classify midpoints. Resumable: "
        "rerun the same command to continue. Exit 0: good "
        "and bad do not differ; 1: the first bad build was found; 2: bad input; 3: a build "
        "fell between good and bad (more than one change in the range).")
    parser.add_argument("--good", required=True, metavar="BUILD")
    parser.add_argument("--bad", required=True, metavar="BUILD")
    parser.add_argument("--builds", required=True, type=Path, metavar="FILE",
                        help="builds in order, oldest first, one a line (both --good and "
                             "--bad among them)")
    parser.add_argument("--metric", default=None,
                        help="bisect on this metric (default: the largest gated regression)")
    _common(parser)
    return parser


def _split(argv: list[str], parser: argparse.ArgumentParser
           ) -> tuple[argparse.Namespace, list[str]]:
    args, selection = parser.parse_known_args(argv)
    if args.starts < 2 or args.max_starts < args.starts:
        parser.error(f"--starts {args.starts} / --max-starts {args.max_starts}: give at least "
                     "2 starts per build and --max-starts >= --starts")
    return args, [a for a in selection if a != "--"] or ["suites/"]


def _out(args: argparse.Namespace, kind: str, key: object) -> Path:
    if args.out is not None:
        return Path(args.out)
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:8]
    return Path(RESULTS_DIRNAME) / f"{kind}-{digest}"


def ab(argv: list[str]) -> int:
    from pytest_mi300x.ab.builds import BuildError, parse_build
    from pytest_mi300x.ab.headtohead import HeadToHead, StartFailed, regressed, table
    from pytest_mi300x.ab.starts import Record, SessionRunner
    from pytest_mi300x.results.files import ReadError, write_json_atomic

    args, selection = _split(argv, ab_parser())
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
            "repeats": args.repeats}
    out = _out(args, "ab", meta)
    try:
        record = Record(out / "starts.json", meta)
    except ReadError as exc:
        print(f"pytest-mi300x ab: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    print(f"A/B of {a.name} (A) and {b.name} (B) on {' '.join(selection)}; starts in {out}",
          flush=True)
    started = time.monotonic()
    runner = SessionRunner(selection, out, repeats=args.repeats)
    try:
        verdicts = HeadToHead(a, b, runner, record, min_starts=args.starts,
                              max_starts=args.max_starts, threshold_pct=args.threshold,
                              progress=lambda line: print(line, flush=True)).run()
    except StartFailed as exc:
        print(f"pytest-mi300x ab: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    lines = table(verdicts)
    worse = regressed(verdicts)
    summary = (f"{len(worse)} gated regression(s) of B against A" if worse
               else "no gated regression of B against A")
    text = "\n".join([*lines, "", f"{summary}; {time.monotonic() - started:.0f} s"])
    print(text)
    for v in worse:
        print(v.message())
    write_json_atomic(out / "ab.json", {
        "a": a.describe(), "b": b.describe(), "selection": selection,
        "verdicts": {t: [v.to_dict() for v in vs] for t, vs in verdicts.items()}})
    (out / "ab.md").write_text("```\n" + text + "\n```\n")
    return EXIT_REGRESSION if worse else EXIT_OK


def bisect(argv: list[str]) -> int:
    from pytest_mi300x.ab.bisect import Bisect
    from pytest_mi300x.ab.builds import BuildError, parse_build, read_builds
    from pytest_mi300x.ab.headtohead import StartFailed, table
    from pytest_mi300x.ab.starts import Record, SessionRunner
    from pytest_mi300x.results.files import ReadError, write_json_atomic

    args, selection = _split(argv, bisect_parser())
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
    meta = {"builds": [x.describe() for x in builds], "good": g, "bad": b,
            "selection": selection, "repeats": args.repeats}
    out = _out(args, "bisect", meta)
    try:
        record = Record(out / "starts.json", meta)
    except ReadError as exc:
        print(f"pytest-mi300x bisect: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    print(f"bisect of {b - g - 1} build(s) between {good.name} and {bad.name}; starts in {out}"
          + (f" ({len(record.starts)} recorded, continuing)" if record.starts else ""),
          flush=True)
    runner = SessionRunner(selection, out, repeats=args.repeats)
    try:
        outcome = Bisect(builds, g, b, runner, record, metric=args.metric,
                         min_starts=args.starts, max_starts=args.max_starts,
                         progress=lambda line: print(line, flush=True)).run()
    except StartFailed as exc:
        print(f"pytest-mi300x bisect: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    lines = ["good vs bad:", *table(outcome.confirmation), ""]
    lines += [step.line() for step in outcome.steps]
    lines += ["", outcome.reason]
    print("\n".join(lines))
    write_json_atomic(out / "bisect.json", {
        "confirmed": outcome.confirmed, "test": outcome.test, "metric": outcome.metric,
        "first_bad": outcome.first_bad.describe() if outcome.first_bad else None,
        "last_good": outcome.last_good.describe() if outcome.last_good else None,
        "steps": [{"build": s.build, "index": s.index, "kind": s.kind, "starts": s.starts,
                   "median": s.median, "position": s.position,
                   "against_good": s.against_good.to_dict(),
                   "against_bad": s.against_bad.to_dict()} for s in outcome.steps],
        "reason": outcome.reason})
    (out / "bisect.md").write_text("```\n" + "\n".join(lines) + "\n```\n")
    if not outcome.confirmed:
        return EXIT_OK
    return EXIT_REGRESSION if outcome.first_bad is not None else EXIT_UNDECIDED
