"""Tuning advice from a matrix run: per workload, the best flag set for each headline
metric, its margin over the next best, and whether that margin is beyond the noise.

What the seed's Quick Start did by reading bar charts. Results are grouped by host and
workload (the dataset and arrivals as run: the same workload under two tests is one
comparison, so case 1's and case 8's flag sets at QPS 1000 meet). Within a group every
flag set (engine and flags as launched) is a candidate; each run folder is one server
start of it. The winner is the best mean of start values; its margin over the runner-up
is judged by the verdicts' rule (judge/verdict.py) with the host's recorded floors as the
practical threshold: "beyond noise" is a verdict of IMPROVEMENT over the runner-up.
The Pareto set of request throughput against median TTFT lists the flag sets no other
beats on both.
"""

from __future__ import annotations

import hashlib
import json
import math
import statistics
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from pytest_mi300x.judge.noise import start_logs, sumsq_of
from pytest_mi300x.judge.verdict import Kind, Verdict, judge_starts
from pytest_mi300x.results.metrics import HEADLINE, METRIC_DIRECTIONS, THROUGHPUTS
from pytest_mi300x.results.model import Result, read_folder
from pytest_mi300x.results.stack import portable_workload

PARETO_AXES = ("request_throughput", "median_ttft_ms")
CAPACITY = ("max_rate_under_slo", "SLO req/s", "{:.2f}")
"""Shown where a capacity test measured it (suites/test_capacity.py)."""


@dataclass
class Candidate:
    """One flag set (engine and flags as launched) within one workload."""

    name: str
    launched: str = ""
    """The flags and env as launched (two flag sets of one name are two candidates)."""
    starts: dict[str, list[dict[str, float]]] = field(default_factory=dict)
    """Per run folder (a server start), its valid repetitions' figures."""
    tests: set[str] = field(default_factory=set)

    def start_values(self, metric: str) -> list[list[float]]:
        return [[r[metric] for r in reps if metric in r] for reps in self.starts.values()
                if any(metric in r for r in reps)]

    def center(self, metric: str) -> float:
        """Geometric mean of the starts' medians (what the verdict's change compares)."""
        values = [statistics.median(s) for s in self.start_values(metric) if s]
        if not values or any(v <= 0 for v in values):
            return math.nan
        return math.exp(statistics.fmean(math.log(v) for v in values))

    def arrival_bound(self) -> bool:
        reps = [r for reps in self.starts.values() for r in reps]
        return bool(reps) and all(r.get("arrival_bound") == 1.0 for r in reps)


@dataclass
class Group:
    """One host and workload: the flag sets measured on it."""

    host: str
    workload: Mapping[str, Any]
    floors: dict[str, float] = field(default_factory=dict)
    noise: dict[str, float] = field(default_factory=dict)
    candidates: dict[str, Candidate] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return describe_workload(self.workload)


@dataclass(frozen=True)
class Pick:
    """The best flag set for one metric, and how far ahead it is."""

    metric: str
    best: str
    value: float
    runner_up: str | None
    runner_up_value: float
    verdict: Verdict | None
    note: str = ""

    @property
    def margin_pct(self) -> float:
        if self.runner_up is None or not self.runner_up_value:
            return math.nan
        return (self.value / self.runner_up_value - 1) * 100

    @property
    def beyond_noise(self) -> str:
        if self.note:
            return self.note
        if self.verdict is None:
            return "-"
        return {Kind.IMPROVEMENT: "yes",
                Kind.NO_CHANGE: f"no: within the {self.verdict.threshold_pct:g}% floor",
                Kind.REGRESSION: "no",
                Kind.INCONCLUSIVE: "no: not resolved (more starts or repeats)",
                }[self.verdict.kind]


def describe_workload(workload: Mapping[str, Any]) -> str:
    """One line: dataset, its sizes, and the arrivals as run."""
    data = dict(workload.get("dataset") or {})
    name = str(data.pop("name", "?"))
    shown = [f"{k}={data[k]}" for k in ("input_len", "output_len", "num_prompts",
                                        "num_prefixes", "prefix_len", "suffix_len", "turns",
                                        "first_len", "user_len")
             if data.get(k) is not None]
    arrivals = workload.get("arrivals") or {}
    rate = arrivals.get("label") or f"rate-{arrivals.get('request_rate', '?')}"
    sweep = workload.get("sweep")
    if isinstance(sweep, Mapping):
        rates = [float(r) for r in sweep.get("rates", [])]
        rate = (f"sweep {min(rates):g}-{max(rates):g} req/s" if rates else "sweep")
    extra = [f"{k}={workload[k]}" for k in ("prefix_cache", "endpoint") if k in workload]
    slos = workload.get("slos")
    if isinstance(slos, Mapping) and slos:
        share = sweep.get("attainment") if isinstance(sweep, Mapping) else None
        extra.append(("" if share is None else f"{float(share):.0%} within ")
                     + " ".join(f"{k}<={float(v):g}ms" for k, v in sorted(slos.items())))
    return " ".join([name, *shown, rate, *extra])


def candidate_name(result: Result) -> str:
    flags = result.flag_set or {}
    return f"{result.engine_name}:{flags.get('name', '?')}"


def _key(result: Result) -> tuple[str, str]:
    return (result.host_name,
            json.dumps(portable_workload(result.workload or {}), sort_keys=True))


def group_results(folders: Sequence[tuple[str, Sequence[Result]]]) -> list[Group]:
    """Results by host and workload, then by flag set; each folder is one server start."""
    groups: dict[tuple[str, str], Group] = {}
    for folder, results in folders:
        for result in results:
            if not result.valid or result.workload is None:
                continue
            key = _key(result)
            group = groups.get(key)
            if group is None:
                group = groups[key] = Group(result.host_name, result.workload,
                                            result.host_floors, result.host_noise)
            name = candidate_name(result)
            launched = json.dumps({k: (result.flag_set or {}).get(k) for k in ("argv", "env")},
                                  sort_keys=True)
            same = group.candidates.get(name)
            if same is not None and same.launched != launched:
                # Two flag sets with one name but other flags stay apart.
                name = f"{name}#{hashlib.sha256(launched.encode()).hexdigest()[:6]}"
            cand = group.candidates.setdefault(name, Candidate(name, launched))
            cand.starts.setdefault(folder, []).extend(result.repetitions)
            cand.tests.add(result.test)
    return list(groups.values())  # in the order the folders list them


def pick(group: Group, metric: str) -> Pick | None:
    """The best candidate for ``metric`` and its margin over the next best."""
    direction = METRIC_DIRECTIONS.get(metric)
    ranked = [(c.center(metric), c) for c in group.candidates.values()]
    ranked = [(v, c) for v, c in ranked if not math.isnan(v)]
    if not ranked or direction is None:
        return None
    ranked.sort(key=lambda vc: vc[0], reverse=direction == "higher")
    (value, best), rest = ranked[0], ranked[1:]
    if not rest:
        return Pick(metric, best.name, value, None, math.nan, None,
                    "only one flag set measured")
    runner_value, runner = rest[0]
    if metric in THROUGHPUTS and best.arrival_bound() and runner.arrival_bound():
        return Pick(metric, best.name, value, runner.name, runner_value, None,
                    "no: arrival-bound (both kept the offered rate)")
    # Flag sets on one workload share the machine's start-to-start noise: every flag set's
    # starts around its own mean are evidence of it. With one start each there is none,
    # and a host's record from another day cannot stand in for it.
    others = sumsq_of(start_logs(c.start_values(metric)) for c in group.candidates.values()
                      if c is not best and c is not runner)
    mine = sumsq_of(start_logs(c.start_values(metric)) for c in (best, runner))
    if (others + mine).df == 0:
        return Pick(metric, best.name, value, runner.name, runner_value, None,
                    "cannot tell: one server start per flag set (run the matrix again)")
    verdict = judge_starts(metric, runner.start_values(metric), best.start_values(metric),
                           threshold_pct=group.floors.get(metric, 5.0),
                           noise_floor_pct=group.noise.get(metric, 0.0), record=others,
                           pool_record=True)
    return Pick(metric, best.name, value, runner.name, runner_value, verdict)


def pareto(group: Group, axes: tuple[str, str] = PARETO_AXES) -> list[tuple[str, float, float]]:
    """Flag sets no other one beats on both axes (throughput up, latency down), by
    throughput."""
    x, y = axes
    points = [(c.name, c.center(x), c.center(y)) for c in group.candidates.values()]
    points = [p for p in points if not (math.isnan(p[1]) or math.isnan(p[2]))]

    def dominated(p: tuple[str, float, float]) -> bool:
        return any(q[1] >= p[1] and q[2] <= p[2] and (q[1] > p[1] or q[2] < p[2])
                   for q in points if q is not p)

    return sorted((p for p in points if not dominated(p)), key=lambda p: -p[1])


def _fmt(value: float) -> str:
    return "-" if value is None or math.isnan(value) else f"{value:.4g}"


def render(groups: Iterable[Group], folders: int) -> list[str]:
    lines: list[str] = []
    for group in groups:
        cands = group.candidates
        starts = sorted({len(c.starts) for c in cands.values()})
        lines.append(f"workload: {group.label}")
        lines.append(f"  host {group.host}; {len(cands)} flag set(s); server starts per flag "
                     f"set: {'/'.join(str(s) for s in starts)} (of {folders} run folder(s))")
        rows = [["metric", "best", "value", "next best", "value", "margin", "beyond noise"]]
        for metric, label, _ in (*HEADLINE, CAPACITY):
            chosen = pick(group, metric)
            if chosen is None:
                continue
            rows.append([label, chosen.best, _fmt(chosen.value), chosen.runner_up or "-",
                         _fmt(chosen.runner_up_value),
                         "-" if math.isnan(chosen.margin_pct) else f"{chosen.margin_pct:+.1f}%",
                         chosen.beyond_noise])
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
        for row in rows:
            cells = [c.ljust(w) if i in (0, 1, 3) else c.rjust(w)
                     for i, (c, w) in enumerate(zip(row[:-1], widths, strict=True))]
            lines.append("  " + "  ".join([*cells, row[-1]]).rstrip())
        front = pareto(group)
        if len(cands) > 1 and front:
            lines.append("  Pareto set, req/s against med TTFT ms (none beats these on both): "
                         + "; ".join(f"{n} ({_fmt(t)} req/s, {_fmt(m)} ms)"
                                     for n, t, m in front))
        lines.append("")
    return lines


def recommend_folders(folders: Sequence[Path], out: TextIO | None = None,
                      err: TextIO | None = None) -> int:
    """Print the advice for these run folders; 2 when there is nothing to read."""
    out, err = out or sys.stdout, err or sys.stderr
    read: list[tuple[str, Sequence[Result]]] = []
    skipped: list[str] = []
    for folder in folders:
        if not folder.is_dir():
            print(f"pytest-mi300x recommend: {folder} is not a results folder; give "
                  ".perf-results/<run-id> folders", file=err)
            return 2
        read.append((str(folder), read_folder(folder, skipped)))
    for line in skipped:
        print(f"pytest-mi300x recommend: {line}", file=err)
    invalid = sorted({r.test for _, results in read for r in results if not r.valid})
    groups = group_results(read)
    if not groups:
        print("pytest-mi300x recommend: no valid results in " + ", ".join(map(str, folders)),
              file=err)
        return 2
    for line in render(groups, len(folders)):
        print(line, file=out)
    if invalid:
        print(f"left out {len(invalid)} test(s) with invalid results: "
              f"{', '.join(invalid[:5])}", file=out)
    print("beyond noise: the best is ahead of the next by more than the host's floor, and "
          "significantly so at 1% against the flag sets' own start-to-start spread (each run "
          "folder is one server start; with one start per flag set there is no spread to "
          "judge by)", file=out)
    return 0
